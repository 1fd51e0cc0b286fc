"""The live resources of one application instance, handed to every endpoint and domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .auth.cache import TokenCache
from .clock import Clock
from .config import Settings
from .metrics import Metrics


@dataclass
class Services:
    settings: Settings
    clock: Clock
    pool: asyncpg.Pool
    redis: Any  # redis.asyncio.Redis or RedisCluster
    tokens: TokenCache
    metrics: Metrics
    # Per-domain state (engines, flushers, caches), keyed by domain name.
    domains: dict[str, Any] = field(default_factory=dict)

    @property
    def server_version(self) -> str:
        from . import __version__

        return self.settings.server_version or __version__

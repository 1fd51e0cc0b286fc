"""The live resources of one application instance, handed to every endpoint and domain.

Shared resources are set when the app starts. Domain state (engines, pools, background loops)
is one typed attribute per piece, declared here and set by that domain's `start(services)`;
a domain left out of `app.DOMAINS` never sets its attributes, and nothing else reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from . import __version__
from .clock import Clock
from .config import Settings
from .metrics import Metrics
from .scripts import ScriptRunner

if TYPE_CHECKING:  # domain types, for annotations only: domains import this module, not the reverse
    import httpx

    from .abuse.clientlimit import ClientWindows
    from .abuse.failures import FailedLookups
    from .apilicense.engine import QuotaEngine
    from .apilicense.writebehind import UsageFlusher
    from .auth.cache import TokenCache
    from .events.jobs import JobWorker
    from .health import Readiness
    from .leases.history import HistoryDrainer
    from .leases.pool import LeasePools
    from .metricsserver import MetricsListener
    from .support.sync import SupportState


@dataclass
class Services:
    settings: Settings
    clock: Clock
    pool: asyncpg.Pool
    redis: Any  # redis.asyncio.Redis or RedisCluster: plain commands (pub/sub, health, key scans)
    runner: ScriptRunner  # every domain's Lua scripts, over the QG_REDIS_TRANSPORT transport
    tokens: TokenCache
    metrics: Metrics
    failed_lookups: FailedLookups = field(init=False, repr=False)  # failed key/token lookups (abuse.failures)
    client_windows: ClientWindows = field(init=False, repr=False)  # per-address windows (abuse.clientlimit)
    metrics_listener: MetricsListener | None = field(default=None, repr=False)  # QG_METRICS_BIND's socket
    metrics_operator_digest: bytes | None = field(default=None, repr=False)  # QG_METRICS_TOKEN's digest
    readiness: Readiness = field(init=False, repr=False)  # health: /readyz's cached check

    # -- domain state, set by each domain's start() --------------------------------------------
    quota: QuotaEngine = field(init=False, repr=False)  # apilicense: the validate hot call
    usage_flusher: UsageFlusher = field(init=False, repr=False)  # apilicense: usage write-behind
    lease_pools: LeasePools = field(init=False, repr=False)  # leases: pools in Redis
    lease_history: HistoryDrainer = field(init=False, repr=False)  # leases: history write-behind
    lease_orgs: dict[str, str] = field(default_factory=dict, repr=False)  # leases: organization -> tenant id
    job_worker: JobWorker | None = field(default=None, repr=False)  # events: None when QG_EVENTS_WORKER=0
    webhook_http: httpx.AsyncClient | None = field(default=None, repr=False)  # events: webhook deliveries
    support: SupportState | None = field(default=None, repr=False)  # support: ServiceNow client, creation limits

    @property
    def server_version(self) -> str:
        return self.settings.server_version or __version__

"""Redis connections, built from settings in one place: the plain client (pub/sub, health, key
scans) and the script runner every domain's Lua calls go through (QG_REDIS_TRANSPORT)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .autopipeline import AutoPipeline, ClusterAutoPipeline
from .config import Settings
from .scripts import RedisPyRunner, ScriptRunner

TRANSPORTS = ("autopipeline", "redis-py")


def create_redis(url: str, *, cluster: bool = False, **kwargs: Any) -> aioredis.Redis | RedisCluster:
    """A redis.asyncio client: plain, or cluster-aware when `cluster` is set."""
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return aioredis.from_url(url, **kwargs)


def script_runner(settings: Settings) -> ScriptRunner:
    """The runner of QG_REDIS_TRANSPORT: auto-pipelining (one connection to a single Redis, or
    one per master of a cluster), or redis-py's pool (kept to measure against)."""
    url, transport = settings.redis_url, settings.redis_transport
    if transport not in TRANSPORTS:
        raise ValueError(f"QG_REDIS_TRANSPORT must be autopipeline or redis-py, not {transport!r}")
    if url is None:
        raise ValueError("QG_REDIS_URL is not set")
    if transport == "redis-py":
        return RedisPyRunner(url, cluster=settings.redis_cluster)
    if settings.redis_cluster:
        return ClusterAutoPipeline(url)
    return AutoPipeline(url)

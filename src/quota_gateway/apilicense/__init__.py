"""API-key licensing: the quota hot path, its management endpoints and usage write-behind.

Redis is the arbiter of quota (one atomic Lua script per validate); Postgres is the record,
fed by write-behind (see writebehind.py). Key layout (keyspace.py), all keys of one license in
one slot:

    qg:{b<n>}:k:<digest>        the key's hash: m its metadata cached from Postgres (msgpack; until
                                invalidated), c its counters (msgpack: lifetime units ever consumed,
                                the last consume's time, each window's count), g the metadata's
                                generation (no TTL: the total may hold unflushed usage)
    qg:{b<n>}:p:<product id>    the product's metadata shared by its keys in the bucket (m), and the
                                products.cache_version it was read at (v)
    qg:{b<n>}:ir:<id>:<hash>    first reply to an Idempotency-Key (msgpack, 24 h)
    qg:{b<n>}:pending / :flushing / :fstate / :applied   write-behind of usage

n = fastpath.api_key_bucket(key) in 0..1023, so a bucket's pending usage shares the slot of the
counters it shadows (Redis Cluster rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import catalogue, fastpath
from ..redisconn import script_runner
from . import service
from .engine import QuotaEngine
from .hotroute import hot_routes, hot_specs
from .routes import routes
from .writebehind import UsageFlusher

if TYPE_CHECKING:
    from ..services import Services

__all__ = ["hot_routes", "hot_specs", "routes", "start", "stop"]


async def _features_changed(services: Services, tenant_id: str, product_id: int) -> None:
    await service.features_changed(services.pool, services.runner, tenant_id, product_id)


catalogue.FEATURE_CHECKS.append(fastpath.check_rule_feature)
catalogue.ON_FEATURES_CHANGED.append(_features_changed)


async def start(services: Services) -> None:
    services.quota = QuotaEngine(services, services.runner)
    # On a cluster the write-behind waits for replicas (WAIT) on connections of its own, never in
    # front of validations.
    runner = services.runner
    if services.settings.redis_cluster:
        runner = script_runner(services.settings)
        await runner.prepare()
    flusher = services.usage_flusher = UsageFlusher(services, runner, services.settings.flush_interval)
    flusher.dirty = services.quota.dirty
    flusher.start()


async def stop(services: Services) -> None:
    await services.quota.misses.close()
    await services.usage_flusher.stop()
    if services.usage_flusher.runner is not services.runner:
        await services.usage_flusher.runner.aclose()

"""API-key licensing: the quota hot path, its management endpoints and usage write-behind.

Redis is the arbiter of quota (one atomic Lua script per validate); Postgres is the record,
fed by write-behind (see writebehind.py). Key layout, all keys of one license in one slot:

    qg:{b<n>}:m:<digest>        license metadata cached from Postgres (msgpack, TTL 1 h)
    qg:{b<n>}:gen:<digest>      metadata generation (bumped on every invalidation)
    qg:{b<n>}:c:<id>            counters (msgpack): lifetime units ever consumed, and each window's
                                start and count (no TTL: the total may hold unflushed usage)
    qg:{b<n>}:ir:<id>:<hash>    first reply to an Idempotency-Key (msgpack, 24 h)
    qg:{b<n>}:pending / :flushing / :fstate / :applied   write-behind of usage

n = fastpath.api_key_bucket(key) in 0..1023, so a bucket's pending usage shares the slot of the
counters it shadows (Redis Cluster rule).
"""

from .routes import hot_routes, hot_specs, routes, start, stop

__all__ = ["hot_routes", "hot_specs", "routes", "start", "stop"]

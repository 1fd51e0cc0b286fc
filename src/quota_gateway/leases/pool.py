"""Lease pools in Redis: one hash tag per pool key, every change one Lua script.

    qg:{fl:<d>}:meta        pool key metadata cached from Postgres (TTL 1 h)
    qg:{fl:<d>}:gen         metadata generation (bumped on invalidation)
    qg:{fl:<d>}:leases      live leases, scored by expiry (expired ones leave on the next obtain)
    qg:{fl:<d>}:x:<lease>   "released" or "renewed" marker (kept a week)
    qg:{fl:<d>}:hist        history stream, drained to Postgres by history.py
    qg:{fl:<d>}:epoch       epoch marker: set once `leases` is complete. Missing (Redis lost its data,
                            or a pool from before the marker) = rebuild the live leases from the
                            history in Postgres before any change to the pool

<d> is the first 16 hex characters of the key's SHA-256 (the pool id the lease token carries).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson

from ..redisconn import LuaScript

log = logging.getLogger("quota_gateway.leases")

OBTAIN = LuaScript("leases_obtain")
CHANGE = LuaScript("leases_change")
FILL = LuaScript("meta_fill")
REBUILD = LuaScript("leases_rebuild")
INVALIDATE = LuaScript("meta_invalidate")
META_TTL = 3600
NEGATIVE_TTL = 30  # an unknown key: remembered briefly (creating a key drops it at once anyway)
MARKER_TTL = 7 * 86400


_LIVE_LEASES = """
    SELECT h.lease_id, h.expires_at FROM lease_history h
    WHERE h.floating_key_id = $1 AND h.action IN ('obtained', 'renewed') AND h.expires_at > $2
      AND NOT EXISTS (SELECT 1 FROM lease_history e WHERE e.floating_key_id = $1
                      AND ((e.lease_id = h.lease_id AND e.action IN ('released', 'expired'))
                           OR (e.action = 'renewed' AND e.previous_lease_id = h.lease_id)))"""


class PoolRef:
    __slots__ = ("pool", "prefix")

    def __init__(self, digest_hex: str) -> None:
        self.pool = digest_hex[:16]
        self.prefix = f"qg:{{fl:{self.pool}}}:"

    def keys(self, *names: str) -> list[str]:
        return [self.prefix + n for n in names]


class LeasePools:
    def __init__(self, services, runner) -> None:
        self.services = services
        self.runner = runner
        self.dirty: set[str] = set()  # pool prefixes whose history stream has entries

    async def obtain(self, ref: PoolRef, tenant_id: str, loader, now: int, seconds: int, lease_id: str,
                     client_id: str) -> list:
        for _ in range(4):
            reply = await self.runner.run(OBTAIN, ref.keys("meta", "leases", "hist", "gen", "epoch"),
                                          [tenant_id, now, seconds, lease_id, client_id])
            if reply[0] == b"miss":
                await self.fill(ref, reply[1], await loader())
            elif reply[0] == b"rebuild":
                await self.rebuild(ref, int(reply[1]), now)
            else:
                if reply[0] == b"OK":
                    self.dirty.add(ref.prefix)
                return [r.decode() if isinstance(r, bytes) else r for r in reply]
        raise RuntimeError("pool metadata kept changing")

    async def change(self, ref: PoolRef, action: str, now: int, lease_id: str, new_lease_id: str = "",
                     seconds: int = 0, *, tenant_id: str, loader) -> tuple[str, int]:
        """Renew, release or check a lease; `loader()` reads the pool key's row when Redis has no
        metadata for it (a lease of a revoked key must never pass for want of cached metadata)."""
        keys = [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:{lease_id}", *ref.keys("gen", "epoch")]
        for _ in range(4):
            code, value = await self.runner.run(CHANGE, keys, [action, now, lease_id, new_lease_id, seconds, MARKER_TTL,
                                                               tenant_id])
            if code == b"miss":
                await self.fill(ref, value, await loader())
            elif code == b"rebuild":
                row = await loader()
                await self.rebuild(ref, row["id"] if row is not None else None, now)
            else:
                if action != "check":
                    self.dirty.add(ref.prefix)
                return code.decode(), int(value)
        raise RuntimeError("pool metadata kept changing")

    async def used(self, ref: PoolRef, key_id: int, now: int) -> int:
        """Live leases (a read: expired ones are not counted, and removed by the next obtain)."""
        keys = [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:", *ref.keys("gen", "epoch")]
        for _ in range(2):
            code, _ = await self.runner.run(CHANGE, keys, ["count", now, "", "", 0, MARKER_TTL, ""])
            if code != b"rebuild":
                return int(code)
            await self.rebuild(ref, key_id, now)
        raise RuntimeError("pool leases kept disappearing")

    async def rebuild(self, ref: PoolRef, key_id: int | None, now: int) -> None:
        """Restore the pool's live leases from the lease history in Postgres (Redis lost them).
        A lease renewed away or released is not live; what the history drainer had not yet
        written when Redis lost it (at most a flush interval of changes) cannot come back."""
        rows = []
        if key_id is not None:
            async with self.services.pool.acquire() as conn:
                rows = await conn.fetch(_LIVE_LEASES, key_id, datetime.fromtimestamp(now, tz=timezone.utc))
        leases = [value for r in rows for value in (r["lease_id"], int(r["expires_at"].timestamp()))]
        if await self.runner.run(REBUILD, ref.keys("leases", "epoch"), [now, *leases]):
            log.warning("rebuilt %d live lease(s) of pool %s from PostgreSQL", len(rows), ref.pool)

    async def fill(self, ref: PoolRef, generation, row) -> None:
        ttl = META_TTL
        if row is None:  # no such key in any organization (a key's owner is cached, not the asker's view)
            fields, ttl = ["ok", "0"], NEGATIVE_TTL
        else:
            fields = ["ok", "1", "id", row["id"], "tenant", str(row["tenant_id"]), "limit", row["lease_limit"],
                      "exp", int(row["expires_at"].timestamp()) if row["expires_at"] else 0,
                      "revoked", "1" if row["revoked_at"] else "0", "products", orjson.dumps(row["products"])]
        await self.runner.run(FILL, ref.keys("meta", "gen"), [generation, ttl, *fields])

    async def invalidate(self, ref: PoolRef) -> None:
        await self.runner.run(INVALIDATE, ref.keys("meta", "gen"), [])

"""Lease pools in Redis: one hash tag per pool key, every change one Lua script.

    qg:{fl:<d>}:meta        pool key metadata cached from Postgres (TTL 1 h)
    qg:{fl:<d>}:gen         metadata generation (bumped on invalidation)
    qg:{fl:<d>}:leases      live leases, scored by expiry (expired ones leave on the next obtain)
    qg:{fl:<d>}:x:<lease>   "released" or "renewed" marker (kept a week)
    qg:{fl:<d>}:hist        history stream, drained to Postgres by history.py

<d> is the first 16 hex characters of the key's SHA-256 (the pool id the lease token carries).
"""

from __future__ import annotations

import orjson

from ..redisconn import LuaScript

OBTAIN = LuaScript("leases_obtain")
CHANGE = LuaScript("leases_change")
FILL = LuaScript("meta_fill")
INVALIDATE = LuaScript("meta_invalidate")
META_TTL = 3600
NEGATIVE_TTL = 30  # an unknown key: remembered briefly (creating a key drops it at once anyway)
MARKER_TTL = 7 * 86400


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
        for _ in range(3):
            reply = await self.runner.run(OBTAIN, ref.keys("meta", "leases", "hist", "gen"),
                                          [tenant_id, now, seconds, lease_id, client_id])
            if reply[0] != b"miss":
                if reply[0] == b"OK":
                    self.dirty.add(ref.prefix)
                return [r.decode() if isinstance(r, bytes) else r for r in reply]
            await self.fill(ref, reply[1], await loader())
        raise RuntimeError("pool metadata kept changing")

    async def change(self, ref: PoolRef, action: str, now: int, lease_id: str, new_lease_id: str = "",
                     seconds: int = 0, *, tenant_id: str, loader) -> tuple[str, int]:
        """Renew, release or check a lease; `loader()` reads the pool key's row when Redis has no
        metadata for it (a lease of a revoked key must never pass for want of cached metadata)."""
        keys = [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:{lease_id}", ref.prefix + "gen"]
        for _ in range(3):
            code, value = await self.runner.run(CHANGE, keys, [action, now, lease_id, new_lease_id, seconds, MARKER_TTL,
                                                               tenant_id])
            if code != b"miss":
                if action != "check":
                    self.dirty.add(ref.prefix)
                return code.decode(), int(value)
            await self.fill(ref, value, await loader())
        raise RuntimeError("pool metadata kept changing")

    async def used(self, ref: PoolRef, now: int) -> int:
        """Live leases (a read: expired ones are not counted, and removed by the next obtain)."""
        code, _ = await self.runner.run(CHANGE, [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:",
                                                 ref.prefix + "gen"], ["count", now, "", "", 0, MARKER_TTL, ""])
        return int(code)

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

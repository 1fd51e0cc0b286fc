"""Lease pools in Redis: one hash tag per pool key, every change one Lua script, each script's
reply decoded here.

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
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import orjson

from ..formats import rediskeys
from ..scripts import LuaScript, ScriptRunner, reply_pairs, reply_text

log = logging.getLogger("quota_gateway.leases")

FILL = LuaScript("meta_fill")
INVALIDATE = LuaScript("meta_invalidate")
REBUILD = LuaScript("leases_rebuild")
HISTORY_TRIM = LuaScript("leases_history_trim")
EXPIRE = LuaScript("leases_expire")
META_TTL = 3600
NEGATIVE_TTL = 30  # an unknown key: remembered briefly (creating a key drops it at once anyway)
MARKER_TTL = 7 * 86400
_NEEDS_META = b"miss"  # OBTAIN's and CHANGE's {"miss", generation}: fill the metadata from Postgres first
_NEEDS_LEASES = b"rebuild"  # {"rebuild", key id}: the pool has no epoch marker, restore its leases first (REBUILD)
# Reads a pool key's live leases, (lease id, expiry) pairs, from the lease history in Postgres.
LiveLeases = Callable[[int], Awaitable[list[tuple[str, int]]]]


class PoolRef:
    __slots__ = ("pool", "prefix")

    def __init__(self, digest_hex: str) -> None:
        self.pool = digest_hex[:16]
        self.prefix = rediskeys.lease_pool(self.pool)

    def keys(self, *names: str) -> list[str]:
        return [self.prefix + n for n in names]


OBTAIN = LuaScript("leases_obtain")


class Obtained(NamedTuple):
    """OBTAIN's reply: code OK (a lease until `expiry`), LEASE_LIMIT_REACHED, KEY_INVALID or
    KEY_EXPIRED; `used` and `limit` are known for the first two."""

    code: str
    used: int = 0
    limit: int = 0
    expiry: int = 0


def _obtained(reply: list) -> Obtained:
    return Obtained(reply_text(reply[0]), *(int(v) for v in reply[1:]))


CHANGE = LuaScript("leases_change")


class Changed(NamedTuple):
    """CHANGE's reply: code OK, LEASE_RELEASED, LEASE_RENEWED, LEASE_GONE, KEY_INVALID or
    KEY_EXPIRED, and the lease's expiry when OK."""

    code: str
    expiry: int


LIVE = LuaScript("leases_live")


class LiveLease(NamedTuple):
    """One entry of LIVE's reply: a lease in the pool and when it expires (epoch seconds)."""

    lease_id: str
    expiry: int


HISTORY_READ = LuaScript("leases_history_read")


class HistoryEntry(NamedTuple):
    entry_id: str
    fields: dict[str, str]  # lease, action, at; client (obtained), previous (renewed), exp (expiry)


class History(NamedTuple):
    """HISTORY_READ's reply: the pool key's id and tenant as cached (None when evicted), and the
    oldest entries of its stream."""

    key_id: int | None
    tenant_id: str | None
    entries: list[HistoryEntry]


def _history(reply: list) -> History:
    (key_id, tenant_id), raw = reply
    entries = [HistoryEntry(reply_text(entry_id),
                            {reply_text(name): reply_text(value) for name, value in reply_pairs(flat)})
               for entry_id, flat in raw]
    return History(None if key_id is None else int(key_id), None if tenant_id is None else reply_text(tenant_id),
                   entries)


class LeasePools:
    def __init__(self, runner: ScriptRunner) -> None:
        self.runner = runner
        self.dirty: set[str] = set()  # pool prefixes whose history stream has entries

    async def obtain(self, ref: PoolRef, tenant_id: str, loader: Callable[[], Awaitable[Any]], now: int,
                     seconds: int, lease_id: str, client_id: str, *, live_leases: LiveLeases) -> Obtained:
        for _ in range(4):
            reply = await self.runner.run(OBTAIN, ref.keys("meta", "leases", "hist", "gen", "epoch"),
                                          [tenant_id, now, seconds, lease_id, client_id])
            if reply[0] == _NEEDS_META:
                await self.fill(ref, reply[1], await loader())
            elif reply[0] == _NEEDS_LEASES:
                await self.rebuild(ref, await live_leases(int(reply[1])), now)
            else:
                obtained = _obtained(reply)
                if obtained.code == "OK":
                    self.dirty.add(ref.prefix)
                return obtained
        raise RuntimeError("pool metadata kept changing")

    async def change(self, ref: PoolRef, action: str, now: int, lease_id: str, new_lease_id: str = "",
                     seconds: int = 0, *, tenant_id: str, loader: Callable[[], Awaitable[Any]],
                     live_leases: LiveLeases) -> Changed:
        """Renew, release or check a lease; `loader()` reads the pool key's row when Redis has no
        metadata for it (a lease of a revoked key must never pass for want of cached metadata)."""
        keys = [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:{lease_id}", *ref.keys("gen", "epoch")]
        for _ in range(4):
            code, value = await self.runner.run(CHANGE, keys, [action, now, lease_id, new_lease_id, seconds, MARKER_TTL,
                                                               tenant_id])
            if code == _NEEDS_META:
                await self.fill(ref, value, await loader())
            elif code == _NEEDS_LEASES:
                row = await loader()
                await self.rebuild(ref, await live_leases(row["id"]) if row is not None else [], now)
            else:
                if action != "check":
                    self.dirty.add(ref.prefix)
                return Changed(reply_text(code), int(value))
        raise RuntimeError("pool metadata kept changing")

    async def used(self, ref: PoolRef, now: int, live_leases: Callable[[], Awaitable[list[tuple[str, int]]]]) -> int:
        """Live leases (a read: expired ones are not counted, and removed by the next obtain)."""
        keys = [*ref.keys("meta", "leases", "hist"), f"{ref.prefix}x:", *ref.keys("gen", "epoch")]
        for _ in range(2):
            count, _ = await self.runner.run(CHANGE, keys, ["count", now, "", "", 0, MARKER_TTL, ""])
            if count != _NEEDS_LEASES:
                return int(count)
            await self.rebuild(ref, await live_leases(), now)
        raise RuntimeError("pool leases kept disappearing")

    async def rebuild(self, ref: PoolRef, leases: list[tuple[str, int]], now: int) -> None:
        """Restore the pool's live leases (read from the lease history in Postgres) after Redis lost
        them, unless another process did it first."""
        rebuilt = await self.runner.run(REBUILD, ref.keys("leases", "epoch"), [now, *(v for lease in leases for v in lease)])
        if rebuilt and leases:  # (a new pool, or one from before epoch markers, restores nothing)
            log.warning("Redis had lost pool %s: rebuilt %d live lease(s) from PostgreSQL", ref.pool, len(leases))

    async def live(self, ref: PoolRef, now: int, limit: int) -> list[LiveLease]:
        """The pool's live leases, soonest expiry first, at most `limit` of them."""
        flat = await self.runner.run(LIVE, ref.keys("leases"), [now, limit])
        return [LiveLease(reply_text(lease_id), int(float(expiry))) for lease_id, expiry in reply_pairs(flat)]

    async def fill(self, ref: PoolRef, generation: Any, row: Any) -> None:
        fields: list[Any]
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

    async def read_history(self, prefix: str, count: int) -> History:
        """The oldest `count` history entries of the pool with this key prefix."""
        return _history(await self.runner.run(HISTORY_READ, [prefix + "hist", prefix + "meta"], [count]))

    async def expire(self, prefixes: list[str], now: int) -> int:
        """Log and drop the leases of these pools that expired by `now`; returns how many."""
        if not prefixes:
            return 0
        counts = await self.runner.run_many(EXPIRE, [([p + "leases", p + "hist"], [now]) for p in prefixes])
        for prefix, count in zip(prefixes, counts, strict=True):
            if int(count):
                self.dirty.add(prefix)
        return sum(int(c) for c in counts)

    async def trim_history(self, prefix: str, entry_ids: list[str]) -> None:
        """Drop these entries (written to Postgres); all of them when `entry_ids` is empty."""
        await self.runner.run(HISTORY_TRIM, [prefix + "hist"], entry_ids)

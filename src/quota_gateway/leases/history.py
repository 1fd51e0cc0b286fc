"""Lease history from the pools' Redis streams to Postgres.

Entries are inserted with their stream id as part of the primary key, then deleted from the
stream: a drainer killed between the two re-inserts nothing twice on its next pass. Each entry
inserted raises its `lease.*` event in the same transaction (so exactly once, whichever process
drains it); the lease routes themselves never wait for Postgres. Every
process drains the pools it touched, and sweeps all pools now and then for the rest. Streams are
read and trimmed by scripts through the runner (pool.py), like every other Redis call of the
domain; only the sweep's key scan uses the plain client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import events
from ..background import WriteBehindLoop
from ..clock import iso_utc
from ..events import outbox
from ..formats import rediskeys
from .pool import HistoryEntry, LeasePools

if TYPE_CHECKING:
    from ..services import Services


_BATCH = 1000  # entries per pool per pass


class HistoryDrainer(WriteBehindLoop):
    name = "lease-history"

    def __init__(self, services: Services, pools: LeasePools, interval: float) -> None:
        super().__init__(interval)
        self.services = services
        self.pools = pools

    def touched(self) -> list[str]:
        return list(self.pools.dirty)

    async def everything(self) -> list[str]:
        # The sweep first ends leases that expired in pools nobody obtains from any more (an obtain
        # does it otherwise), so their `lease.expired` events are raised too.
        now = int(self.services.clock.now())
        pools = [k.decode()[:-len("leases")]
                 async for k in self.services.redis.scan_iter(match=rediskeys.LEASE_SET_PATTERN, count=1000)]
        for start in range(0, len(pools), 500):
            await self.pools.expire(pools[start:start + 500], now)
        return [k.decode()[:-len("hist")]
                async for k in self.services.redis.scan_iter(match=rediskeys.LEASE_HISTORY_PATTERN, count=1000)]

    async def drain(self, prefixes: list[str]) -> int:
        """Move the history of these pools (prefix "qg:{fl:<d>}:") to Postgres, raising a `lease.*`
        event for each entry in the same transaction; returns rows written."""
        written = 0
        for prefix in prefixes:
            self.pools.dirty.discard(prefix)
            history = await self.pools.read_history(prefix, _BATCH)
            if not history.entries:
                continue
            owner = (history.key_id, history.tenant_id) if history.key_id is not None else None
            if owner is None:  # metadata evicted: find the pool key from Postgres by its digest prefix
                owner = await self._pool_from_db(prefix)
                if owner is None:
                    await self.pools.trim_history(prefix, [])  # the pool key no longer exists
                    continue
            async with self.services.pool.acquire() as conn, conn.transaction():
                written += await _write(conn, owner[0], str(owner[1]), history.entries)
            await self.pools.trim_history(prefix, [e.entry_id for e in history.entries])
            if len(history.entries) == _BATCH:
                self.pools.dirty.add(prefix)  # more to come
        return written

    async def _pool_from_db(self, prefix: str) -> tuple[int, str] | None:
        pool_id = rediskeys.lease_pool_id(prefix)
        async with self.services.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, tenant_id FROM floating_keys WHERE encode(key_digest, 'hex') LIKE $1",
                                      pool_id + "%")
        return None if row is None else (row["id"], str(row["tenant_id"]))



_EVENT_TYPES = {"obtained": events.LEASE_OBTAINED, "renewed": events.LEASE_RENEWED,
                "released": events.LEASE_RELEASED, "expired": events.LEASE_EXPIRED}


def _when(seconds: str | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(int(float(seconds)), tz=UTC)


async def _write(conn: asyncpg.Connection, key_id: int, tenant_id: str, entries: list[HistoryEntry]) -> int:
    """Insert the entries (each once: the stream id is part of the key) and raise one event per
    entry actually inserted, so a re-drained entry is neither stored nor announced twice.

    Only an obtain names its client; a renewal carries the client of the lease it replaces, and
    a release or expiry that of its lease, looked up in this batch and in the stored history."""
    referenced = {e.fields.get("previous") or e.fields.get("lease", "") for e in entries}
    clients: dict[str, str] = {r["lease_id"]: r["client_id"] for r in await conn.fetch(
        "SELECT lease_id, client_id FROM lease_history WHERE floating_key_id = $1 AND lease_id = ANY($2::text[]) "
        "AND action IN ('obtained', 'renewed')", key_id, list(referenced))}
    rows = []
    for e in entries:
        lease, action = e.fields.get("lease", ""), e.fields.get("action", "")
        if action == "obtained":
            client = e.fields.get("client", "")
        elif action == "renewed":
            client = clients.get(e.fields.get("previous", ""), "")
        else:
            client = clients.get(lease, "")
        if action in ("obtained", "renewed"):
            clients[lease] = client
        rows.append((e, lease, client, action, _when(e.fields["at"]), _when(e.fields.get("exp"))))
    inserted = {r["entry_id"] for r in await conn.fetch(
        """INSERT INTO lease_history (floating_key_id, entry_id, tenant_id, lease_id, client_id, action, at, expires_at,
                                      previous_lease_id)
           SELECT $1, t.* FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                                      $8::timestamptz[], $9::text[]) AS t
           ON CONFLICT DO NOTHING RETURNING entry_id""",
        key_id, [r[0].entry_id for r in rows], [tenant_id] * len(rows), [r[1] for r in rows], [r[2] for r in rows],
        [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows],
        [r[0].fields.get("previous") or None for r in rows])}
    fresh = [r for r in rows if r[0].entry_id in inserted and r[3] in _EVENT_TYPES]
    if fresh:
        key = await conn.fetchrow("SELECT key_hint, customer_id FROM floating_keys WHERE id = $1", key_id)
        raised = []
        for e, lease, client, action, at, expires in fresh:
            data: dict[str, Any] = {"floatingKeyId": key_id, "key": key["key_hint"] if key else "",
                                    "customerId": key["customer_id"] if key else None, "leaseId": lease,
                                    "clientId": client, "at": iso_utc(at)}
            if action in ("obtained", "renewed", "expired"):
                data["expiresAt"] = iso_utc(expires)
            if action == "renewed":
                data["previousLeaseId"] = e.fields.get("previous", "")
            raised.append((tenant_id, _EVENT_TYPES[action], data, at))
        await outbox.emit_many(conn, raised)
    return len(inserted)

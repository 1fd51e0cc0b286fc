"""Lease history from the pools' Redis streams to Postgres.

Entries are inserted with their stream id as part of the primary key, then deleted from the
stream: a drainer killed between the two re-inserts nothing twice on its next pass. Every
process drains the pools it touched, and sweeps all pools now and then for the rest. Streams are
read and trimmed by scripts through the runner (pool.py), like every other Redis call of the
domain; only the sweep's key scan uses the plain client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..background import WriteBehindLoop
from ..formats import rediskeys
from .pool import LeasePools

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
        return [k.decode()[:-len("hist")]
                async for k in self.services.redis.scan_iter(match=rediskeys.LEASE_HISTORY_PATTERN, count=1000)]

    async def drain(self, prefixes: list[str]) -> int:
        """Move the history of these pools (prefix "qg:{fl:<d>}:") to Postgres; returns rows written."""
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
            rows = [(owner[0], e.entry_id, owner[1], e.fields.get("lease", ""), e.fields.get("client", ""),
                     e.fields.get("action", ""), datetime.fromtimestamp(int(e.fields["at"]), tz=UTC),
                     datetime.fromtimestamp(int(e.fields["exp"]), tz=UTC) if "exp" in e.fields else None,
                     e.fields.get("previous") or None)
                    for e in history.entries]
            async with self.services.pool.acquire() as conn:
                await conn.executemany(
                    """INSERT INTO lease_history (floating_key_id, entry_id, tenant_id, lease_id, client_id, action,
                                                  at, expires_at, previous_lease_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING""", rows)
            await self.pools.trim_history(prefix, [e.entry_id for e in history.entries])
            written += len(rows)
            if len(history.entries) == _BATCH:
                self.pools.dirty.add(prefix)  # more to come
        return written

    async def _pool_from_db(self, prefix: str) -> tuple[int, str] | None:
        pool_id = rediskeys.lease_pool_id(prefix)
        async with self.services.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, tenant_id FROM floating_keys WHERE encode(key_digest, 'hex') LIKE $1",
                                      pool_id + "%")
        return None if row is None else (row["id"], str(row["tenant_id"]))


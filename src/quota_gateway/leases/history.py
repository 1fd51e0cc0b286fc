"""Lease history from the pools' Redis streams to Postgres.

Entries are inserted with their stream id as part of the primary key, then deleted from the
stream: a drainer killed between the two re-inserts nothing twice on its next pass. Every
process drains the pools it touched, and sweeps all pools now and then for the rest.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..background import WriteBehindLoop


class HistoryDrainer(WriteBehindLoop):
    name = "lease-history"

    def __init__(self, services, pools, interval: float) -> None:
        super().__init__(interval)
        self.services = services
        self.pools = pools

    def touched(self) -> list[str]:
        return list(self.pools.dirty)

    async def everything(self) -> list[str]:
        return [k.decode()[:-len("hist")] async for k in self.services.redis.scan_iter(match="qg:{fl:*}:hist", count=1000)]

    async def drain(self, prefixes: list[str]) -> int:
        """Move the history of these pools (prefix "qg:{fl:<d>}:") to Postgres; returns rows written."""
        written = 0
        redis = self.services.redis
        for prefix in prefixes:
            self.pools.dirty.discard(prefix)
            stream = prefix + "hist"
            entries = await redis.xrange(stream, count=1000)
            if not entries:
                continue
            meta = await redis.hmget(prefix + "meta", "id", "tenant")
            if meta[0] is None:  # metadata evicted: find the pool key from Postgres by its digest prefix
                meta = await self._pool_from_db(prefix)
                if meta is None:
                    await redis.delete(stream)  # the pool key no longer exists
                    continue
            rows = [(int(meta[0]), entry_id.decode(), meta[1].decode() if isinstance(meta[1], bytes) else meta[1],
                     _text(f, b"lease"), _text(f, b"client"), _text(f, b"action"),
                     datetime.fromtimestamp(int(f[b"at"]), tz=timezone.utc),
                     datetime.fromtimestamp(int(f[b"exp"]), tz=timezone.utc) if b"exp" in f else None,
                     _text(f, b"previous") or None)
                    for entry_id, f in entries]
            async with self.services.pool.acquire() as conn:
                await conn.executemany(
                    """INSERT INTO lease_history (floating_key_id, entry_id, tenant_id, lease_id, client_id, action,
                                                  at, expires_at, previous_lease_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING""", rows)
            await redis.xdel(stream, *[entry_id for entry_id, _ in entries])
            written += len(rows)
            if len(entries) == 1000:
                self.pools.dirty.add(prefix)  # more to come
        return written

    async def _pool_from_db(self, prefix: str):
        pool_id = prefix.split("{fl:")[1].split("}")[0]
        async with self.services.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, tenant_id FROM floating_keys WHERE encode(key_digest, 'hex') LIKE $1",
                                      pool_id + "%")
        return None if row is None else (row["id"], str(row["tenant_id"]))


def _text(fields: dict, name: bytes) -> str:
    value = fields.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)

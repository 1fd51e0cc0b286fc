"""Write-behind of consumed units from Redis to Postgres, exactly once.

Per bucket: the take script renames `pending` to `flushing` under a new (epoch, seq); Postgres
applies the deltas and records (bucket, epoch, seq) in the same transaction, guarded so a seq is
applied at most once; then the done script drops `flushing`. A process killed at any step
leaves either `pending` (nothing taken) or `flushing` (taken, maybe applied): the next flusher,
in any process, takes the same `flushing` again and the guard makes the retry a no-op if it had
been applied. Postgres down: deltas wait in Redis, validation never waits for Postgres.

Every process flushes the buckets it dirtied each interval, and sweeps all buckets now and then
to finish what a dead process left behind. Buckets are flushed in batches: one pipelined round
of take scripts, one Postgres transaction, one pipelined round of done scripts.
"""

from __future__ import annotations

import logging
import secrets
from datetime import date

from ..background import WriteBehindLoop
from ..redisconn import LuaScript

log = logging.getLogger("quota_gateway.writebehind")

TAKE = LuaScript("apilicense_flush_take")
DONE = LuaScript("apilicense_flush_done")
BUCKETS = 1024


class UsageFlusher(WriteBehindLoop):
    name = "usage-write-behind"

    def __init__(self, services, runner, interval: float) -> None:
        super().__init__(interval)
        self.services = services
        self.runner = runner
        self.dirty: set[int] = set()

    def touched(self) -> list[int]:
        return list(self.dirty)

    async def everything(self) -> list[int]:
        return list(range(BUCKETS))

    async def drain(self, targets: list) -> int:
        return await self.flush(targets)

    async def flush(self, buckets) -> int:
        """Flush the given buckets; returns units written. Buckets of a failed batch stay dirty."""
        written = 0
        buckets = list(buckets)
        for bucket in buckets:
            self.dirty.discard(bucket)
        for start in range(0, len(buckets), 256):
            batch = buckets[start:start + 256]
            try:
                written += await self.flush_batch(batch)
            except Exception as exc:
                self.dirty.update(batch)
                self._record_error(exc)
        return written

    def _record_error(self, exc: BaseException) -> None:
        metrics = self.services.metrics
        if "redis" in type(exc).__module__:
            metrics.redis_errors.inc(("flush",))
        else:
            metrics.db_errors.inc(("flush",))
        log.warning("usage flush failed (%s: %s); will retry", type(exc).__name__, exc)

    async def flush_batch(self, buckets: list[int]) -> int:
        """Take the buckets' usage (an unfinished flush first, else what is pending), write it in one
        Postgres transaction, release it. A bucket whose unfinished flush (a dead or concurrent
        flusher's) was taken while more was pending goes round again; usage that arrives
        meanwhile waits for the next cycle (its bucket is dirty again)."""
        written = 0
        for _ in range(4):  # bounded: each round finishes one unfinished flush per bucket
            epoch = secrets.token_hex(8)  # adopted only by a bucket that has none (new, or lost by Redis)
            takes = await self.runner.run_many(TAKE, [(_TAKE_KEYS[b], [epoch]) for b in buckets])
            taken = [(b, _decode(flat)) for b, flat in zip(buckets, takes) if flat]
            if not taken:
                break
            written += await self._write(taken)
            await self.runner.run_many(DONE, [(_DONE_KEYS[b], [f["__epoch"], f["__seq"]]) for b, f in taken])
            buckets = [b for b, f in taken if "__more" in f]
            if not buckets:
                break
        else:
            self.dirty.update(buckets)
        return written

    async def _write(self, taken: list[tuple[int, dict]]) -> int:
        async with self.services.pool.acquire() as conn:
            async with conn.transaction():
                fresh = await conn.fetch(
                    """INSERT INTO api_flush_state (bucket, epoch, last_seq)
                       SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[])
                       ON CONFLICT (bucket, epoch) DO UPDATE SET last_seq = EXCLUDED.last_seq
                       WHERE api_flush_state.last_seq < EXCLUDED.last_seq
                       RETURNING bucket""",
                    [b for b, _ in taken], [f["__epoch"] for _, f in taken], [int(f["__seq"]) for _, f in taken])
                apply_to = {r["bucket"] for r in fresh}
                license_ids, days, units = [], [], []
                replies: tuple[list, list, list] = ([], [], [])
                for bucket, fields in taken:
                    if bucket not in apply_to:
                        continue  # applied before; its owner died before releasing it
                    for field, value in fields.items():
                        if field.startswith("__"):  # __epoch, __seq, __more
                            continue
                        if field.startswith("i:"):  # i:<license id>:<idempotency hash> -> first reply
                            _, license_id, idem = field.split(":", 2)
                            for column, item in zip(replies, (int(license_id), idem, value)):
                                column.append(item)
                            continue
                        license_id, day = field.split(":")
                        license_ids.append(int(license_id))
                        days.append(date(int(day[:4]), int(day[4:6]), int(day[6:])))
                        units.append(int(value))
                if license_ids:
                    await _apply(conn, license_ids, days, units)
                if replies[0]:
                    await _keep_replies(conn, *replies)
        return sum(units)


def _keys(bucket: int, *names: str) -> list[str]:
    return [f"qg:{{b{bucket}}}:{name}" for name in names]


_TAKE_KEYS = [_keys(b, "pending", "flushing", "fstate") for b in range(BUCKETS)]
_DONE_KEYS = [_keys(b, "flushing", "applied") for b in range(BUCKETS)]


def _decode(flat: list) -> dict:
    # Usage deltas and markers are text; an idempotent consume's first reply (i:...) stays msgpack.
    return {flat[i].decode(): flat[i + 1] if flat[i].startswith(b"i:") else flat[i + 1].decode()
            for i in range(0, len(flat), 2)}


async def _keep_replies(conn, license_ids: list[int], idems: list[str], replies: list[bytes]) -> None:
    # Replies of licenses deleted meanwhile are dropped (the join finds no row); a day later, all are.
    await conn.execute(
        """INSERT INTO api_idempotency (license_id, idem, reply)
           SELECT t.id, t.idem, t.reply FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS t(id, idem, reply)
           JOIN api_licenses l ON l.id = t.id
           ON CONFLICT DO NOTHING""", license_ids, idems, replies)
    await conn.execute("DELETE FROM api_idempotency WHERE created_at < now() - interval '1 day'")


async def _apply(conn, license_ids: list[int], days: list[date], units: list[int]) -> None:
    # Deltas of licenses deleted meanwhile are dropped (the join finds no row).
    await conn.execute(
        """UPDATE api_licenses l SET used_total = l.used_total + d.units
           FROM (SELECT id, sum(units) AS units FROM unnest($1::bigint[], $2::bigint[]) AS t(id, units) GROUP BY id) d
           WHERE l.id = d.id""", license_ids, units)
    await conn.execute(
        """INSERT INTO api_usage_daily (license_id, day, tenant_id, units)
           SELECT t.id, t.day, l.tenant_id, t.units
           FROM unnest($1::bigint[], $2::date[], $3::bigint[]) AS t(id, day, units) JOIN api_licenses l ON l.id = t.id
           ON CONFLICT (license_id, day) DO UPDATE SET units = api_usage_daily.units + EXCLUDED.units""",
        license_ids, days, units)

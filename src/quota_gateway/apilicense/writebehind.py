"""Write-behind of consumed units from Redis to Postgres, exactly once.

Per bucket: the take script renames `pending` to `flushing` under a new (epoch, seq); Postgres
applies the deltas and records (bucket, epoch, seq) in the same transaction, guarded so a seq is
applied at most once; then the done script drops `flushing`. A process killed at any step
leaves either `pending` (nothing taken) or `flushing` (taken, maybe applied): the next flusher,
in any process, takes the same `flushing` again and the guard makes the retry a no-op if it had
been applied. Postgres down: deltas wait in Redis, validation never waits for Postgres.

Every process flushes the buckets it dirtied each interval, and sweeps all buckets now and then
to finish what a dead process left behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import date

from ..redisconn import LuaScript

log = logging.getLogger("quota_gateway.writebehind")

TAKE = LuaScript("apilicense_flush_take")
DONE = LuaScript("apilicense_flush_done")
BUCKETS = 1024
SWEEP_EVERY = 30.0  # seconds between full sweeps


class UsageFlusher:
    def __init__(self, services, runner, interval: float) -> None:
        self.services = services
        self.runner = runner
        self.interval = interval
        self.dirty: set[int] = set()
        self._task: asyncio.Task | None = None

    def mark(self, bucket: int) -> None:
        self.dirty.add(bucket)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="usage-write-behind")

    async def stop(self) -> None:
        """Stop the loop, then one last flush so a clean shutdown leaves nothing behind."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.flush(list(self.dirty))
        except Exception:
            log.warning("final usage flush failed; the deltas stay in Redis for the next flusher")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            try:
                if loop.time() >= next_sweep:
                    await self.flush(range(BUCKETS))
                    next_sweep = loop.time() + SWEEP_EVERY
                else:
                    await self.flush(list(self.dirty))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("usage flush cycle failed")
            await asyncio.sleep(self.interval)

    async def flush(self, buckets) -> int:
        """Flush the given buckets; returns units written. Failed buckets stay dirty."""
        written = 0
        buckets = list(buckets)
        for bucket in buckets:
            self.dirty.discard(bucket)
        for start in range(0, len(buckets), 64):
            batch = buckets[start:start + 64]
            results = await asyncio.gather(*(self.flush_bucket(b) for b in batch), return_exceptions=True)
            for bucket, result in zip(batch, results):
                if isinstance(result, BaseException):
                    self.dirty.add(bucket)
                    self._record_error(result)
                else:
                    written += result
        return written

    def _record_error(self, exc: BaseException) -> None:
        metrics = self.services.metrics
        if "redis" in type(exc).__module__:
            metrics.redis_errors.labels("flush").inc()
        else:
            metrics.db_errors.labels("flush").inc()
        log.warning("usage flush failed (%s: %s); will retry", type(exc).__name__, exc)

    async def flush_bucket(self, bucket: int) -> int:
        """Write the bucket's usage behind: an unfinished flush first, then what is pending."""
        written = 0
        for _ in range(4):  # bounded: under constant load a bucket is never empty for long
            units = await self._flush_once(bucket)
            if units is None:
                break
            written += units
        return written

    async def _flush_once(self, bucket: int) -> int | None:
        prefix = f"qg:{{b{bucket}}}:"
        flat = await self.runner.run(TAKE, [f"{prefix}pending", f"{prefix}flushing", f"{prefix}fstate"],
                                     [secrets.token_hex(8)])  # a fresh epoch, adopted only by a bucket with none
        if not flat:
            return None
        fields = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        epoch, seq = fields.pop("__epoch"), int(fields.pop("__seq"))
        license_ids, days, units = [], [], []
        for field, value in fields.items():
            license_id, day = field.split(":")
            license_ids.append(int(license_id))
            days.append(date(int(day[:4]), int(day[4:6]), int(day[6:])))
            units.append(int(value))
        async with self.services.pool.acquire() as conn:
            async with conn.transaction():
                first_time = await conn.fetchval(
                    """INSERT INTO api_flush_state (bucket, epoch, last_seq) VALUES ($1, $2, $3)
                       ON CONFLICT (bucket, epoch) DO UPDATE SET last_seq = EXCLUDED.last_seq
                       WHERE api_flush_state.last_seq < EXCLUDED.last_seq
                       RETURNING 1""", bucket, epoch, seq)
                if first_time:
                    await _apply(conn, license_ids, days, units)
        await self.runner.run(DONE, [f"{prefix}flushing", f"{prefix}applied"], [epoch, seq])
        return sum(units) if first_time else 0


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

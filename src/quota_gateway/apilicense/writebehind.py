"""Write-behind of consumed units from Redis to Postgres, exactly once.

Per bucket: the take script renames `pending` to `flushing` under a new (epoch, seq); Postgres
applies the deltas and records (bucket, epoch, seq) in the same transaction, guarded so a seq is
applied at most once; then the done script drops `flushing`. A process killed at any step
leaves either `pending` (nothing taken) or `flushing` (taken, maybe applied): the next flusher,
in any process, takes the same `flushing` again and the guard makes the retry a no-op if it had
been applied. Postgres down: deltas wait in Redis, validation never waits for Postgres.

A flush that moves a key's lifetime usage across 80 % or to 100 % of its quota raises
`api.quota.near_limit` / `api.quota.exhausted` in the same transaction (so the validate path
does no extra work for them).

On a Redis Cluster with replicas, a take is written to Postgres only once a replica has it
(WAIT): a failover to that replica then finds the same `flushing` batch, which the guard makes
a no-op, instead of numbering fresh usage with a sequence Postgres already applied (which would
drop that usage). A take no replica acknowledged waits for the next flush.

Every process flushes the buckets it dirtied each interval, and sweeps all buckets now and then
to finish what a dead process left behind. Buckets are flushed in batches: one pipelined round
of take scripts, one Postgres transaction, one pipelined round of done scripts.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import date, datetime
from typing import TYPE_CHECKING

import asyncpg
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import events, fastpath
from ..background import WriteBehindLoop
from ..events import outbox
from ..scripts import ScriptRunner
from .keyspace import DONE, DONE_KEYS, TAKE, TAKE_KEYS, TakenUsage, taken_usage

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("quota_gateway.writebehind")



class UsageFlusher(WriteBehindLoop):
    name = "usage-write-behind"

    def __init__(self, services: Services, runner: ScriptRunner, interval: float) -> None:
        super().__init__(interval)
        self.services = services
        self.runner = runner
        self.dirty: set[int] = set()

    def touched(self) -> list[int]:
        return list(self.dirty)

    async def everything(self) -> list[int]:
        return list(range(fastpath.BUCKETS))

    async def drain(self, targets: list) -> int:
        return await self.flush(targets)

    async def flush(self, buckets: Iterable[int]) -> int:
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
            takes = await self.runner.run_many(TAKE, [(TAKE_KEYS[b], [epoch]) for b in buckets])
            taken = [(b, usage) for b, reply in zip(buckets, takes, strict=True)
                     if (usage := taken_usage(reply)) is not None]
            if not taken:
                break
            if not await self.runner.replicated([TAKE_KEYS[b][0] for b, _ in taken]):
                raise RedisTimeoutError("usage taken but not yet on a replica; written at the next flush")
            written += await self._write(taken)
            await self.runner.run_many(DONE, [(DONE_KEYS[b], usage.done_args()) for b, usage in taken])
            buckets = [b for b, usage in taken if usage.more]
            if not buckets:
                break
        else:
            self.dirty.update(buckets)
        return written

    async def _write(self, taken: list[tuple[int, TakenUsage]]) -> int:
        async with self.services.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetch(
                """INSERT INTO api_flush_state (bucket, epoch, last_seq)
                       SELECT * FROM unnest($1::int[], $2::text[], $3::bigint[])
                       ON CONFLICT (bucket, epoch) DO UPDATE SET last_seq = EXCLUDED.last_seq
                       WHERE api_flush_state.last_seq < EXCLUDED.last_seq
                       RETURNING bucket""",
                [b for b, _ in taken], [u.epoch for _, u in taken], [u.seq for _, u in taken])
            apply_to = {r["bucket"] for r in fresh}
            license_ids: list[int] = []
            days: list[date] = []
            units: list[int] = []
            replies: list[tuple[int, str, bytes]] = []
            for bucket, usage in taken:
                if bucket not in apply_to:
                    continue  # applied before; its owner died before releasing it
                for license_id, day, amount in usage.deltas:
                    license_ids.append(license_id)
                    days.append(day)
                    units.append(amount)
                replies += usage.replies
            if license_ids:
                crossings = await _apply(conn, license_ids, days, units)
                if crossings:
                    await _raise_quota_events(conn, crossings, self.services.clock.utcnow())
            if replies:
                await _keep_replies(conn, replies)
        return sum(units)


async def _keep_replies(conn: asyncpg.Connection, replies: list[tuple[int, str, bytes]]) -> None:
    # Replies of licenses deleted meanwhile are dropped (the join finds no row); a day later, all are.
    await conn.execute(
        """INSERT INTO api_idempotency (license_id, idem, reply)
           SELECT t.id, t.idem, t.reply FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS t(id, idem, reply)
           JOIN api_licenses l ON l.id = t.id
           ON CONFLICT DO NOTHING""", [r[0] for r in replies], [r[1] for r in replies], [r[2] for r in replies])
    await conn.execute("DELETE FROM api_idempotency WHERE created_at < now() - interval '1 day'")


# Lifetime quota notices: `api.quota.near_limit` when usage reaches this share of the quota.
NEAR_LIMIT_PERCENT = 80


async def _apply(conn: asyncpg.Connection, license_ids: list[int], days: list[date],
                 units: list[int]) -> list[asyncpg.Record]:
    """Add the deltas; returns the licenses whose lifetime usage this flush moved across 80 % or
    100 % of their quota (usage = used_total - used_offset, as before and after the delta)."""
    # Deltas of licenses deleted meanwhile are dropped (the join finds no row). The UPDATE locks
    # each row, so RETURNING's before/after of concurrent flushes never overlap.
    crossings: list[asyncpg.Record] = await conn.fetch(
        """WITH applied AS (
               UPDATE api_licenses l SET used_total = l.used_total + d.units
               FROM (SELECT id, sum(units) AS units FROM unnest($1::bigint[], $2::bigint[]) AS t(id, units)
                     GROUP BY id) d
               WHERE l.id = d.id
               RETURNING l.id, l.tenant_id, l.product_id, l.key_hint, l.email, l.client_identifier, l.max_api_calls,
                         l.used_offset, l.used_total - l.used_offset AS used, l.used_total - l.used_offset - d.units AS before)
           SELECT * FROM applied
           WHERE max_api_calls > 0
             AND ((before * 100 < max_api_calls * $3 AND used * 100 >= max_api_calls * $3)
                  OR (before < max_api_calls AND used >= max_api_calls))
           ORDER BY id""", license_ids, units, NEAR_LIMIT_PERCENT)
    await conn.execute(
        """INSERT INTO api_usage_daily (license_id, day, tenant_id, units)
           SELECT t.id, t.day, l.tenant_id, t.units
           FROM unnest($1::bigint[], $2::date[], $3::bigint[]) AS t(id, day, units) JOIN api_licenses l ON l.id = t.id
           ON CONFLICT (license_id, day) DO UPDATE SET units = api_usage_daily.units + EXCLUDED.units""",
        license_ids, days, units)
    return crossings


async def _raise_quota_events(conn: asyncpg.Connection, crossings: list[asyncpg.Record], now: datetime) -> None:
    """`api.quota.near_limit` / `api.quota.exhausted` for each crossing, in the flush's
    transaction. Each is claimed by its (license, kind, reset, quota) row first, so a crossing is
    announced once even if the same usage were seen twice; a reset or a new quota re-arms both."""
    wanted: list[tuple[asyncpg.Record, str]] = []
    for row in crossings:
        quota = row["max_api_calls"]
        if row["before"] * 100 < quota * NEAR_LIMIT_PERCENT <= row["used"] * 100:
            wanted.append((row, "near_limit"))
        if row["before"] < quota <= row["used"]:
            wanted.append((row, "exhausted"))
    claimed = {(r["license_id"], r["kind"]) for r in await conn.fetch(
        """INSERT INTO api_quota_notices (license_id, kind, used_offset, quota, tenant_id, at)
           SELECT t.*, $6 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::uuid[]) AS t
           ON CONFLICT DO NOTHING RETURNING license_id, kind""",
        [r["id"] for r, _ in wanted], [k for _, k in wanted], [r["used_offset"] for r, _ in wanted],
        [r["max_api_calls"] for r, _ in wanted], [r["tenant_id"] for r, _ in wanted], now)}
    raised = []
    for row, kind in wanted:
        if (row["id"], kind) not in claimed:
            continue
        data = {"apiLicenseId": row["id"], "productId": row["product_id"], "apiKey": row["key_hint"],
                "email": row["email"], "clientIdentifier": row["client_identifier"], "used": row["used"],
                "maxApiCalls": row["max_api_calls"],
                "percentUsed": min(100, row["used"] * 100 // row["max_api_calls"])}
        raised.append((str(row["tenant_id"]), _QUOTA_EVENTS[kind], data, now))
    await outbox.emit_many(conn, raised)


_QUOTA_EVENTS = {"near_limit": events.API_QUOTA_NEAR_LIMIT, "exhausted": events.API_QUOTA_EXHAUSTED}

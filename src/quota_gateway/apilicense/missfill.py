"""Cache misses on the validate path, coalesced: every key whose metadata missed in one event-loop
tick is filled with one PostgreSQL query and one script call per bucket (metadata and counters
together; the calls of one batch leave in one pipeline write), instead of a metadata read, a
metadata fill, a counter read and a counter fill per key.

After a Redis restart, a cold start or a burst of never-seen keys, requests missing in the same
tick (they arrive together: one pipeline reply wakes them together) share one round trip to
each store; each then runs its validation again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import keyspace
from .keyspace import LicenseRef

if TYPE_CHECKING:
    import asyncpg

    from ..scripts import ScriptRunner

log = logging.getLogger("quota_gateway.apilicense")

# One statement: a single snapshot of the rows, their usage and the flushes applied to their
# buckets (the counters rebuild needs the three to agree, as FILL_USED's transaction does). A key
# with idempotent replies kept in Postgres gets its counters from engine._fill_used, which restores
# those replies with them (as does one whose rebuilt total falls below its reset offset).
_ROWS = """
SELECT l.id, l.tenant_id, l.key_digest, l.revoked_at, l.expires_at, l.max_api_calls, l.used_offset, l.used_total,
       p.name,
       ARRAY(SELECT f.name FROM features f WHERE f.product_id = l.product_id ORDER BY f.code) AS features,
       (SELECT string_agg(s.epoch || ':' || s.last_seq, ',') FROM api_flush_state s WHERE s.bucket = l.bucket)
           AS applied,
       EXISTS (SELECT 1 FROM api_idempotency i WHERE i.license_id = l.id
               AND i.created_at > now() - interval '1 day') AS kept_replies
FROM api_licenses l JOIN products p ON p.id = l.product_id
WHERE l.key_digest = ANY($1::bytea[])"""


class MissBatcher:
    def __init__(self, pool: asyncpg.Pool, runner: ScriptRunner) -> None:
        self._pool = pool
        self._runner = runner
        self._waiting: dict[str, tuple[LicenseRef, Any, list[asyncio.Future]]] = {}  # meta key -> ...
        self._running: set[asyncio.Task] = set()
        self.batches = 0  # batches run (tests and benchmarks read it)

    async def fill(self, ref: LicenseRef, generation: Any) -> None:
        """Fill this key's metadata and counters together with every other miss of this tick."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = self._waiting.get(ref.meta)
        if entry is None:
            if not self._waiting:
                loop.call_soon(self._start)  # after the other tasks woken in this tick have asked
            self._waiting[ref.meta] = (ref, generation, [future])
        else:
            entry[2].append(future)
        await future

    def _start(self) -> None:
        batch, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._run(list(batch.values())))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[LicenseRef, Any, list[asyncio.Future]]]) -> None:
        misses = [(ref, generation) for ref, generation, _ in batch]
        outcomes: list[BaseException | None]
        try:
            await self._fill(misses)
            outcomes = [None] * len(batch)
        except Exception as exc:
            outcomes = await self._restore(misses, exc)
        for (_, _, futures), outcome in zip(batch, outcomes, strict=True):
            for future in futures:
                if future.done():
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)

    async def _restore(self, misses: list[tuple[LicenseRef, Any]], exc: Exception) -> list[BaseException | None]:
        """Postgres (or Redis) failed the batch: keys with a backup copy of their metadata go on with
        it for a short while (dropped by every change, so as current as the lapsed copy was); the
        others get the error."""
        try:
            restored = await self._runner.run_many(keyspace.RESTORE_META, [
                (ref.meta_keys, [generation, keyspace.OUTAGE_META_TTL]) for ref, generation in misses])
        except Exception:
            return [exc] * len(misses)
        if any(restored):
            log.warning("cannot fill API key metadata (%s: %s); serving last copies", type(exc).__name__, exc)
        return [None if done else exc for done in restored]

    async def _fill(self, misses: list[tuple[LicenseRef, Any]]) -> None:
        self.batches += 1
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_ROWS, [ref.digest for ref, _ in misses])
        found = {bytes(row["key_digest"]): row for row in rows}
        by_bucket: dict[int, list[tuple[LicenseRef, Any, Any]]] = {}
        for ref, generation in misses:
            by_bucket.setdefault(ref.bucket, []).append((ref, generation, found.get(ref.digest)))
        calls = [keyspace.fill_batch_call(items) for items in by_bucket.values()]
        await self._runner.run_many(keyspace.FILL_BATCH, calls)

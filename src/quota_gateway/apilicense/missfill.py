"""Cache misses on the validate path, coalesced: every key whose metadata missed is filled with the
other misses of its batch by one PostgreSQL query and one script call (on a single Redis; a
cluster takes one call per bucket, since a script may touch one hash tag only), which writes the
keys' metadata, their products' and their counters, then runs the waiting validations themselves.
The metadata goes packed as the scripts store it, one argument per key. A first touch costs its
own validate call (the miss) and a share of the batch, instead of a metadata read, a metadata
fill, a counter read, a counter fill and a second validation.

After a Redis restart, a cold start or a burst of never-seen keys, the misses of one tick (one
pipeline reply wakes them together), and those arriving while batches read PostgreSQL, share one
round trip to each store, up to BATCH_KEYS keys a batch; a batch fills Redis while others read.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from . import keyspace
from .keyspace import LicenseRef

if TYPE_CHECKING:
    import asyncpg

    from ..scripts import ScriptRunner

# One statement: a single snapshot of the rows, their usage and the flushes applied to their
# buckets (the counters rebuild needs the three to agree, as FILL_USED's transaction does). A key
# with idempotent replies kept in Postgres gets its counters from engine._fill_used, which restores
# those replies with them (as does one whose rebuilt total falls below its reset offset).
_ROWS = """
SELECT l.id, l.tenant_id, l.product_id, l.key_digest, l.revoked_at, l.expires_at, l.max_api_calls, l.used_offset,
       l.used_total, p.name, p.cache_version,
       ARRAY(SELECT f.name FROM features f WHERE f.product_id = l.product_id ORDER BY f.code) AS features,
       (SELECT string_agg(s.epoch || ':' || s.last_seq, ',') FROM api_flush_state s WHERE s.bucket = l.bucket)
           AS applied,
       EXISTS (SELECT 1 FROM api_idempotency i WHERE i.license_id = l.id
               AND i.created_at > now() - interval '1 day') AS kept_replies
FROM api_licenses l JOIN products p ON p.id = l.product_id
WHERE l.key_digest = ANY($1::bytea[])"""


# A cold wave goes in batches of at most BATCH_KEYS keys, READS_AT_ONCE of them reading PostgreSQL
# at once; a batch whose read is back fills Redis while others read. Measured at 64 connections
# (cold first touches a second, same machine state, two turns each): batches as large as the
# misses waiting (~30-50 keys, one read at a time) 4,800-5,400; two reads at once 5,600-5,800;
# two reads of at most 16 keys 6,400-7,900 (12 and 24 keys alike; 8 keys 4,400-5,000, the query's
# own cost then dominating; three reads no better). Large batches make a convoy: all their
# validations are answered together, their clients' next requests miss together, and the server,
# Redis and PostgreSQL take turns idling while one of them works through a whole batch.
BATCH_KEYS = 16
READS_AT_ONCE = 2


class MissBatcher:
    def __init__(self, pool: asyncpg.Pool, runner: ScriptRunner) -> None:
        self._pool = pool
        self._runner = runner
        # key hash -> (where it lives, generation seen, [(its validations' futures, their arguments)])
        self._waiting: dict[str, tuple[LicenseRef, Any, list[tuple[asyncio.Future, list]]]] = {}
        self._reading: set[asyncio.Task] = set()  # the batches whose PostgreSQL read is in flight
        self._batches: set[asyncio.Task] = set()  # every batch not finished (the loop keeps weak references)
        self._held: Any = None  # a pool connection kept for the batch that starts next
        self.batches = 0  # batches run (tests and benchmarks read it)

    async def fill(self, ref: LicenseRef, generation: Any, validate_args: list) -> list:
        """Fill this key's metadata and counters together with every other miss of this tick (or of
        every tick the reads in flight span), then validate: the validate script's reply."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = self._waiting.get(ref.entry)
        if entry is None:
            if not self._waiting and len(self._reading) < READS_AT_ONCE:
                loop.call_soon(self._start)  # after the other tasks woken in this tick have asked
            self._waiting[ref.entry] = (ref, generation, [(future, validate_args)])
        else:
            entry[2].append((future, validate_args))
        return await future

    async def close(self) -> None:
        """Give back the connection kept for a next batch, should none have taken it (stopping)."""
        held, self._held = self._held, None
        if held is not None:
            await self._pool.release(held)

    def _start(self) -> None:
        """Run the waiting misses in batches (BATCH_KEYS keys at most), while fewer than
        READS_AT_ONCE batches read PostgreSQL: misses arriving meanwhile wait for a read to end
        and then go together, so a cold wave makes few batches (one query and one script call for
        many keys) rather than one per key."""
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._reading) < READS_AT_ONCE:
            if len(self._waiting) <= BATCH_KEYS:
                batch, self._waiting = list(self._waiting.values()), {}
            else:  # the longest waiting first (a dict keeps the order they came in)
                batch = [self._waiting.pop(key) for key in list(itertools.islice(self._waiting, BATCH_KEYS))]
            task = loop.create_task(self._run(batch))
            self._reading.add(task)
            self._batches.add(task)
            task.add_done_callback(self._ended)

    def _read_done(self, task: asyncio.Task) -> None:
        """That batch's PostgreSQL read is back (or failed): another batch may read."""
        if task in self._reading:
            self._reading.discard(task)
            self._start()

    def _ended(self, task: asyncio.Task) -> None:
        self._batches.discard(task)
        self._read_done(task)  # if it failed before its read was back

    async def _run(self, batch: list[tuple[LicenseRef, Any, list[tuple[asyncio.Future, list]]]]) -> None:
        try:
            await self._fill(batch)
        except Exception as exc:  # Postgres or Redis failed the batch: each waiting validation gets the error
            for _, _, waiting in batch:
                for future, _ in waiting:
                    if not future.done():
                        future.set_exception(exc)

    async def _fill(self, batch: list[tuple[LicenseRef, Any, list[tuple[asyncio.Future, list]]]]) -> None:
        self.batches += 1
        conn, self._held = self._held, None
        if conn is None:
            conn = await self._pool.acquire()
        try:
            rows = await conn.fetch(_ROWS, [ref.digest for ref, _, _ in batch])
        except BaseException:
            await self._pool.release(conn)
            raise
        if self._waiting and self._held is None:  # the next batch is forming: it reads on this connection,
            self._held = conn                       # with no reset between
        else:
            await self._pool.release(conn)
        self._read_done(asyncio.current_task())  # type: ignore[arg-type]  # _fill runs in its batch's task
        found = {bytes(row["key_digest"]): row for row in rows}
        by_bucket: dict[int, list[tuple[LicenseRef, Any, Any, list[tuple[asyncio.Future, list]]]]] = {}
        for ref, generation, waiting in batch:
            by_bucket.setdefault(ref.bucket, []).append((ref, generation, found.get(ref.digest), waiting))
        groups = list(by_bucket.values())
        products: dict[int, bytes] = {}  # product id -> its metadata packed, once per batch
        calls = [keyspace.fill_batch_call(part, products) for part in self._calls(groups)]
        replies = await self._runner.run_many(keyspace.FILL_BATCH, calls)
        answers = iter([answer for reply in replies for answer in keyspace.fill_batch_answers(reply)])
        for items in groups:  # the answers come in the order the requests were sent
            for _, _, _, waiting in items:
                for future, _ in waiting:
                    answer = next(answers)
                    if not future.done():
                        future.set_result(answer)

    def _calls(self, groups: list[list]) -> list[list[list]]:
        """The batch's bucket groups as the fill calls take them: all in one call where a script
        may span buckets (a single Redis); else one call per bucket."""
        if not self._runner.spans_buckets:
            return [[items] for items in groups]
        return [groups]

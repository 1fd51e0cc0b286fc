"""Cache misses on the validate path, coalesced: every key whose metadata missed is filled with the
other misses of its batch by one PostgreSQL query and one script call (on a single Redis; a
cluster takes one call per bucket, since a script may touch one hash tag only), which writes the
keys' metadata, their products' and their counters, then runs the waiting validations themselves.
The metadata goes packed as the scripts store it, one argument per key. A first touch costs its
own validate call (the miss) and a share of the batch, instead of a metadata read, a metadata
fill, a counter read, a counter fill and a second validation.

After a Redis restart, a cold start or a burst of never-seen keys, the misses of one tick (one
pipeline reply wakes them together), and those arriving while a batch reads PostgreSQL, share one
round trip to each store; a batch fills Redis while the next one reads.
"""

from __future__ import annotations

import asyncio
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


# Keys per fill call on a single Redis: a call runs alone there, so a wave of thousands of misses
# is cut into calls other clients' commands can pass between.
FILL_CALL_KEYS = 256


class MissBatcher:
    def __init__(self, pool: asyncpg.Pool, runner: ScriptRunner) -> None:
        self._pool = pool
        self._runner = runner
        # key hash -> (where it lives, generation seen, [(its validations' futures, their arguments)])
        self._waiting: dict[str, tuple[LicenseRef, Any, list[tuple[asyncio.Future, list]]]] = {}
        self._reading: asyncio.Task | None = None  # the batch whose PostgreSQL read is in flight
        self._batches: set[asyncio.Task] = set()  # every batch not finished (the loop keeps weak references)
        self._held: Any = None  # a pool connection kept for the batch that starts next
        self.batches = 0  # batches run (tests and benchmarks read it)

    async def fill(self, ref: LicenseRef, generation: Any, validate_args: list) -> list:
        """Fill this key's metadata and counters together with every other miss of this tick (or of
        every tick the read in flight spans), then validate: the validate script's reply."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = self._waiting.get(ref.entry)
        if entry is None:
            if not self._waiting and self._reading is None:
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
        """Run the waiting misses as one batch. One PostgreSQL read at a time: misses arriving
        meanwhile wait for it and then go together, so a cold wave makes few large batches (one
        query and one script call for many keys) rather than many small ones. Once a batch's read
        is back, the next batch reads while this one fills Redis: filling is half a batch's time,
        and a batch that waited for it as well made the cold wave a convoy (Redis, PostgreSQL and
        the server each idle while another works). Measured at 64 connections, same machine
        state: ~27 keys a batch instead of ~32, and a fifth more first touches a second."""
        if self._reading is not None or not self._waiting:
            return
        batch, self._waiting = self._waiting, {}
        task = self._reading = asyncio.get_running_loop().create_task(self._run(list(batch.values())))
        self._batches.add(task)
        task.add_done_callback(self._ended)

    def _read_done(self) -> None:
        """This batch's PostgreSQL read is back (or failed): the next batch may read."""
        self._reading = None
        self._start()

    def _ended(self, task: asyncio.Task) -> None:
        self._batches.discard(task)
        if self._reading is task:  # failed before its read was back
            self._read_done()

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
        conn, self._held = self._held or await self._pool.acquire(), None
        try:
            rows = await conn.fetch(_ROWS, [ref.digest for ref, _, _ in batch])
        except BaseException:
            await self._pool.release(conn)
            raise
        if self._waiting:  # the next batch is forming: it reads on this connection, with no reset between
            self._held = conn
        else:
            await self._pool.release(conn)
        self._read_done()
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
        may span buckets (a single Redis), up to FILL_CALL_KEYS keys a call; else one per bucket."""
        if not self._runner.spans_buckets:
            return [[items] for items in groups]
        calls: list[list[list]] = [[]]
        keys = 0
        for items in groups:
            if keys + len(items) > FILL_CALL_KEYS and calls[-1]:
                calls.append([])
                keys = 0
            calls[-1].append(items)
            keys += len(items)
        return calls

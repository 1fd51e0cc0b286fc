"""A durable job queue in PostgreSQL: enqueue in the caller's transaction, run by any number of
gateway processes at once, each job by one of them at a time.

Claiming is `SELECT ... FOR UPDATE SKIP LOCKED`; a claimed job is `running` with a lease
(`locked_until`). Each attempt is written (and committed) before its handler runs and completed
after it, so a process that dies in between leaves a `running` attempt: when the lease runs out,
another worker marks it `interrupted` and tries again. Nothing is lost; handlers must therefore
tolerate running twice (webhooks carry a stable id, e-mails a stable Message-ID).

Failures are retried after 5 min, 30 min, 2 h and 24 h (the first attempt runs at once), all on
the injectable clock; after `max_attempts` (5) the job is `failed`. A NOTIFY on enqueue (sent
at commit) wakes the workers, so a job starts within milliseconds instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ..background import cancel_and_wait
from . import outbox

log = logging.getLogger("quota_gateway.events.jobs")

# Seconds to wait after the n-th failed attempt (n = 1..4); the first attempt runs immediately.
RETRY_DELAYS: tuple[int, ...] = (5 * 60, 30 * 60, 2 * 3600, 24 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
_ERROR_CHARS = 2000

Handler = Callable[[Any, "Job"], Awaitable[None]]
_HANDLERS: dict[str, Handler] = {}


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed job as its handler sees it; `attempt` counts from 1."""

    id: int
    tenant_id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    dedupe_key: str | None

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


class Defer(Exception):
    """Raised by a handler that cannot run now for a reason that is not a failure (e.g. another
    worker holds the resource): the job runs again after `seconds`, and the attempt is not counted."""

    def __init__(self, seconds: float, reason: str = "deferred") -> None:
        super().__init__(reason)
        self.seconds = seconds


class Permanent(Exception):
    """Raised by a handler whose job can never succeed: it fails now, without further retries."""


def register(kind: str, handler: Handler) -> None:
    """`async def handler(services, job) -> None`; raising means the attempt failed."""
    _HANDLERS[kind] = handler


def registered_kinds() -> list[str]:
    return sorted(_HANDLERS)


def retry_delay(failed_attempts: int) -> int:
    """Seconds before the next attempt after `failed_attempts` failures in a row."""
    return RETRY_DELAYS[min(failed_attempts, len(RETRY_DELAYS)) - 1]


async def enqueue(conn: asyncpg.Connection, tenant_id: str, kind: str, payload: dict[str, Any], *,
                  dedupe_key: str | None = None, run_at: datetime | None = None,
                  max_attempts: int = MAX_ATTEMPTS) -> int | None:
    """Add a job in the caller's transaction; None when (tenant, kind, dedupe_key) already exists.
    `run_at` None: as soon as a worker is free."""
    job_id: int | None = await conn.fetchval(
        """INSERT INTO jobs (tenant_id, kind, payload, dedupe_key, run_at, max_attempts)
           VALUES ($1, $2, $3, $4, COALESCE($5, '-infinity'::timestamptz), $6)
           ON CONFLICT (tenant_id, kind, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING RETURNING id""",
        tenant_id, kind, payload, dedupe_key, run_at, max_attempts)
    if job_id is not None:
        await conn.execute("SELECT pg_notify($1, 'job')", outbox.NOTIFY_CHANNEL)
    return job_id


# --- outbox fan-out -------------------------------------------------------------------------------

FanOut = Callable[[asyncpg.Connection, asyncpg.Record, dict[str, Any]], Awaitable[None]]
_FANOUTS: list[FanOut] = []


def add_fanout(fan_out: FanOut) -> None:
    """`async def fan_out(conn, event_row, envelope)`, called in the dispatching transaction for
    every new event (webhooks enqueue one delivery per subscribed endpoint here)."""
    if fan_out not in _FANOUTS:
        _FANOUTS.append(fan_out)


async def dispatch_events(services: Any, limit: int = 200) -> int:
    """Fan out undispatched outbox events: jobs for their subscribers, in one transaction with
    marking them dispatched (so each event fans out exactly once, whichever process does it)."""
    now = services.clock.utcnow()
    async with services.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch("SELECT id, uid, tenant_id, type, data, created_at FROM events "
                                "WHERE delivered_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED", limit)
        if not rows:
            return 0
        for row in rows:
            envelope = outbox.envelope(row)
            for fan_out in _FANOUTS:
                await fan_out(conn, row, envelope)
            for kind in outbox.subscribers(row["type"]):
                await enqueue(conn, str(row["tenant_id"]), kind, envelope, dedupe_key=f"event:{row['id']}")
        await conn.execute("UPDATE events SET delivered_at = $2 WHERE id = ANY($1::bigint[])",
                           [r["id"] for r in rows], now)
    return len(rows)


# --- claiming and running -------------------------------------------------------------------------

def _lease(services: Any) -> float:
    return float(services.settings.job_lease_seconds)


async def claim(services: Any, limit: int) -> list[Job]:
    """Take up to `limit` due jobs (and jobs whose holder's lease ran out), recording an attempt
    for each before returning them."""
    kinds = registered_kinds()
    if limit <= 0 or not kinds:
        return []
    now = services.clock.utcnow()
    lease_end = now + timedelta(seconds=_lease(services))
    claimed: list[Job] = []
    async with services.pool.acquire() as conn, conn.transaction():
        abandoned = await conn.fetch(
            """SELECT id, tenant_id, kind, payload, dedupe_key, attempts, max_attempts FROM jobs
               WHERE state = 'running' AND locked_until <= $1 AND kind = ANY($2::text[])
               ORDER BY locked_until LIMIT $3 FOR UPDATE SKIP LOCKED""", now, kinds, limit)
        for row in abandoned:
            # The previous holder died (or hung) mid-attempt: that attempt's outcome is unknown.
            await conn.execute("UPDATE job_attempts SET outcome = 'interrupted', finished_at = $2, "
                               "error = 'worker stopped before recording an outcome' "
                               "WHERE job_id = $1 AND outcome = 'running'", row["id"], now)
        rows = list(abandoned)
        if len(rows) < limit:
            rows += await conn.fetch(
                """SELECT id, tenant_id, kind, payload, dedupe_key, attempts, max_attempts FROM jobs
                   WHERE state = 'pending' AND run_at <= $1 AND kind = ANY($2::text[])
                   ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED""", now, kinds, limit - len(rows))
        for row in rows:
            if row["attempts"] >= row["max_attempts"]:
                await conn.execute("UPDATE jobs SET state = 'failed', finished_at = $2, locked_until = NULL, "
                                   "last_error = 'interrupted on its last attempt' WHERE id = $1", row["id"], now)
                continue
            attempt = row["attempts"] + 1
            await conn.execute("UPDATE jobs SET state = 'running', attempts = $2, locked_until = $3 WHERE id = $1",
                               row["id"], attempt, lease_end)
            await conn.execute("INSERT INTO job_attempts (job_id, attempt, started_at) VALUES ($1, $2, $3)",
                               row["id"], attempt, now)
            claimed.append(Job(row["id"], str(row["tenant_id"]), row["kind"], row["payload"], attempt,
                               row["max_attempts"], row["dedupe_key"]))
    return claimed


async def execute(services: Any, job: Job) -> bool:
    """Run one claimed job's handler and record its outcome; True on success."""
    handler = _HANDLERS[job.kind]
    error: str | None = None
    deferred: Defer | None = None
    permanent = False
    try:
        # Finish well inside the lease, so no other worker takes the job over while this one runs.
        await asyncio.wait_for(handler(services, job), timeout=_lease(services) * 0.8)
    except Defer as exc:
        deferred = exc
    except Permanent as exc:
        error, permanent = str(exc) or type(exc).__name__, True
    except asyncio.CancelledError:
        raise  # shutting down: the lease runs out and another worker retries
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not isinstance(exc, (OSError, asyncio.TimeoutError)):
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, error)
    now = services.clock.utcnow()
    async with services.pool.acquire() as conn, conn.transaction():
        owned = await conn.fetchval("SELECT 1 FROM jobs WHERE id = $1 AND state = 'running' AND attempts = $2 "
                                    "FOR UPDATE", job.id, job.attempt)
        if not owned:  # the lease ran out and another worker took over; its record wins
            return error is None and deferred is None
        if deferred is not None:
            await conn.execute("UPDATE jobs SET state = 'pending', attempts = attempts - 1, run_at = $2, "
                               "locked_until = NULL WHERE id = $1", job.id, now + timedelta(seconds=deferred.seconds))
            await _finish_attempt(conn, job, now, "deferred", str(deferred))
            return False
        if error is None:
            await conn.execute("UPDATE jobs SET state = 'succeeded', finished_at = $2, locked_until = NULL, "
                               "last_error = NULL WHERE id = $1", job.id, now)
            await _finish_attempt(conn, job, now, "succeeded", None)
            return True
        error = error[:_ERROR_CHARS]
        if permanent or job.last_attempt:
            await conn.execute("UPDATE jobs SET state = 'failed', finished_at = $2, locked_until = NULL, "
                               "last_error = $3 WHERE id = $1", job.id, now, error)
        else:
            await conn.execute("UPDATE jobs SET state = 'pending', run_at = $2, locked_until = NULL, last_error = $3 "
                               "WHERE id = $1", job.id, now + timedelta(seconds=retry_delay(job.attempt)), error)
        await _finish_attempt(conn, job, now, "failed", error)
    return False


async def _finish_attempt(conn: asyncpg.Connection, job: Job, now: datetime, outcome: str, error: str | None) -> None:
    await conn.execute("UPDATE job_attempts SET outcome = $3, finished_at = $4, error = $5 "
                       "WHERE job_id = $1 AND attempt = $2 AND outcome = 'running'", job.id, job.attempt, outcome,
                       now, error)


async def run_due(services: Any, *, limit: int = 100) -> int:
    """Dispatch new events and run every job due by the clock, until none is left; returns how many
    attempts ran. What the worker loop does, callable directly (tests move a ManualClock first)."""
    ran = 0
    while True:
        await dispatch_events(services)
        await run_periodic(services)
        batch = await claim(services, limit)
        if not batch:
            return ran
        await asyncio.gather(*(execute(services, job) for job in batch))
        ran += len(batch)


# --- periodic work (scheduler) --------------------------------------------------------------------

Periodic = Callable[[Any], Awaitable[int]]
_PERIODIC: list[Periodic] = []


def add_periodic(task: Periodic) -> None:
    """`async def task(services) -> int`, run by every worker once per QG_SCHEDULER_INTERVAL:
    time-driven work such as expiry events. It must claim its rows itself (SKIP LOCKED) so any
    number of processes can run it."""
    if task not in _PERIODIC:
        _PERIODIC.append(task)


async def run_periodic(services: Any) -> int:
    done = 0
    for task in _PERIODIC:
        try:
            done += await task(services)
        except Exception:
            log.exception("periodic task %s failed; retried on the next cycle", getattr(task, "__name__", task))
    return done


# --- the worker loop --------------------------------------------------------------------------------

class JobWorker:
    """Per process: claims jobs while it has free slots, runs them as tasks, and sleeps until a
    NOTIFY, a finished job or the poll interval (which also catches retries coming due)."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.concurrency = max(1, int(services.settings.job_concurrency))
        self.poll_interval = float(services.settings.job_poll_interval)
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._loop(), name="events-worker")

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(self.services.settings.database_url)
            await self._listener.add_listener(outbox.NOTIFY_CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN failed (%s); jobs start at the next poll instead", exc)
            self._listener = None

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
            await cancel_and_wait(self._task)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)
            for task in list(self._inflight):
                await cancel_and_wait(task)
        if self._listener is not None:
            await self._listener.close(timeout=2)

    def _done(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_periodic = loop.time() - self.services.settings.scheduler_interval
        while not self._stopping:
            self._wake.clear()
            busy = False
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                busy = await dispatch_events(self.services) > 0
                if loop.time() - last_periodic >= self.services.settings.scheduler_interval:
                    last_periodic = loop.time()
                    busy = await run_periodic(self.services) > 0 or busy
                free = self.concurrency - len(self._inflight)
                if free > 0:
                    for job in await claim(self.services, free):
                        busy = True
                        task = asyncio.create_task(execute(self.services, job), name=f"job-{job.id}")
                        self._inflight.add(task)
                        task.add_done_callback(self._done)
            except Exception:
                log.exception("events worker cycle failed; retrying")
                busy = False
            if busy and len(self._inflight) < self.concurrency:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

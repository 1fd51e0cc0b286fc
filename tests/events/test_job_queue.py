"""The durable job queue: enqueue in a transaction, dedupe, the retry schedule on the clock,
a crash between attempt and outcome, deferral, concurrent workers, and the NOTIFY wake-up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest

from conftest import running_app
from quota_gateway import db
from quota_gateway.events import jobs

KIND = "test.echo"


class Recorder:
    """A handler that fails while `failures` > 0 and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, dict]] = []
        self.failures = 0
        self.arrived = asyncio.Event()

    async def __call__(self, services, job: jobs.Job) -> None:
        self.calls.append((job.id, job.attempt, job.payload))
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("receiver said no")
        self.arrived.set()


@pytest.fixture
def recorder():
    rec = Recorder()
    jobs.register(KIND, rec)
    yield rec
    jobs._HANDLERS.pop(KIND, None)


@pytest.fixture
async def quiet_app(settings, clock):
    """The app with its background worker off: the test drives `run_due` itself."""
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def _enqueue(app, tenant_id: str, payload: dict, **kw) -> int | None:
    async with app.state.services.pool.acquire() as conn:
        return await jobs.enqueue(conn, tenant_id, KIND, payload, **kw)


async def _job(app, job_id: int) -> asyncpg.Record:
    async with app.state.services.pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def _attempts(app, job_id: int) -> list[tuple[int, str]]:
    async with app.state.services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT attempt, outcome FROM job_attempts WHERE job_id = $1 ORDER BY id", job_id)
    return [(r["attempt"], r["outcome"]) for r in rows]


async def test_enqueue_runs_once_and_dedupes(quiet_app, tenant, recorder):
    app, _ = quiet_app
    services = app.state.services
    first = await _enqueue(app, tenant.id, {"n": 1}, dedupe_key="k1")
    assert first is not None
    assert await _enqueue(app, tenant.id, {"n": 2}, dedupe_key="k1") is None
    assert await jobs.run_due(services) == 1
    assert await jobs.run_due(services) == 0
    assert recorder.calls == [(first, 1, {"n": 1})]
    assert (await _job(app, first))["state"] == "succeeded"
    assert await _attempts(app, first) == [(1, "succeeded")]


async def test_a_rolled_back_transaction_enqueues_nothing(quiet_app, tenant, recorder):
    app, _ = quiet_app
    async with app.state.services.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await jobs.enqueue(conn, tenant.id, KIND, {"n": 1})
                raise RuntimeError("the change failed")
    assert await jobs.run_due(app.state.services) == 0
    assert recorder.calls == []


async def test_retry_schedule_0_5m_30m_2h_24h_then_failed(quiet_app, tenant, recorder, clock):
    app, _ = quiet_app
    services = app.state.services
    recorder.failures = 99
    job_id = await _enqueue(app, tenant.id, {"n": 1})
    assert await jobs.run_due(services) == 1  # attempt 1, immediately
    for attempt, delay in zip(range(2, 6), (300, 1800, 7200, 86400), strict=True):
        clock.advance(delay - 1)
        assert await jobs.run_due(services) == 0, f"attempt {attempt} ran early"
        clock.advance(1)
        assert await jobs.run_due(services) == 1, f"attempt {attempt} did not run on time"
    clock.advance(10 * 86400)
    assert await jobs.run_due(services) == 0
    row = await _job(app, job_id)
    assert row["state"] == "failed" and row["attempts"] == 5 and "receiver said no" in row["last_error"]
    assert [a for _, a, _ in recorder.calls] == [1, 2, 3, 4, 5]
    assert await _attempts(app, job_id) == [(n, "failed") for n in range(1, 6)]


async def test_success_after_failures_stops_retrying(quiet_app, tenant, recorder, clock):
    app, _ = quiet_app
    recorder.failures = 2
    job_id = await _enqueue(app, tenant.id, {})
    await jobs.run_due(app.state.services)
    clock.advance(300)
    await jobs.run_due(app.state.services)
    clock.advance(1800)
    await jobs.run_due(app.state.services)
    assert await _attempts(app, job_id) == [(1, "failed"), (2, "failed"), (3, "succeeded")]
    clock.advance(86400 * 3)
    assert await jobs.run_due(app.state.services) == 0


async def test_a_crash_between_attempt_and_outcome_is_retried_after_the_lease(quiet_app, tenant, recorder, clock):
    app, _ = quiet_app
    services = app.state.services
    job_id = await _enqueue(app, tenant.id, {"n": 1})
    claimed = await jobs.claim(services, 10)  # the attempt is recorded ... and the process "dies" here
    assert [j.id for j in claimed] == [job_id]
    assert await _attempts(app, job_id) == [(1, "running")]
    assert await jobs.run_due(services) == 0  # still leased to the dead worker
    clock.advance(services.settings.job_lease_seconds)
    assert await jobs.run_due(services) == 1
    assert await _attempts(app, job_id) == [(1, "interrupted"), (2, "succeeded")]
    assert recorder.calls == [(job_id, 2, {"n": 1})]


async def test_run_at_and_defer(quiet_app, tenant, clock):
    app, _ = quiet_app
    seen: list[int] = []

    async def busy_once(services, job):
        seen.append(job.attempt)
        if len(seen) == 1:
            raise jobs.Defer(60, "resource busy")

    jobs.register("test.defer", busy_once)
    try:
        async with app.state.services.pool.acquire() as conn:
            job_id = await jobs.enqueue(conn, tenant.id, "test.defer", {}, run_at=clock.utcnow() + timedelta(seconds=30))
        assert await jobs.run_due(app.state.services) == 0
        clock.advance(30)
        assert await jobs.run_due(app.state.services) == 1
        clock.advance(59)
        assert await jobs.run_due(app.state.services) == 0
        clock.advance(1)
        assert await jobs.run_due(app.state.services) == 1
        assert seen == [1, 1]  # a deferral does not use up an attempt
        assert await _attempts(app, job_id) == [(1, "deferred"), (1, "succeeded")]
    finally:
        jobs._HANDLERS.pop("test.defer", None)


async def test_permanent_failure_is_not_retried(quiet_app, tenant, clock):
    app, _ = quiet_app

    async def hopeless(services, job):
        raise jobs.Permanent("can never work")

    jobs.register("test.hopeless", hopeless)
    try:
        async with app.state.services.pool.acquire() as conn:
            job_id = await jobs.enqueue(conn, tenant.id, "test.hopeless", {})
        await jobs.run_due(app.state.services)
        clock.advance(86400 * 2)
        assert await jobs.run_due(app.state.services) == 0
        assert (await _job(app, job_id))["state"] == "failed"
    finally:
        jobs._HANDLERS.pop("test.hopeless", None)


async def test_two_workers_never_run_a_job_twice(quiet_app, tenant, recorder, settings, clock):
    """Two pools (as two processes would have) drain 200 jobs concurrently: each runs once."""
    app, _ = quiet_app
    services = app.state.services
    async with services.pool.acquire() as conn:
        for n in range(200):
            await jobs.enqueue(conn, tenant.id, KIND, {"n": n})
    other_pool = await db.create_pool(settings.database_url, min_size=1, max_size=5)
    try:
        other = replace(services, pool=other_pool)
        counts = await asyncio.gather(jobs.run_due(services, limit=7), jobs.run_due(other, limit=7))
    finally:
        await other_pool.close()
    assert sum(counts) == 200 and all(counts)
    assert sorted(p["n"] for _, _, p in recorder.calls) == list(range(200))


async def test_the_worker_wakes_on_notify(settings, tenant, recorder):
    """With a real clock and the background worker, a job starts well within a second."""
    from quota_gateway.clock import Clock

    async with running_app(replace(settings, job_poll_interval=30.0), Clock()) as (app, _):
        await asyncio.sleep(0.2)  # the worker is idle, waiting for the 30 s poll or a NOTIFY
        started = time.monotonic()
        await _enqueue(app, tenant.id, {"n": 1})
        await asyncio.wait_for(recorder.arrived.wait(), 1.0)
        assert time.monotonic() - started < 1.0


async def test_jobs_are_tenant_scoped(quiet_app, tenant, other_tenant, recorder):
    app, _ = quiet_app
    a = await _enqueue(app, tenant.id, {"who": "acme"}, dedupe_key="same")
    b = await _enqueue(app, other_tenant.id, {"who": "globex"}, dedupe_key="same")
    assert a is not None and b is not None  # dedupe keys are per tenant
    await jobs.run_due(app.state.services)
    async with app.state.services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT tenant_id::text AS t, payload FROM jobs ORDER BY id")
    assert [(r["t"], r["payload"]["who"]) for r in rows] == [(tenant.id, "acme"), (other_tenant.id, "globex")]

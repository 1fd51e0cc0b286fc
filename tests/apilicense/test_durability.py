"""Exactness under concurrency, and usage that survives crashes, outages and retried flushes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis as redis_sync

from conftest import TEST_MASTER_KEY, db_connection, make_api_key, make_product, running_app
from quota_gateway.apilicense.keyspace import DONE
from quota_gateway.config import Settings
from quota_gateway.embedded import PostgresServer, free_port
from quota_gateway.scripts import ScriptRunner

VALIDATE = "/api/apilicense/validate"


def _lifetime_total(r, entry) -> int:
    """The lifetime total in a key's packed counters (field c of its hash, the first element)."""
    return r.eval("local c = redis.call('HGET', KEYS[1], 'c') return c and cmsgpack.unpack(c) or 0", 1, entry)


async def _pg_usage(database_url: str) -> tuple[int, int]:
    async with db_connection(database_url) as conn:
        total = await conn.fetchval("SELECT coalesce(sum(used_total), 0) FROM api_licenses")
        daily = await conn.fetchval("SELECT coalesce(sum(units), 0) FROM api_usage_daily")
    return total, daily


def _flusher(app):
    return app.state.services.usage_flusher


@pytest.fixture
async def flusher(app):
    """The app's usage flusher with its background loop stopped: these tests flush by hand and
    count what each flush wrote, which a background cycle running in between would take."""
    flusher = _flusher(app)
    await flusher.stop()
    return flusher


async def test_500_concurrent_consumes_against_quota_100(flusher, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=100)
    results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
                                     for _ in range(500)))
    codes = [r.status_code for r in results]
    assert codes.count(200) == 100 and codes.count(429) == 400
    await flusher.flush(range(1024))
    assert await _pg_usage(settings.database_url) == (100, 100)


async def test_redis_py_transport_is_exact_too(tenant, settings):
    """QG_REDIS_TRANSPORT=redis-py (the transport the benchmark compares against) gives the same answers."""
    async with running_app(settings.with_(redis_transport="redis-py")) as (app, client):
        product = await make_product(client, tenant.headers, features=("api:rate:hour:60",))
        key = await make_api_key(client, tenant.headers, product, maxApiCalls=50)
        results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
                                         for _ in range(200)))
        assert [r.status_code for r in results].count(200) == 50
        assert results[0].json()["quota"]["limit"] == 50
        await _flusher(app).flush(range(1024))
    assert await _pg_usage(settings.database_url) == (50, 50)


async def test_unknown_redis_transport_is_refused_at_start(settings):
    with pytest.raises(ValueError, match="QG_REDIS_TRANSPORT"):
        async with running_app(settings.with_(redis_transport="carrier-pigeon")):
            pass


@pytest.mark.parametrize("period", ["minute", "hour", "day", "month"])
async def test_concurrent_consumes_per_window_are_exact(flusher, client, tenant, settings, period):
    product = await make_product(client, tenant.headers, features=(f"api:rate:{period}:37",))
    key = await make_api_key(client, tenant.headers, product)
    results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
                                     for _ in range(150)))
    assert [r.status_code for r in results].count(200) == 37
    assert {r.json()["errorCode"] for r in results if r.status_code == 429} == {f"rate_limit_{period}"}
    await flusher.flush(range(1024))
    assert await _pg_usage(settings.database_url) == (37, 37)


async def test_concurrent_mixed_units_never_exceed_and_match_postgres(flusher, client, tenant, settings):
    product = await make_product(client, tenant.headers, features=("api:units:hour:500",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=450)
    rng = random.Random(5)
    units = [rng.randint(1, 9) for _ in range(300)]
    results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key, "units": u}, headers=tenant.headers)
                                     for u in units))
    granted = sum(u for u, r in zip(units, results, strict=True) if r.status_code == 200)
    assert 450 - 9 < granted <= 450
    final = (await client.get(f"/api/apilicense/validate/{key}", headers=tenant.headers)).json()
    assert final["quota"]["used"] == granted
    await flusher.flush(range(1024))
    assert await _pg_usage(settings.database_url) == (granted, granted)


async def test_flush_is_idempotent_and_feeds_usage_history(flusher, client, tenant, settings, clock):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    for units in (3, 4):
        await client.post(VALIDATE, json={"apiKey": key, "units": units}, headers=tenant.headers)
    clock.advance(86400)
    await client.post(VALIDATE, json={"apiKey": key, "units": 5}, headers=tenant.headers)
    assert await flusher.flush(range(1024)) == 12
    assert await flusher.flush(range(1024)) == 0
    usage = (await client.get(f"/api/apilicense/{key}/usage", headers=tenant.headers)).json()
    assert [h["units"] for h in usage["history"]] == [7, 5]
    assert usage["quota"]["used"] == 12


async def test_a_flush_batch_costs_one_redis_write_per_script(flusher, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    keys = [await make_api_key(client, tenant.headers, product) for _ in range(20)]
    for _ in range(2):  # the first flush may find Redis without the scripts loaded
        writes = flusher.runner.writes
        for key in keys:
            await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
        assert await flusher.flush(range(1024)) == 20
    # 4 batches of 256 buckets: a write of take scripts each, and one of done scripts where any was
    # taken (one write per call would be hundreds: a task each, FLUSH_AT commands per write)
    assert flusher.runner.writes - writes <= 8 + 20  # (the 20 validations write too)
    assert await _pg_usage(settings.database_url) == (40, 40)


class _DiesAfterCommit(ScriptRunner):
    """Transport whose connection drops right after Postgres committed (before the done script)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def run(self, script, keys, args):
        if script is DONE:
            raise ConnectionError("connection lost")
        return await self.inner.run(script, keys, args)


async def test_retried_flush_after_partial_failure_counts_once(flusher, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    for _ in range(6):
        await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    real_runner = flusher.runner
    flusher.runner = _DiesAfterCommit(real_runner)
    await flusher.flush(range(1024))  # applied in Postgres, flushing key left behind in Redis
    assert await _pg_usage(settings.database_url) == (6, 6)
    await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)  # lands in a new pending hash
    # the counter is lost meanwhile (eviction, restart): the rebuild must not count the 6 twice
    r = redis_sync.Redis.from_url(settings.redis_url)
    for entry in r.scan_iter("qg:*:k:*"):
        r.hdel(entry, "c")
    flusher.runner = real_runner
    body = (await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)).json()
    assert body["quota"]["used"] == 8
    # one call: the unfinished flush (a no-op: it was applied), then what was pending behind it
    assert await flusher.flush(range(1024)) == 2
    assert await _pg_usage(settings.database_url) == (8, 8)
    assert flusher.touched() == []


async def test_counter_rebuilt_from_postgres_plus_pending_after_loss(flusher, client, tenant, settings):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=100)
    await client.post(VALIDATE, json={"apiKey": key, "units": 10}, headers=tenant.headers)
    await flusher.flush(range(1024))
    await client.post(VALIDATE, json={"apiKey": key, "units": 5}, headers=tenant.headers)  # pending only
    r = redis_sync.Redis.from_url(settings.redis_url)
    for entry in r.scan_iter("qg:*:k:*"):
        r.hdel(entry, "c", "m")
    body = (await client.post(VALIDATE, json={"apiKey": key, "units": 1}, headers=tenant.headers)).json()
    assert body["quota"]["used"] == 16
    # Redis losing everything (no persistence): what was flushed survives; the bound on loss is
    # what had not been flushed yet (at most one flush interval of usage).
    await flusher.flush(range(1024))
    r.flushall()
    body = (await client.post(VALIDATE, json={"apiKey": key, "units": 1}, headers=tenant.headers)).json()
    assert body["quota"]["used"] == 17
    await flusher.flush(range(1024))
    assert await _pg_usage(settings.database_url) == (17, 17)


@pytest.mark.slow
async def test_postgres_outage_keeps_validating_and_writes_backlog_later(tmp_path, redis_server, tenant, clock):
    pg = PostgresServer(tmp_path / "pg").start()
    try:
        settings = Settings(redis_url=redis_server.url, database_url=pg.url, master_key=TEST_MASTER_KEY,
                            flush_interval=3600)
        from conftest import make_tenant

        own = await make_tenant_on(pg.url, make_tenant)
        async with running_app(settings, clock) as (app, client):
            product = await make_product(client, own.headers)
            key = await make_api_key(client, own.headers, product, maxApiCalls=1000)
            for _ in range(5):
                assert (await client.post(VALIDATE, json={"apiKey": key}, headers=own.headers)).status_code == 200
            pg.stop()
            for _ in range(7):  # token and license metadata are cached: Postgres is not needed
                assert (await client.post(VALIDATE, json={"apiKey": key}, headers=own.headers)).status_code == 200
            flusher = _flusher(app)
            await flusher.flush(range(1024))
            assert flusher.dirty  # the failed bucket stays dirty
            pg.start()
            for _ in range(20):
                await flusher.flush(range(1024))
                total, _ = await _pg_usage(pg.url)
                if total == 12:
                    break
                await asyncio.sleep(0.2)
            assert await _pg_usage(pg.url) == (12, 12)
    finally:
        pg.stop()


async def make_tenant_on(database_url, make_tenant):
    from quota_gateway import db

    await db.migrate_url(database_url)
    return await make_tenant(database_url, "outage")


def _gateway_process(settings: Settings, port: int) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "QG_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "quota_gateway.app:create_app_from_env",
                             "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


@pytest.mark.slow
async def test_kill_9_under_load_loses_and_double_counts_nothing(settings, tenant, client):
    product = await make_product(client, tenant.headers)
    keys = [await make_api_key(client, tenant.headers, product) for _ in range(20)]
    settings = settings.with_(flush_interval=0.05)
    port = free_port()
    proc = _gateway_process(settings, port)
    successes = 0
    try:
        await asyncio.to_thread(_wait_ready, port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=tenant.headers, timeout=5) as http:
            answered = 0

            async def worker(n: int) -> int:
                nonlocal answered
                ok = 0
                for i in range(400):
                    try:
                        r = await http.post(VALIDATE, json={"apiKey": keys[(n + i) % len(keys)]})
                    except httpx.HTTPError:
                        return ok  # the process is gone: an unanswered request may or may not have counted
                    if r.status_code == 200:
                        ok += 1
                        answered += 1
                return ok

            workers = [asyncio.create_task(worker(n)) for n in range(16)]
            # Kill once the load is well under way, however busy the machine (not after a fixed time).
            for _ in range(300):
                if answered >= 100:
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            successes = sum(await asyncio.gather(*workers))
    finally:
        proc.kill()
        proc.wait()
    assert successes > 50
    # Redis is the arbiter: every counted consume is in a counter; a new gateway's sweep flushes
    # whatever the dead one left pending or half-flushed.
    r = redis_sync.Redis.from_url(settings.redis_url)
    redis_total = sum(_lifetime_total(r, k) for k in r.scan_iter("qg:*:k:*"))
    assert successes <= redis_total <= successes + 16  # at most one in-flight request per worker unanswered
    async with running_app(settings) as (app, _):
        await _flusher(app).flush(range(1024))
    total, daily = await _pg_usage(settings.database_url)
    assert total == daily == redis_total

"""Webhook delivery by real gateway processes (uvicorn): two of them draining one outbox without
sending any event twice, and a worker killed with SIGKILL in the middle of a delivery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import orjson
import pytest

from conftest import db_connection, running_app
from quota_gateway.config import Settings
from quota_gateway.embedded import free_port
from quota_gateway.events import emit

pytestmark = pytest.mark.slow


def _gateway(settings: Settings, port: int) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), "QG_LOG_LEVEL": "warning"}
    return subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "quota_gateway.app:create_app_from_env",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _ready(port: int) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("gateway did not become ready")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _subscribe(settings: Settings, tenant, receiver) -> int:
    async with running_app(settings.with_(events_worker=False)) as (_, client):
        r = await client.post("/api/webhooks", json={"url": receiver.url, "events": ["*"]}, headers=tenant.headers)
        assert r.status_code == 201, r.text
        receiver.secrets.append(r.json()["secret"])
        return r.json()["id"]


async def _emit_many(database_url: str, tenant_id: str, count: int) -> None:
    async with db_connection(database_url) as conn:
        await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                                  schema="pg_catalog")
        for n in range(count):
            await emit(conn, tenant_id, "license.created", {"licenseId": n})


async def test_two_gateway_processes_deliver_each_event_once(settings, tenant, webhook_receiver):
    await _subscribe(settings, tenant, webhook_receiver)
    webhook_receiver.delay = 0.02
    procs_settings = settings.with_(job_concurrency=4)
    ports = [free_port(), free_port()]
    procs = [_gateway(procs_settings, port) for port in ports]
    try:
        await asyncio.gather(*(_ready(port) for port in ports))
        await _emit_many(settings.database_url, tenant.id, 60)
        await webhook_receiver.wait_for(60, timeout=20)
        await asyncio.sleep(0.5)  # anything doubled would arrive now
    finally:
        for proc in procs:
            _stop(proc)
    ids = Counter(a.headers["webhook-id"] for a in webhook_receiver.arrivals)
    assert len(ids) == 60 and set(ids.values()) == {1}
    assert all(a.exiso_ok for a in webhook_receiver.arrivals)
    assert webhook_receiver.max_in_flight_per_event == 1


async def test_kill_9_mid_delivery_still_delivers_and_logs_it(settings, tenant, webhook_receiver):
    endpoint_id = await _subscribe(settings, tenant, webhook_receiver)
    # A short lease so the survivor takes over quickly; the receiver stalls the first request.
    procs_settings = settings.with_(job_lease_seconds=3.0, webhook_timeout=2.0, job_poll_interval=0.2)
    victim_port, survivor_port = free_port(), free_port()
    victim = _gateway(procs_settings, victim_port)
    survivor: subprocess.Popen | None = None
    try:
        await _ready(victim_port)
        webhook_receiver.delay = 2.5
        await _emit_many(settings.database_url, tenant.id, 1)
        deadline = time.monotonic() + 10
        while webhook_receiver.requests_started == 0:
            assert time.monotonic() < deadline, "the victim never started the delivery"
            await asyncio.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)  # mid-request: the attempt is recorded, its outcome never
        victim.wait()
        webhook_receiver.delay = 0.0
        survivor = _gateway(procs_settings, survivor_port)
        await _ready(survivor_port)
        await webhook_receiver.wait_for(2, timeout=15)
    finally:
        _stop(victim)
        if survivor is not None:
            _stop(survivor)
    async with db_connection(settings.database_url) as conn:
        rows = await conn.fetch("SELECT a.attempt, a.outcome FROM webhook_attempts a JOIN webhook_deliveries d "
                                "ON d.id = a.delivery_id WHERE d.endpoint_id = $1 ORDER BY a.id", endpoint_id)
        state = await conn.fetchval("SELECT state FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "interrupted"), (2, "succeeded")]
    assert state == "succeeded"
    assert len({a.headers["webhook-id"] for a in webhook_receiver.arrivals}) == 1  # one event, same id

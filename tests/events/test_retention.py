"""Retention on the injectable clock: finished jobs, settled webhook deliveries (and their log)
and fanned-out events go after QG_EVENTS_RETENTION_DAYS; work still pending stays; one process
per interval does the run. And the delivery log's filters."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import asyncpg
import pytest

from conftest import db_connection, running_app
from quota_gateway.events import emit, jobs, retention

DAY = 86400


@pytest.fixture
async def quiet(settings, clock):
    async with running_app(replace(settings, events_worker=False, retention_interval=3600.0), clock) as (app, client):
        yield app, client


async def _endpoint(client, tenant, receiver, events=("*",)) -> dict:
    r = await client.post("/api/webhooks", json={"url": receiver.url, "events": list(events)}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    receiver.secrets.append(r.json()["secret"])
    return r.json()


async def _emit(app, tenant_id: str, event_type: str = "license.created") -> int:
    async with app.state.services.pool.acquire() as conn:
        return await emit(conn, tenant_id, event_type, {"licenseId": 1}, at=app.state.services.clock.utcnow())


async def _counts(database_url: str) -> dict[str, int]:
    async with db_connection(database_url) as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in ("events", "jobs", "job_attempts", "webhook_deliveries", "webhook_attempts")}


async def test_old_finished_work_is_deleted_and_pending_work_kept(quiet, tenant, clock, settings, webhook_receiver):
    app, client = quiet
    services = app.state.services
    endpoint = await _endpoint(client, tenant, webhook_receiver)
    await _emit(app, tenant.id)                      # delivered at once
    await jobs.run_due(services)
    webhook_receiver.fail_next(1)
    failing = await _emit(app, tenant.id)            # fails once: pending, retried in 5 min
    await jobs.run_due(services)
    assert len(webhook_receiver.arrivals) == 2
    assert (await retention.run(services)) == 0      # nothing is old yet

    clock.advance(31 * DAY)
    # Meanwhile: an event not yet fanned out, and a young delivered one.
    await _emit(app, tenant.id, "license.revoked")
    before = await _counts(settings.database_url)
    deleted = await retention.run(services)
    after = await _counts(settings.database_url)
    # Gone: the delivered event with its succeeded delivery, attempt log and job.
    assert deleted == 3
    assert after["events"] == before["events"] - 1
    assert after["webhook_deliveries"] == before["webhook_deliveries"] - 1
    assert after["jobs"] == before["jobs"] - 1
    async with db_connection(settings.database_url) as conn:
        kept = await conn.fetch("SELECT d.state, d.event_id FROM webhook_deliveries d")
        assert [(r["state"], r["event_id"]) for r in kept] == [("pending", failing)]
        assert await conn.fetchval("SELECT count(*) FROM events WHERE delivered_at IS NULL") == 1
        last = await conn.fetchval("SELECT last_result::text FROM maintenance_runs WHERE name = $1", retention.TASK)
        assert json.loads(last) == {"jobs": 1, "webhookDeliveries": 1, "events": 1, "moreLeft": False}

    # The retried delivery settles; another 31 days later it goes too, with its event and job.
    await jobs.run_due(services)
    assert (await _log(client, tenant, endpoint["id"]))[0]["state"] == "succeeded"
    clock.advance(31 * DAY)
    await retention.run(services)
    assert await _counts(settings.database_url) == {"events": 0, "jobs": 0, "job_attempts": 0,
                                                     "webhook_deliveries": 0, "webhook_attempts": 0}


async def test_one_process_per_interval_runs_retention(settings, clock, tenant):
    async with running_app(replace(settings, events_worker=False), clock) as (one, _), \
            running_app(replace(settings, events_worker=False), clock) as (two, _):
        services = [one.state.services, two.state.services]
        for _ in range(3):
            await _emit(one, tenant.id)
        await jobs.run_due(services[0])  # fans them out (no endpoints, no subscribers)
        clock.advance(31 * DAY)
        conns = [await asyncpg.connect(settings.database_url) for _ in range(4)]
        try:
            claims = await asyncio.gather(*(retention.claim(conn, clock.utcnow(), 3600) for conn in conns))
            assert sorted(claims) == [False, False, False, True]
            await conns[0].execute("UPDATE maintenance_runs SET next_run_at = '-infinity'")
        finally:
            for conn in conns:
                await conn.close()
        results = await asyncio.gather(*(retention.run(s) for s in services * 2))
        assert sorted(results) == [0, 0, 0, 3]
        clock.advance(1800)
        assert await retention.run(services[1]) == 0    # not due for another half hour
        await _emit(one, tenant.id)
        await jobs.run_due(services[0])
        clock.advance(31 * DAY)
        assert await retention.run(services[1]) == 1


# --- the delivery log's filters --------------------------------------------------------------------

async def _log(client, tenant, endpoint_id: int, **params) -> list[dict]:
    r = await client.get(f"/api/webhooks/{endpoint_id}/deliveries", params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


async def test_delivery_log_filters_by_status_and_event_type(quiet, tenant, other_tenant, webhook_receiver):
    app, client = quiet
    endpoint = await _endpoint(client, tenant, webhook_receiver)
    await _emit(app, tenant.id, "license.created")
    await _emit(app, tenant.id, "license.revoked")
    await jobs.run_due(app.state.services)
    webhook_receiver.fail_next(1)
    await _emit(app, tenant.id, "license.created")
    await jobs.run_due(app.state.services)           # fails once: pending

    every = await _log(client, tenant, endpoint["id"])
    assert [(d["eventType"], d["state"]) for d in every] == [
        ("license.created", "pending"), ("license.revoked", "succeeded"), ("license.created", "succeeded")]
    assert [d["eventType"] for d in await _log(client, tenant, endpoint["id"], status="succeeded")] == [
        "license.revoked", "license.created"]
    pending = await _log(client, tenant, endpoint["id"], status="pending")
    assert [d["state"] for d in pending] == ["pending"] and pending[0]["log"][0]["statusCode"] == 500
    created = await _log(client, tenant, endpoint["id"], eventType="license.created")
    assert [d["id"] for d in created] == [every[0]["id"], every[2]["id"]]
    both = await _log(client, tenant, endpoint["id"], eventType="license.created", status="succeeded")
    assert [d["id"] for d in both] == [every[2]["id"]]
    assert await _log(client, tenant, endpoint["id"], status="failed") == []
    page = await _log(client, tenant, endpoint["id"], eventType="license.created", limit=1)
    assert [d["id"] for d in page] == [every[0]["id"]]
    rest = await _log(client, tenant, endpoint["id"], eventType="license.created", before=page[0]["id"])
    assert [d["id"] for d in rest] == [every[2]["id"]]
    ping = await client.post(f"/api/webhooks/{endpoint['id']}/ping", headers=tenant.headers)
    assert ping.json()["delivered"] is True
    assert [d["eventType"] for d in await _log(client, tenant, endpoint["id"], eventType="webhook.ping")] == [
        "webhook.ping"]

    for params, field in (({"status": "lost"}, "status"), ({"eventType": "license.exploded"}, "eventType")):
        r = await client.get(f"/api/webhooks/{endpoint['id']}/deliveries", params=params, headers=tenant.headers)
        assert r.status_code == 400 and r.json()["error"] == "invalid_field" and field in r.json()["message"]
    r = await client.get(f"/api/webhooks/{endpoint['id']}/deliveries", params={"status": "succeeded"},
                         headers=other_tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "webhook_not_found"

"""The project's own events, raised by the write-behind loops (never by the request path):
`lease.*` from the lease history drainer, `api.quota.near_limit` / `api.quota.exhausted` from
the usage flusher; each once, whatever flushes or drains run concurrently or again, delivered to
a real webhook receiver, and scoped to its tenant."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from conftest import db_connection, make_api_key, make_product, running_app
from quota_gateway.apilicense import writebehind
from quota_gateway.events import jobs
from quota_gateway.leases import history

VALIDATE = "/api/apilicense/validate"


@pytest.fixture
async def quiet(settings, clock):
    """The app without its job worker (the test runs `jobs.run_due`); write-behind loops still run."""
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def _endpoint(client, tenant, receiver, events) -> dict:
    r = await client.post("/api/webhooks", json={"url": receiver.url, "events": list(events)},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    receiver.secrets.append(r.json()["secret"])
    return r.json()


async def _events(database_url: str, tenant_id: str, prefix: str) -> list[dict]:
    async with db_connection(database_url) as conn:
        rows = await conn.fetch("SELECT type, data::text AS data FROM events WHERE tenant_id = $1 AND type LIKE $2 "
                                "ORDER BY id", tenant_id, prefix + "%")
    import json
    return [{"type": r["type"], **json.loads(r["data"])} for r in rows]


# --- quota -----------------------------------------------------------------------------------------

async def _consume(client, tenant, key: str, units: int) -> None:
    r = await client.post(VALIDATE, json={"apiKey": key, "units": units}, headers=tenant.headers)
    assert r.status_code == 200, r.text


async def test_quota_crossings_raise_events_once_and_reach_the_receiver(quiet, tenant, other_tenant, settings,
                                                                         webhook_receiver):
    app, client = quiet
    flusher = app.state.services.usage_flusher
    await _endpoint(client, tenant, webhook_receiver, ["api.quota.near_limit", "api.quota.exhausted"])
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    unlimited = await make_api_key(client, tenant.headers, product)

    await _consume(client, tenant, key, 7)
    await _consume(client, tenant, unlimited, 50)
    await flusher.flush(range(1024))
    assert await _events(settings.database_url, tenant.id, "api.quota.") == []

    await _consume(client, tenant, key, 1)  # 8 of 10: 80 %
    await asyncio.gather(flusher.flush(range(1024)), flusher.flush(range(1024)))
    await _consume(client, tenant, key, 1)  # 90 %: no new crossing
    await flusher.flush(range(1024))
    raised = await _events(settings.database_url, tenant.id, "api.quota.")
    assert [e["type"] for e in raised] == ["api.quota.near_limit"]
    assert raised[0]["used"] == 8 and raised[0]["maxApiCalls"] == 10 and raised[0]["percentUsed"] == 80
    assert raised[0]["apiKey"].startswith("qgk_") and raised[0]["apiKey"] != key  # masked
    assert raised[0]["email"] == "dev@example.com" and raised[0]["clientIdentifier"] == "c-1"

    await _consume(client, tenant, key, 1)  # 10 of 10
    await flusher.flush(range(1024))
    raised = await _events(settings.database_url, tenant.id, "api.quota.")
    assert [e["type"] for e in raised] == ["api.quota.near_limit", "api.quota.exhausted"]
    assert raised[1]["used"] == 10 and raised[1]["percentUsed"] == 100

    # A lifetime reset re-arms both; one flush crossing both raises both, near limit first.
    r = await client.post(f"/api/apilicense/{key}/reset", params={"periodType": "lifetime"}, headers=tenant.headers)
    assert r.status_code == 200
    await _consume(client, tenant, key, 10)
    await flusher.flush(range(1024))
    raised = await _events(settings.database_url, tenant.id, "api.quota.")
    assert [e["type"] for e in raised] == ["api.quota.near_limit", "api.quota.exhausted"] * 2
    assert await _events(settings.database_url, other_tenant.id, "api.") == []

    await jobs.run_due(app.state.services)
    arrivals = await webhook_receiver.wait_for(4)
    # Deliveries run concurrently: arrival order is not event order.
    assert sorted(a.event_type for a in arrivals) == ["api.quota.exhausted"] * 2 + ["api.quota.near_limit"] * 2
    assert all(a.exiso_ok for a in arrivals)
    body = next(a.json for a in arrivals if a.event_type == "api.quota.near_limit")
    assert body["tenantId"] == tenant.id and body["data"]["apiLicenseId"] == raised[0]["apiLicenseId"]


async def test_a_crossing_seen_twice_is_announced_once(quiet, tenant, settings):
    """A retried flush that found the same crossing again (or two flushers that both did) claims
    the notice row first, so the event is written once."""
    app, client = quiet
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=10)
    await _consume(client, tenant, key, 9)
    await app.state.services.usage_flusher.flush(range(1024))
    async with db_connection(settings.database_url) as conn:
        crossing = await conn.fetch(
            "SELECT id, tenant_id, product_id, key_hint, email, client_identifier, max_api_calls, used_offset, "
            "used_total - used_offset AS used, 0::bigint AS before FROM api_licenses WHERE tenant_id = $1", tenant.id)
        async with conn.transaction():
            await writebehind._raise_quota_events(conn, crossing, app.state.services.clock.utcnow())
        notices = await conn.fetch("SELECT kind FROM api_quota_notices")
    assert [e["type"] for e in await _events(settings.database_url, tenant.id, "api.quota.")] == [
        "api.quota.near_limit"]
    assert [n["kind"] for n in notices] == ["near_limit"]


async def test_two_gateways_flushing_at_once_raise_each_crossing_once(settings, clock, tenant):
    async with running_app(replace(settings, events_worker=False), clock) as (one, client), \
            running_app(replace(settings, events_worker=False), clock) as (two, _):
        product = await make_product(client, tenant.headers)
        keys = [await make_api_key(client, tenant.headers, product, maxApiCalls=5) for _ in range(20)]
        for key in keys:
            await _consume(client, tenant, key, 5)
        await asyncio.gather(*(app.state.services.usage_flusher.flush(range(1024))
                               for app in (one, two, one, two)))
    raised = await _events(settings.database_url, tenant.id, "api.quota.")
    assert sorted(e["type"] for e in raised) == ["api.quota.exhausted"] * 20 + ["api.quota.near_limit"] * 20
    assert len({(e["type"], e["apiLicenseId"]) for e in raised}) == 40


# --- leases ----------------------------------------------------------------------------------------

async def _floating_key(client, tenant) -> str:
    product = await make_product(client, tenant.headers, name="CAD", features=("render",))
    customer = (await client.post("/api/customers", json={"name": "Initech"}, headers=tenant.headers)).json()
    r = await client.post("/api/floating/keys", json={"customerId": customer["id"], "leaseLimit": 2,
                                                      "products": [{"productId": product, "features": ["render"]}]},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def _lease(client, tenant, path: str, **body) -> dict:
    r = await client.post(f"/licensing/{tenant.id}/lease/{path}", json=body)
    assert r.status_code == 200 and r.json().get("success", True), r.text
    return r.json()


def _lid(lease: str) -> str:
    import base64
    import json
    payload = lease.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["lid"]


async def test_lease_lifecycle_raises_events_from_the_history_drain(quiet, tenant, other_tenant, settings, clock,
                                                                   webhook_receiver):
    app, client = quiet
    services = app.state.services
    await _endpoint(client, tenant, webhook_receiver, ["lease.obtained", "lease.renewed", "lease.released",
                                                       "lease.expired"])
    key = await _floating_key(client, tenant)
    first = (await _lease(client, tenant, "obtain", key=key, clientId="ws-1", expiry=60))["lease"]
    renewed = (await _lease(client, tenant, "renew", lease=first))["lease"]
    await _lease(client, tenant, "release", lease=renewed)
    short = (await _lease(client, tenant, "obtain", key=key, clientId="ws-2", expiry=30))["lease"]
    clock.advance(31)
    # Nobody obtains from this pool again: the drainer's sweep ends the lease and logs it.
    await services.lease_history.drain(await services.lease_history.everything())
    await services.lease_history.drain(await services.lease_history.everything())  # nothing twice

    raised = await _events(settings.database_url, tenant.id, "lease.")
    assert [e["type"] for e in raised] == ["lease.obtained", "lease.renewed", "lease.released", "lease.obtained",
                                           "lease.expired"]
    obtained, renew, release, second, expired = raised
    assert obtained["leaseId"] == _lid(first) and obtained["clientId"] == "ws-1" and obtained["expiresAt"]
    assert obtained["key"] and obtained["key"] != key  # the masked hint, never the key
    assert renew["leaseId"] == _lid(renewed) and renew["previousLeaseId"] == _lid(first)
    assert renew["clientId"] == "ws-1" and release["clientId"] == "ws-1" and release["leaseId"] == _lid(renewed)
    assert second["clientId"] == "ws-2"
    assert expired["leaseId"] == _lid(short) and expired["clientId"] == "ws-2"
    assert expired["expiresAt"] == second["expiresAt"]
    assert all(e["floatingKeyId"] == obtained["floatingKeyId"] and e["customerId"] for e in raised)
    assert await _events(settings.database_url, other_tenant.id, "lease.") == []

    await jobs.run_due(services)
    arrivals = await webhook_receiver.wait_for(5)
    assert sorted(a.event_type for a in arrivals) == sorted(e["type"] for e in raised)
    assert all(a.exiso_ok for a in arrivals)


async def test_a_redrained_history_entry_is_announced_once(quiet, tenant, settings):
    """A drainer killed after its commit and before trimming the stream: the next drain inserts
    nothing and raises nothing."""
    app, client = quiet
    services = app.state.services
    await services.lease_history.stop()  # this test drains by hand
    key = await _floating_key(client, tenant)
    await _lease(client, tenant, "obtain", key=key, clientId="ws-1")
    [prefix] = list(services.lease_pools.dirty)
    read = await services.lease_pools.read_history(prefix, 100)
    for _ in range(2):
        async with services.pool.acquire() as conn, conn.transaction():
            await history._write(conn, read.key_id, read.tenant_id, read.entries)
    assert [e["type"] for e in await _events(settings.database_url, tenant.id, "lease.")] == ["lease.obtained"]

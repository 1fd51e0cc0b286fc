"""Floating licenses: pool accounting under concurrency, expiry without a sweeper, renew/release,
signed leases verifiable offline, tenant isolation, history in Postgres, bad input."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import db_connection, make_product


async def _floating_key(client, tenant, limit: int = 10, **extra) -> str:
    product = await make_product(client, tenant.headers, name=f"CAD {limit}", features=("render",))
    customer = (await client.post("/api/customers", json={"name": "Initech", "contact": "it@initech.example"},
                                  headers=tenant.headers)).json()
    r = await client.post("/api/floating/keys", json={"customerId": customer["id"], "leaseLimit": limit,
                                                      "products": [{"productId": product, "features": ["render"]}],
                                                      **extra}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def _org(tenant) -> str:
    return f"/licensing/{tenant.id}"


async def _obtain(client, tenant, key, **body):
    r = await client.post(f"{_org(tenant)}/lease/obtain", json={"key": key, **body})
    assert r.status_code == 200, r.text
    return r.json()


async def test_key_validate_describes_the_grant(client, tenant):
    key = await _floating_key(client, tenant, limit=3)
    await _obtain(client, tenant, key)
    body = (await client.get(f"{_org(tenant)}/key/validate", params={"key": key})).json()
    assert body["isValid"] is True and body["leaseLimit"] == 3 and body["leasesUsed"] == 1
    assert body["validFor"] == [{"product": "CAD 3", "productDescription": "",
                                 "features": [{"feature": "render", "featureDescription": ""}]}]
    slug = (await client.get(f"/licensing/{tenant.slug}/key/validate", params={"key": key})).json()
    assert slug["isValid"] is True  # organizationId: the tenant id or its slug


async def test_50_clients_racing_for_10_seats(client, tenant):
    key = await _floating_key(client, tenant, limit=10)
    results = await asyncio.gather(*(_obtain(client, tenant, key, clientId=f"c{i}") for i in range(50)))
    assert sum(r["success"] for r in results) == 10
    assert {r["errorCode"] for r in results if not r["success"]} == {"LEASE_LIMIT_REACHED"}


async def test_expiry_frees_the_slot_without_a_sweeper(client, tenant, clock):
    key = await _floating_key(client, tenant, limit=1)
    first = await _obtain(client, tenant, key, expiry=60)
    assert first["success"]
    assert (await _obtain(client, tenant, key))["errorCode"] == "LEASE_LIMIT_REACHED"
    clock.advance(61)
    lease = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": first["lease"]})).json()
    assert lease.items() >= {"isValid": False, "errorCode": "LEASE_EXPIRED"}.items()
    assert (await _obtain(client, tenant, key))["success"] is True


async def test_renew_replaces_and_release_is_idempotent(client, tenant, clock):
    key = await _floating_key(client, tenant, limit=1)
    first = await _obtain(client, tenant, key, expiry=60)
    clock.advance(30)
    r = (await client.post(f"{_org(tenant)}/lease/renew", json={"lease": first["lease"], "expiry": 120})).json()
    assert r["success"] and r["lease"] != first["lease"]
    old = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": first["lease"]})).json()
    assert old.items() >= {"isValid": False, "errorCode": "LEASE_INVALID"}.items()
    new = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": r["lease"]})).json()
    assert new["isValid"] is True
    clock.advance(100)  # past the first lease's end, within the renewal
    assert (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": r["lease"]})).json()["isValid"]
    for _ in range(2):
        rel = (await client.post(f"{_org(tenant)}/lease/release", json={"lease": r["lease"]})).json()
        assert rel.items() >= {"success": True}.items()
    after = (await client.post(f"{_org(tenant)}/lease/renew", json={"lease": r["lease"]})).json()
    assert after.items() >= {"success": False, "errorCode": "LEASE_RELEASED"}.items()
    gone = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": r["lease"]})).json()
    assert gone["errorCode"] == "LEASE_RELEASED"
    assert (await _obtain(client, tenant, key))["success"]  # the slot is free again


async def test_lease_verifies_offline_and_tampering_is_refused(client, tenant):
    key = await _floating_key(client, tenant)
    lease = (await _obtain(client, tenant, key, clientId="ws-7"))["lease"]
    pem = (await client.get(f"{_org(tenant)}/signature.pem")).text
    head, tail = lease.split(".")
    public = serialization.load_pem_public_key(pem.encode())
    public.verify(base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4)), head.encode(), padding.PKCS1v15(),
                  hashes.SHA256())
    payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    assert payload["cid"] == "ws-7" and payload["org"] == tenant.id
    forged = dict(payload, exp=payload["exp"] + 10**6)
    forged_head = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad in (f"{forged_head}.{tail}", lease[:-4] + "AAAA", "not-a-lease", "a.b"):
        r = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": bad})).json()
        assert r.items() >= {"isValid": False, "errorCode": "LEASE_INVALID"}.items(), bad


async def test_key_errors(client, tenant, clock):
    r = await _obtain(client, tenant, "AAAA-BBBB-CCCC-DDDD")
    assert r.items() >= {"success": False, "errorCode": "KEY_INVALID"}.items()
    key = await _floating_key(client, tenant, validityDays=1)
    clock.advance(2 * 86400)
    assert (await _obtain(client, tenant, key))["errorCode"] == "KEY_EXPIRED"
    key2 = await _floating_key(client, tenant, limit=2)
    lease = (await _obtain(client, tenant, key2))["lease"]
    assert (await client.delete(f"/api/floating/keys/{key2}", headers=tenant.headers)).status_code == 200
    assert (await _obtain(client, tenant, key2))["errorCode"] == "KEY_INVALID"
    r = (await client.get(f"{_org(tenant)}/lease/validate", params={"lease": lease})).json()
    assert r["errorCode"] == "KEY_INVALID"


async def test_tenant_isolation(client, tenant, other_tenant):
    key = await _floating_key(client, tenant)
    lease = (await _obtain(client, tenant, key))["lease"]
    assert (await _obtain(client, other_tenant, key))["errorCode"] == "KEY_INVALID"
    r = (await client.get(f"{_org(other_tenant)}/lease/validate", params={"lease": lease})).json()
    assert r["errorCode"] == "LEASE_INVALID"
    r = (await client.get(f"{_org(other_tenant)}/key/validate", params={"key": key})).json()
    assert r["errorCode"] == "KEY_INVALID"
    assert (await client.get("/api/floating/keys", headers=other_tenant.headers)).json()["items"] == []
    assert (await client.get("/licensing/no-such-org/signature.pem")).status_code == 404


@pytest.mark.parametrize("body,code", [
    ({}, "missing_field"), ({"key": 5}, "invalid_field"), ({"key": "K", "expiry": 0}, "invalid_field"),
    ({"key": "K", "expiry": 10**9}, "invalid_field"), ({"key": "K", "clientId": ["x"]}, "invalid_field"),
])
async def test_bad_input(client, tenant, body, code):
    r = await client.post(f"{_org(tenant)}/lease/obtain", json=body)
    assert r.status_code == 400 and r.json()["error"] == code


async def test_management_validation(client, tenant):
    r = await client.post("/api/floating/keys", json={"customerId": 999, "leaseLimit": 1, "products": []},
                          headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "customer_not_found"
    assert (await client.post("/api/customers", json={"name": "x"})).status_code == 401


async def test_history_reaches_postgres(app, client, tenant, settings, clock):
    key = await _floating_key(client, tenant, limit=1)
    lease = (await _obtain(client, tenant, key, expiry=60, clientId="c1"))["lease"]
    renewed = (await client.post(f"{_org(tenant)}/lease/renew", json={"lease": lease})).json()["lease"]
    await client.post(f"{_org(tenant)}/lease/release", json={"lease": renewed})
    second = await _obtain(client, tenant, key, expiry=10)
    clock.advance(11)
    await _obtain(client, tenant, key)  # logs the expiry of `second`
    drainer = app.state.services.lease_history
    await drainer.drain(list(app.state.services.lease_pools.dirty))
    await drainer.drain(list(app.state.services.lease_pools.dirty))  # nothing twice
    async with db_connection(settings.database_url) as conn:
        actions = [r["action"] for r in await conn.fetch("SELECT action FROM lease_history WHERE tenant_id = $1 "
                                                         "ORDER BY at, entry_id", tenant.id)]
    assert second["success"]
    assert actions == ["obtained", "renewed", "released", "obtained", "expired", "obtained"]

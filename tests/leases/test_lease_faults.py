"""Floating leases under revocation, cross-organization probing and Redis data loss (issue 12)."""

from __future__ import annotations

import redis.asyncio as aioredis

from conftest import db_connection, make_product, running_app


async def _floating_key(client, tenant, limit: int = 2) -> str:
    product = await make_product(client, tenant.headers, name=f"CAD {limit}")
    customer = (await client.post("/api/customers", json={"name": "Initech"}, headers=tenant.headers)).json()
    r = await client.post("/api/floating/keys", json={"customerId": customer["id"], "leaseLimit": limit,
                                                      "products": [{"productId": product}]}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["key"]


async def _obtain(client, org: str, key: str) -> dict:
    r = await client.post(f"/licensing/{org}/lease/obtain", json={"key": key})
    assert r.status_code == 200, r.text
    return r.json()


async def test_revoking_a_key_ends_its_live_leases_on_every_process(settings, tenant, clock):
    async with running_app(settings, clock) as (_, one), running_app(settings, clock) as (_, two):
        key = await _floating_key(one, tenant)
        org = f"/licensing/{tenant.id}"
        leases = [(await _obtain(one, tenant.id, key))["lease"] for _ in range(2)]
        assert (await two.get(f"{org}/lease/validate", params={"lease": leases[0]})).json()["isValid"] is True
        assert (await one.delete(f"/api/floating/keys/{key}", headers=tenant.headers)).status_code == 200
        for client in (two, one):  # no obtain in between refills the cache: validation itself must
            for lease in leases:
                r = (await client.get(f"{org}/lease/validate", params={"lease": lease})).json()
                assert r.items() >= {"isValid": False, "errorCode": "KEY_INVALID"}.items()
        r = (await two.post(f"{org}/lease/renew", json={"lease": leases[1]})).json()
        assert r.items() >= {"success": False, "errorCode": "KEY_INVALID"}.items()


async def test_missing_pool_metadata_is_refilled_never_read_as_allowed(app, client, tenant, settings):
    key = await _floating_key(client, tenant)
    lease = (await _obtain(client, tenant.id, key))["lease"]
    # Revoked in PostgreSQL while Redis's cached metadata is gone (its TTL ran out, or Redis lost it).
    async with db_connection(settings.database_url) as conn:
        await conn.execute("UPDATE floating_keys SET revoked_at = now()")
    redis = aioredis.from_url(settings.redis_url)
    try:
        for meta in [k async for k in redis.scan_iter(match="qg:{fl:*}:meta")]:
            await redis.delete(meta)
    finally:
        await redis.aclose()
    r = (await client.get(f"/licensing/{tenant.id}/lease/validate", params={"lease": lease})).json()
    assert r.items() >= {"isValid": False, "errorCode": "KEY_INVALID"}.items()


async def test_another_organization_cannot_poison_the_owners_pool_cache(client, tenant, other_tenant):
    key = await _floating_key(client, tenant)
    for _ in range(2):  # the probe comes first, before the owner ever filled the cache
        assert (await _obtain(client, other_tenant.id, key)).items() >= {"success": False, "errorCode": "KEY_INVALID"}.items()
    mine = await _obtain(client, tenant.id, key)
    assert mine["success"] is True, mine
    assert (await _obtain(client, other_tenant.id, key)).items() >= {"success": False, "errorCode": "KEY_INVALID"}.items()
    assert (await _obtain(client, tenant.id, key))["success"] is True


async def _drain_history(app) -> None:
    services = app.state.services
    drainer = services.lease_history
    await drainer.drain(await drainer.everything())


async def test_a_full_pool_stays_full_after_redis_loses_its_data(app, client, tenant, settings, clock):
    key = await _floating_key(client, tenant, limit=2)
    org = f"/licensing/{tenant.id}"
    first = await _obtain(client, tenant.id, key)
    renewed_away = await _obtain(client, tenant.id, key)
    clock.advance(10)
    second = (await client.post(f"{org}/lease/renew", json={"lease": renewed_away["lease"]})).json()
    assert first["success"] and second["success"]
    assert (await _obtain(client, tenant.id, key))["errorCode"] == "LEASE_LIMIT_REACHED"
    await _drain_history(app)  # the write-behind ran (at most a flush interval behind)

    redis = aioredis.from_url(settings.redis_url)
    try:
        await redis.flushall()  # a restart without persistence, or an operator's FLUSHALL
    finally:
        await redis.aclose()

    # The live leases are rebuilt from PostgreSQL before the pool changes: no second set is issued.
    full = await _obtain(client, tenant.id, key)
    assert (full["success"], full["errorCode"], full["leasesUsed"], full["leaseLimit"]) == (
        False, "LEASE_LIMIT_REACHED", 2, 2)
    for lease in (first["lease"], second["lease"]):
        assert (await client.get(f"{org}/lease/validate", params={"lease": lease})).json()["isValid"] is True
    old = (await client.get(f"{org}/lease/validate", params={"lease": renewed_away["lease"]})).json()
    assert old["isValid"] is False
    assert (await client.get(f"{org}/key/validate", params={"key": key})).json()["leasesUsed"] == 2
    assert (await client.post(f"{org}/lease/release", json={"lease": first["lease"]})).json()["success"] is True
    assert (await _obtain(client, tenant.id, key))["success"] is True
    assert (await _obtain(client, tenant.id, key))["errorCode"] == "LEASE_LIMIT_REACHED"

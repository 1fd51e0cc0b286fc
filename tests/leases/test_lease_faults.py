"""Floating leases under revocation, cross-organization probing and Redis data loss (issue 12)."""

from __future__ import annotations

from conftest import make_product


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


async def test_another_organization_cannot_poison_the_owners_pool_cache(client, tenant, other_tenant):
    key = await _floating_key(client, tenant)
    for _ in range(2):  # the probe comes first, before the owner ever filled the cache
        assert (await _obtain(client, other_tenant.id, key)) == {"success": False, "errorCode": "KEY_INVALID"}
    mine = await _obtain(client, tenant.id, key)
    assert mine["success"] is True, mine
    assert (await _obtain(client, other_tenant.id, key)) == {"success": False, "errorCode": "KEY_INVALID"}
    assert (await _obtain(client, tenant.id, key))["success"] is True

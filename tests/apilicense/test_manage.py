"""Managing API keys: the issued key, listings (masked, paginated, filtered), show, revoke, and
tenant isolation of every one of them."""

from __future__ import annotations

import calendar

from conftest import make_api_key, make_product

API = "/api/apilicense"


def _at(*parts) -> int:
    return calendar.timegm((*parts, 0, 0, 0)[:6])


async def test_create_answers_the_full_key_once_and_its_terms(client, tenant, clock):
    clock.set(_at(2026, 1, 31, 12, 0, 0))
    product = await make_product(client, tenant.headers, name="Maps API")
    r = await client.post(API, json={"productId": product, "email": "ops@example.com", "clientName": "Contoso",
                                     "clientIdentifier": "cust-42", "validityDays": 30, "maxApiCalls": 5000},
                          headers=tenant.headers)
    assert r.status_code == 201
    body = r.json()
    assert body["apiKey"].startswith("qgk_") and len(body["apiKey"]) == 32
    assert {k: body[k] for k in ("expirationDate", "maxApiCalls", "productName", "clientName", "clientIdentifier")} == {
        "expirationDate": "2026-03-02T12:00:00Z", "maxApiCalls": 5000, "productName": "Maps API",
        "clientName": "Contoso", "clientIdentifier": "cust-42"}
    shown = (await client.get(f"{API}/{body['apiKey']}", headers=tenant.headers)).json()
    assert body["apiKey"] not in str(shown) and shown["apiKey"] == f"{body['apiKey'][:8]}…{body['apiKey'][-4:]}"
    assert shown["status"] == "active" and shown["maxApiCalls"] == 5000


async def test_no_quota_and_no_expiry_when_omitted(client, tenant):
    product = await make_product(client, tenant.headers)
    body = (await client.post(API, json={"productId": product}, headers=tenant.headers)).json()
    assert body["maxApiCalls"] is None and body["expirationDate"] is None


async def test_create_refuses_bad_terms_and_unknown_products(client, tenant, other_tenant):
    product = await make_product(client, tenant.headers)
    foreign = await make_product(client, other_tenant.headers)
    for payload, status, code in [
        ({"productId": foreign}, 404, "product_not_found"),
        ({"productId": product, "maxApiCalls": 0}, 400, "invalid_field"),
        ({"productId": product, "validityDays": -1}, 400, "invalid_field"),
        ({"productId": product, "email": "not-an-email"}, 400, "invalid_field"),
        ({}, 400, "missing_field"),
    ]:
        r = await client.post(API, json=payload, headers=tenant.headers)
        assert (r.status_code, r.json()["error"]) == (status, code), payload


async def test_listing_is_masked_paginated_and_filtered(client, tenant, clock):
    clock.set(_at(2026, 6, 1, 0, 0, 0))
    weather = await make_product(client, tenant.headers, name="Weather API")
    maps = await make_product(client, tenant.headers, name="Maps API")
    keys = [await make_api_key(client, tenant.headers, weather, clientIdentifier=f"c-{i % 2}") for i in range(5)]
    short_lived = await make_api_key(client, tenant.headers, maps, validityDays=1, clientIdentifier="c-9")
    await client.delete(f"{API}/{keys[0]}", headers=tenant.headers)
    clock.set(_at(2026, 6, 3, 0, 0, 0))  # short_lived has expired

    async def listing(**params):
        r = await client.get(API, params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        return r.json()

    everything = await listing()
    assert everything["totalCount"] == 6 and len(everything["items"]) == 6
    assert not any(k in str(everything) for k in keys + [short_lived])  # keys are masked
    page = await listing(page=2, pageSize=4)
    assert (page["page"], page["pageSize"], page["totalPages"], len(page["items"])) == (2, 4, 2, 2)
    first = await listing(page=1, pageSize=4)
    assert {i["id"] for i in first["items"]}.isdisjoint(i["id"] for i in page["items"])
    assert (await listing(productId=maps))["totalCount"] == 1
    assert (await listing(clientIdentifier="c-1"))["totalCount"] == 2
    assert [i["status"] for i in (await listing(status="revoked"))["items"]] == ["revoked"]
    assert [i["clientIdentifier"] for i in (await listing(status="expired"))["items"]] == ["c-9"]
    assert (await listing(status="active"))["totalCount"] == 4
    for bad in ({"status": "gone"}, {"pageSize": 0}, {"page": "x"}):
        r = await client.get(API, params=bad, headers=tenant.headers)
        assert r.status_code == 400 and r.json()["error"] == "invalid_field", bad


async def test_tenants_never_see_or_touch_each_others_keys(client, tenant, other_tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    assert (await client.get(API, headers=other_tenant.headers)).json()["totalCount"] == 0
    for method, path in [("GET", f"{API}/{key}"), ("DELETE", f"{API}/{key}"), ("GET", f"{API}/{key}/usage"),
                         ("POST", f"{API}/{key}/reset"), ("PATCH", f"{API}/{key}")]:
        r = await client.request(method, path, headers=other_tenant.headers, json={} if method == "PATCH" else None)
        assert (r.status_code, r.json()["error"]) == (404, "not_found"), (method, path)
    r = await client.get(f"{API}/validate/{key}", headers=other_tenant.headers)
    assert r.status_code == 404 and r.json()["errorCode"] == "not_found"
    assert (await client.get(f"{API}/{key}", headers=tenant.headers)).json()["status"] == "active"


async def test_revoke_is_idempotent_and_unknown_keys_are_404(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    for _ in range(2):
        r = await client.delete(f"{API}/{key}", headers=tenant.headers)
        assert r.status_code == 200 and r.json()["revoked"] is True
    r = await client.delete(f"{API}/qgk_{'0' * 28}", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


async def test_management_needs_the_manage_permission(client, tenant, settings):
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    product = await make_product(client, tenant.headers)
    r = await client.post(API, json={"productId": product}, headers=verify_only)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert (await client.get(API, headers=verify_only)).status_code == 403

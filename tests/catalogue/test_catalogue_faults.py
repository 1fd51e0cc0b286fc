"""Bad input on catalogue endpoints is a 400/409 with a stable code, never a 500 (issue 12)."""

from __future__ import annotations

import pytest

from conftest import make_product


@pytest.mark.parametrize("raw", ["%C2%B2", "%D9%A1", "%EF%BC%91", "1_0", "%201", "+1"])
async def test_only_ascii_digits_are_ids_in_paths(client, tenant, raw):
    await make_product(client, tenant.headers)  # product 1 exists: a lenient parse would find it
    for path in (f"/api/product/{raw}", f"/api/product/{raw}/features"):
        r = await client.get(path, headers=tenant.headers)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json() == {"error": "invalid_field", "message": "product_id: must be a positive integer",
                            "field": "product_id"}


@pytest.mark.parametrize("raw", ["%D9%A1", "%C2%B2", "1_0", "%201"])
async def test_only_ascii_digits_are_integers_in_queries(client, tenant, raw):
    r = await client.get(f"/api/apilicense?page={raw}", headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "page"


async def test_feature_after_the_largest_code_takes_a_free_code(client, tenant):
    product = await make_product(client, tenant.headers)
    top = await client.post(f"/api/product/{product}/features", json={"name": "top", "code": 2**31 - 1},
                            headers=tenant.headers)
    assert top.status_code == 201, top.text
    nxt = await client.post(f"/api/product/{product}/features", json={"name": "next"}, headers=tenant.headers)
    assert nxt.status_code == 201, nxt.text
    assert nxt.json()["code"] == 1  # the lowest free code, as max + 1 does not fit
    again = await client.post(f"/api/product/{product}/features", json={"name": "again"}, headers=tenant.headers)
    assert again.status_code == 201 and again.json()["code"] == 2

"""API-key licensing under bad input, races and contract edges (issue 12)."""

from __future__ import annotations

import pytest

from conftest import make_api_key, make_product

EDGES = ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"]


@pytest.mark.parametrize("when", EDGES)
async def test_expiration_beyond_the_calendar_is_400(client, tenant, when):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.patch(f"/api/apilicense/{key}", json={"expirationDate": when}, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "expirationDate"

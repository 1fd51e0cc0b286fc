"""API-key licensing under bad input, races and contract edges (issue 12)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import make_api_key, make_product

EDGES = ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00"]


@pytest.mark.parametrize("when", EDGES)
async def test_expiration_beyond_the_calendar_is_400(client, tenant, when):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.patch(f"/api/apilicense/{key}", json={"expirationDate": when}, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "expirationDate"


async def _consume(client, headers, key, units=1, **extra):
    return await client.post("/api/apilicense/validate", json={"apiKey": key, "units": units}, headers=headers,
                             **extra)


async def _quota(client, headers, key) -> dict:
    r = await client.get(f"/api/apilicense/{key}/usage", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["quota"]


async def test_concurrent_lifetime_resets_zero_the_quota_once(app, client, tenant):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=100)
    assert (await _consume(client, tenant.headers, key, 50)).status_code == 200
    flusher = app.state.services.usage_flusher
    # Ten resets at once, racing the write-behind moving the 50 units to PostgreSQL.
    answers = await asyncio.gather(flusher.flush(list(range(1024))),
                                   *(client.post(f"/api/apilicense/{key}/reset", params={"periodType": "lifetime"},
                                                 headers=tenant.headers) for _ in range(10)))
    assert [r.status_code for r in answers[1:]] == [200] * 10
    assert await _quota(client, tenant.headers, key) == {"limit": 100, "used": 0, "remaining": 100}
    assert (await _consume(client, tenant.headers, key, 100)).status_code == 200
    refused = await _consume(client, tenant.headers, key, 1)
    assert refused.status_code == 429 and refused.json()["errorCode"] == "quota_exhausted"
    assert await _quota(client, tenant.headers, key) == {"limit": 100, "used": 100, "remaining": 0}

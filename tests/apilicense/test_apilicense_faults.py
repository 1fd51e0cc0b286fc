"""API-key licensing under bad input, races and contract edges (issue 12)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis

from conftest import make_api_key, make_product, running_app
from tcp_cut import postgres_behind_forwarder

# Beyond the calendar once in UTC, or its very first and last instants (which PostgreSQL would keep
# as -infinity and infinity, read back as naive datetimes: every listing of the tenant's keys failed).
EDGES = ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00", "0001-01-01T00:00:00Z",
         "9999-12-31T23:59:59.999999Z"]


@pytest.mark.parametrize("when", EDGES)
async def test_expiration_beyond_the_calendar_is_400(client, tenant, when):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.patch(f"/api/apilicense/{key}", json={"expirationDate": when}, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "expirationDate"
    assert (await client.get("/api/apilicense", headers=tenant.headers)).status_code == 200
    imported = await client.post("/api/apilicense/import", headers=tenant.headers, json={
        "productId": 1, "keys": [{"apiKey": "legacy-key-0001", "expirationDate": when}]})
    assert imported.status_code == 400 and imported.json()["error"] == "invalid_field", imported.text


async def _consume(client, headers, key, units=1):
    return await client.post("/api/apilicense/validate", json={"apiKey": key, "units": units}, headers=headers)


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


# --- contract edges (item 8) -------------------------------------------------------------------

async def test_an_idempotent_replay_after_revocation_is_refused(client, tenant):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=10)
    first = await _consume(client, {**tenant.headers, "Idempotency-Key": "order-1"}, key, 3)
    assert first.status_code == 200 and first.json()["unitsConsumed"] == 3
    replay = await _consume(client, {**tenant.headers, "Idempotency-Key": "order-1"}, key, 3)
    assert replay.json() == first.json()  # before revocation: the first answer again
    assert (await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)).status_code == 200
    late = await _consume(client, {**tenant.headers, "Idempotency-Key": "order-1"}, key, 3)
    assert late.status_code == 403 and late.json()["errorCode"] == "revoked"
    assert (await _quota(client, tenant.headers, key))["used"] == 3


@pytest.mark.parametrize("units", [2.0, 2.5, "2", True])
async def test_units_must_be_an_integer(client, tenant, units):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.post("/api/apilicense/validate", json={"apiKey": key, "units": units}, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "invalid_field", "message": "units: must be an integer", "field": "units"}
    r = await client.patch(f"/api/apilicense/{key}", json={"maxApiCalls": 100.0}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["field"] == "maxApiCalls"


async def test_units_null_means_absent(client, tenant):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.post("/api/apilicense/validate", json={"apiKey": key, "units": None}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["unitsConsumed"] == 1


@pytest.mark.parametrize("raw", [
    b'{"apiKey": "%s", "units": 1, "units": 1000}',
    b'{"units": 1000, "apiKey": "%s", "units": 1}',
    b'{"apiKey": "qgk_0000000000000000000000000000", "apiKey": "%s"}',
    b'{"apiKey": "%s", "consumeUnits": false, "consumeUnits": true}',
    b'{"apiKey": "%s", "x": {"a": 1, "a": 2}}',
    b'{"apiKey": "%s", "\\u0075nits": 5, "units": 1}',
])
async def test_duplicate_members_are_refused_on_the_hot_path(client, tenant, raw):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=10)
    r = await client.post("/api/apilicense/validate", content=raw % key.encode(),
                          headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "duplicate_key"
    assert (await _quota(client, tenant.headers, key))["used"] == 0


@pytest.mark.parametrize("raw", [
    b'{"apiKey": "%s", "note": "a \\"quoted\\" \\\\ text", "units": 2}',
    b'{"apiKey": "%s", "units": 2, "nested": {"units": 1, "apiKey": "x"}}',
    b'{"apiKey": "%s", "units": 2, "list": [{"a": 1}, {"a": 2}]}',
])
async def test_repeated_names_in_other_places_are_fine(client, tenant, raw):
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers))
    r = await client.post("/api/apilicense/validate", content=raw % key.encode(),
                          headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["unitsConsumed"] == 2


async def test_duplicate_members_are_refused_on_management_endpoints(client, tenant):
    for raw in (b'{"name": "A", "name": "B"}', b'{"name": "A", "description": "x", "description": "y"}'):
        r = await client.post("/api/product", content=raw, headers={**tenant.headers, "Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "duplicate_key"
    assert (await client.get("/api/product", headers=tenant.headers)).json()["items"] == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml"])
async def test_a_json_body_with_another_content_type_is_415(client, tenant, content_type):
    r = await client.post("/api/product", content=b'{"name": "A"}',
                          headers={**tenant.headers, "Content-Type": content_type})
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type"
    assert (await client.get("/api/product", headers=tenant.headers)).json()["items"] == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/problem+json", None])
async def test_json_content_types_and_none_are_accepted(client, tenant, content_type):
    headers = dict(tenant.headers)
    if content_type:
        headers["Content-Type"] = content_type
    r = await client.post("/api/product", content=b'{"name": "A"}', headers=headers)
    assert r.status_code == 201, r.text


# --- Redis losing its data (item 6) --------------------------------------------------------------

async def _flush_all(app) -> None:
    await app.state.services.usage_flusher.flush(list(range(1024)))


async def _lose_redis_data(settings) -> None:
    redis = aioredis.from_url(settings.redis_url)
    try:
        await redis.flushall()  # a restart without persistence, or an operator's FLUSHALL
    finally:
        await redis.aclose()


@pytest.fixture
async def manual_flush(settings, clock):
    """An app whose write-behind runs only when the test says so."""
    async with running_app(dataclasses.replace(settings, flush_interval=3600.0), clock) as app_client:
        yield app_client


async def test_an_idempotent_replay_after_redis_lost_its_data_consumes_nothing(manual_flush, tenant, settings):
    app, client = manual_flush
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=10)
    headers = {**tenant.headers, "Idempotency-Key": "order-1"}
    first = await _consume(client, headers, key, 3)
    assert first.status_code == 200
    await _flush_all(app)  # the write-behind ran (it runs every flush interval)
    await _lose_redis_data(settings)
    replay = await _consume(client, headers, key, 3)
    assert replay.status_code == 200 and replay.json() == first.json()
    assert await _quota(client, tenant.headers, key) == {"limit": 10, "used": 3, "remaining": 7}
    assert (await _consume(client, {**tenant.headers, "Idempotency-Key": "order-2"}, key, 3)).json()["unitsConsumed"] == 3
    assert (await _quota(client, tenant.headers, key))["used"] == 6


async def test_a_lifetime_reset_survives_redis_losing_unflushed_usage(manual_flush, tenant, settings):
    app, client = manual_flush
    key = await make_api_key(client, tenant.headers, await make_product(client, tenant.headers), maxApiCalls=100)
    assert (await _consume(client, tenant.headers, key, 40)).status_code == 200
    await _flush_all(app)
    assert (await _consume(client, tenant.headers, key, 30)).status_code == 200  # not yet flushed ...
    r = await client.post(f"/api/apilicense/{key}/reset", params={"periodType": "lifetime"}, headers=tenant.headers)
    assert r.status_code == 200
    await _lose_redis_data(settings)  # ... and lost
    assert await _quota(client, tenant.headers, key) == {"limit": 100, "used": 0, "remaining": 100}
    assert (await _consume(client, tenant.headers, key, 100)).status_code == 200
    assert (await _consume(client, tenant.headers, key, 1)).status_code == 429


async def test_cached_metadata_never_lapses_so_a_postgres_outage_keeps_keys_validating(settings, tenant, clock):
    async with postgres_behind_forwarder(settings) as (through, forwarder), running_app(through, clock) as (_, client):
        product = await make_product(client, tenant.headers)
        key = await make_api_key(client, tenant.headers, product, maxApiCalls=5)
        revoked = await make_api_key(client, tenant.headers, product)
        assert (await client.delete(f"/api/apilicense/{revoked}", headers=tenant.headers)).status_code == 200
        for k in (key, revoked):
            await _consume(client, tenant.headers, k, 1)  # both cached
        await forwarder.cut()
        redis = aioredis.from_url(settings.redis_url)
        try:  # nothing of theirs can expire during the outage (so no backup copy is needed)
            entries = [name async for name in redis.scan_iter(match="qg:{b*}:[kp]:*")]
            assert len(entries) >= 3 and {await redis.ttl(name) for name in entries} == {-1}
        finally:
            await redis.aclose()
        r = await _consume(client, tenant.headers, key, 2)
        assert r.status_code == 200, r.text
        assert r.json()["quota"] == {"limit": 5, "used": 3, "remaining": 2}
        assert (await _consume(client, tenant.headers, key, 3)).status_code == 429
        r = await _consume(client, tenant.headers, revoked, 1)
        assert r.status_code == 403 and r.json()["errorCode"] == "revoked"

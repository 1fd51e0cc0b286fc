"""Access tokens under bad input and PostgreSQL outages (issue 12)."""

from __future__ import annotations

import asyncio

import pytest

from conftest import db_connection, make_api_key, make_product, running_app
from tcp_cut import postgres_behind_forwarder

# Beyond the calendar once in UTC, or its very first and last instants (which PostgreSQL would keep
# as -infinity and infinity, read back as naive datetimes).
EDGES = ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+10:00", "0001-01-01T00:00:00Z",
         "9999-12-31T23:59:59.999999Z"]


@pytest.mark.parametrize("when", EDGES)
async def test_expiry_beyond_the_calendar_is_400(client, tenant, when):
    r = await client.post("/api/tokens", json={"name": "edge", "scopes": ["verify"], "expiresAt": when},
                          headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_field" and r.json()["field"] == "expiresAt"


async def test_expiry_at_the_calendars_last_second_is_fine(client, tenant):
    r = await client.post("/api/tokens", json={"name": "edge", "scopes": ["verify"],
                                               "expiresAt": "9999-12-31T23:59:59Z"}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json()["expiresAt"] == "9999-12-31T23:59:59Z"


async def test_a_five_minute_postgres_outage_keeps_verified_tokens_serving(settings, tenant, clock):
    async with (postgres_behind_forwarder(settings) as (through, forwarder),
                running_app(through, clock) as (app, client), running_app(through, clock) as (other, _)):
        product = await make_product(client, tenant.headers)
        key = await make_api_key(client, tenant.headers, product)
        verify = await tenant.token_with(settings.database_url, ["verify"])
        body = {"apiKey": key}
        assert (await client.post("/api/apilicense/validate", json=body, headers=verify)).status_code == 200
        assert (await client.post("/api/apilicense/validate", json=body, headers=tenant.headers)).status_code == 200

        await forwarder.cut()
        for _ in range(30):  # 5 minutes, in steps of 10 s: every token cache entry goes stale many times
            clock.advance(10)
            r = await client.post("/api/apilicense/validate", json=body, headers=verify)
            assert r.status_code == 200, r.text
        stranger = await tenant.token_with(settings.database_url, ["verify"])
        r = await client.post("/api/apilicense/validate", json=body, headers=stranger)
        assert r.status_code == 503  # never verified, and no way to verify it now: not a 401
        # A revocation published by another process still ends the cached token at once.
        await other.state.services.tokens.publish_invalidation(tenant.token.split("_")[2])
        for _ in range(100):
            if not (await client.post("/api/apilicense/validate", json=body, headers=tenant.headers)).is_success:
                break
            await asyncio.sleep(0.01)
        r = await client.post("/api/apilicense/validate", json=body, headers=tenant.headers)
        assert r.status_code == 503, r.text

        await forwarder.restore()
        assert (await client.post("/api/apilicense/validate", json=body, headers=tenant.headers)).status_code == 200
        flusher = app.state.services.usage_flusher
        for _ in range(100):  # the usage held in Redis during the outage reaches PostgreSQL
            await flusher.flush(list(range(1024)))
            async with db_connection(settings.database_url) as conn:
                total = await conn.fetchval("SELECT used_total FROM api_licenses")
            if total == 33:
                break
            await asyncio.sleep(0.05)
        assert total == 33

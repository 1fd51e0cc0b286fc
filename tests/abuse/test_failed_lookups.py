"""Failed lookups through a valid token: counted per tenant and token in /metrics; the per-token
limit is off by default and, when on, refuses only the token that failed too often."""

from __future__ import annotations

import secrets
import string

import httpx

from conftest import METRICS_HEADERS, make_api_key, make_product, running_app
from pg_reads import table_reads

VALIDATE = "/api/apilicense/validate"
UNKNOWN_API_KEY = "qg_" + "A" * 30


async def _metrics(client) -> str:
    r = await client.get("/metrics", headers=METRICS_HEADERS)
    assert r.status_code == 200
    return r.text


def _public_id(tenant) -> str:
    return tenant.token.split("_")[2]


async def test_wrong_keys_and_tokens_are_counted_per_tenant_and_token(client, tenant, settings):
    for _ in range(3):
        r = await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=tenant.headers)
        assert r.status_code == 404 and r.json()["isValid"] is False
    r = await client.post("/api/license/validate", headers=tenant.headers,
                          json={"activationKey": "AAAAA-BBBBB-CCCCC-DDDDD", "hardwareId": "hw-1", "productName": "Nothing",
                                "version": "1.0"})
    assert r.status_code == 200 and r.json()["isValid"] is False
    bad = {"Authorization": "ExisOneApi exo_at_abcdefghijkl_" + "x" * 32}
    assert (await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=bad)).status_code == 401
    assert (await client.get("/api/customers", headers=bad)).status_code == 401
    text = await _metrics(client)
    public = _public_id(tenant)
    assert f'qg_failed_lookups_total{{kind="api_key",tenant="{tenant.id}",token="{public}"}} 3.0' in text
    assert f'qg_failed_lookups_total{{kind="activation_key",tenant="{tenant.id}",token="{public}"}} 1.0' in text
    assert 'qg_failed_lookups_total{kind="access_token",tenant="",token=""} 2.0' in text


async def test_no_per_token_limit_by_default(client, tenant):
    product = await make_product(client, tenant.headers)
    good = await make_api_key(client, tenant.headers, product)
    for _ in range(50):
        assert (await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=tenant.headers)).status_code == 404
    assert (await client.post(VALIDATE, json={"apiKey": good}, headers=tenant.headers)).status_code == 200


async def test_the_optional_per_token_limit(settings, tenant, clock):
    async with running_app(settings.with_(token_failures_per_minute=2), clock) as (_, client):
        clock.set(1_800_000_000 - 1_800_000_000 % 60 + 15)
        product = await make_product(client, tenant.headers)
        good = await make_api_key(client, tenant.headers, product)
        other = await tenant.token_with(settings.database_url, ["verify"])
        for _ in range(2):
            assert (await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY},
                                      headers=tenant.headers)).status_code == 404
        r = await client.post(VALIDATE, json={"apiKey": good}, headers=tenant.headers)
        assert r.status_code == 429 and r.json()["error"] == "too_many_failed_lookups"
        assert r.headers["retry-after"] == "45"
        assert (await client.post(VALIDATE, json={"apiKey": good}, headers=other)).status_code == 200
        clock.advance(45)
        assert (await client.post(VALIDATE, json={"apiKey": good}, headers=tenant.headers)).status_code == 200


def _activation(key: str, hardware: str = "hw-1") -> dict:
    return {"activationKey": key, "hardwareId": hardware, "productName": "Desk App", "version": "1.0",
            "email": "user@example.com"}


async def test_the_per_token_limit_on_the_licensing_routes(settings, tenant, clock):
    """Wrong activation keys on validate and activate count against the token's limit; past it,
    every route that looks a key up answers 429, and only for that token."""
    async with running_app(settings.with_(token_failures_per_minute=2), clock) as (_, client):
        clock.set(1_800_000_000 - 1_800_000_000 % 60 + 20)
        product = await make_product(client, tenant.headers, name="Desk App")
        r = await client.post("/api/licenses", headers=tenant.headers,
                              json={"productId": product, "email": "user@example.com", "kind": "standard"})
        assert r.status_code == 201
        good = r.json()["activationKey"]
        other = await tenant.token_with(settings.database_url, ["verify"])
        wrong = "AAAAA-BBBBB-CCCCC-DDDDD"
        r = await client.post("/api/license/validate", headers=tenant.headers, json=_activation(wrong))
        assert r.status_code == 200 and r.json()["isValid"] is False
        r = await client.post("/api/license/activate", headers=tenant.headers, json=_activation(wrong))
        assert r.status_code == 404 and r.json()["error"] == "invalid_key"
        for path in ("/api/license/validate", "/api/license/activate", "/api/license/deactivate"):
            r = await client.post(path, headers=tenant.headers, json=_activation(good))
            assert r.status_code == 429, (path, r.text)
            assert r.json()["error"] == "too_many_failed_lookups" and r.headers["retry-after"] == "40"
        # routes that look no key up, and other tokens, are untouched
        assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200
        r = await client.post("/api/license/validate", headers=other, json=_activation(good))
        assert r.status_code == 200 and r.json()["status"] == "not_activated", r.text
        clock.advance(40)
        r = await client.post("/api/license/activate", headers=tenant.headers, json=_activation(good))
        assert r.status_code == 200, r.text


async def test_wrong_activation_keys_are_never_limited_by_default(client, tenant):
    await make_product(client, tenant.headers, name="Desk App")
    for _ in range(20):
        r = await client.post("/api/license/activate", headers=tenant.headers,
                              json=_activation("AAAAA-BBBBB-CCCCC-DDDDD"))
        assert r.status_code == 404 and r.json()["error"] == "invalid_key"


def _random_token() -> dict[str, str]:
    alphabet = string.ascii_lowercase + string.digits
    public = "".join(secrets.choice(alphabet) for _ in range(12))
    return {"Authorization": f"ExisOneApi exo_at_{public}_{secrets.token_hex(16)}"}


async def test_wrong_access_tokens_count_in_the_address_failure_window(settings, tenant, clock):
    """Random access tokens miss every cache, so each one would be a PostgreSQL lookup: they count
    as the address's failed lookups, and past the limit the address's unverified tokens are refused
    before any lookup. Tokens verified before, and other addresses, are untouched."""
    async with running_app(settings.with_(client_failures_per_minute=3), clock) as (app, client):
        clock.set(1_800_000_000 - 1_800_000_000 % 60 + 30)
        assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200  # verified here
        fresh = await tenant.token_with(settings.database_url, ["verify"])  # never used yet
        for path in (VALIDATE, "/api/tenant", VALIDATE):
            r = await (client.post(path, json={"apiKey": UNKNOWN_API_KEY}, headers=_random_token())
                       if path == VALIDATE else client.get(path, headers=_random_token()))
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        before = await table_reads(settings.database_url, "access_tokens")
        for _ in range(5):
            r = await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=_random_token())
            assert r.status_code == 429 and r.json()["error"] == "too_many_failed_lookups"
            assert r.headers["retry-after"] == "30" and r.json()["retryAfter"] == 30
        r = await client.get("/api/tenant", headers=_random_token())
        assert r.status_code == 429 and r.json()["error"] == "too_many_failed_lookups"
        assert (await client.get("/api/tenant", headers=fresh)).status_code == 429  # unverified: refused too
        assert await table_reads(settings.database_url, "access_tokens") == before  # none of them reached PostgreSQL
        # the token verified before, and malformed tokens (refused without I/O), answer as ever
        assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200
        r = await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=tenant.headers)
        assert r.status_code == 404
        assert (await client.get("/api/tenant", headers={"Authorization": "ExisOneApi nope"})).status_code == 401
        # another address is another window
        transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as elsewhere:
            assert (await elsewhere.get("/api/tenant", headers=fresh)).status_code == 200
        clock.advance(30)
        assert (await client.get("/api/tenant", headers=_random_token())).status_code == 401


async def test_a_wrong_secret_of_a_verified_token_never_reaches_postgres(client, tenant, settings):
    assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200
    public = _public_id(tenant)
    before = await table_reads(settings.database_url, "access_tokens")
    for _ in range(5):
        wrong = {"Authorization": f"ExisOneApi exo_at_{public}_{secrets.token_hex(16)}"}
        assert (await client.get("/api/tenant", headers=wrong)).status_code == 401
        assert (await client.post(VALIDATE, json={"apiKey": UNKNOWN_API_KEY}, headers=wrong)).status_code == 401
    assert await table_reads(settings.database_url, "access_tokens") == before
    assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200

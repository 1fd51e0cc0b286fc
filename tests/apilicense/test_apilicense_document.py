"""API-key validation answers, checked against the words of the ExisOne API-licensing document."""

from __future__ import annotations

import calendar

from conftest import db_connection, make_api_key, make_product

VALIDATE = "/api/apilicense/validate"


def _at(*parts) -> int:
    return calendar.timegm((*parts, 0, 0, 0)[:6])


async def test_features_list_every_product_feature_rules_included(client, tenant, clock):
    """The document's example answers "features": ["api:rate:minute:100"] and
    ["api:rate:minute:100", "api:tier:premium"]: rule features are listed too; rules still limit."""
    only_rule = await make_product(client, tenant.headers, name="Rule only", features=("api:rate:minute:100",))
    key = await make_api_key(client, tenant.headers, only_rule)
    r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["features"] == ["api:rate:minute:100"]

    tiered = await make_product(client, tenant.headers, name="Tiered", features=("api:rate:minute:2", "api:tier:premium"))
    key = await make_api_key(client, tenant.headers, tiered)
    for _ in range(2):
        r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
        assert r.status_code == 200 and r.json()["features"] == ["api:rate:minute:2", "api:tier:premium"]
    r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    assert r.status_code == 429 and r.json()["errorCode"] == "rate_limit_minute"

    # a feature added later shows at once (cached metadata is dropped)
    await client.post(f"/api/product/{tiered}/features", json={"name": "api:units:day:50"}, headers=tenant.headers)
    clock.advance(60)
    r = await client.get(f"/api/apilicense/validate/{key}", headers=tenant.headers)
    assert r.json()["features"] == ["api:rate:minute:2", "api:tier:premium", "api:units:day:50"]


async def test_allowed_answers_carry_the_rate_limit_fields(client, tenant, clock):
    """Issue 11: "Send the IETF RateLimit / RateLimit-Policy fields (and X-RateLimit-*) on allowed
    answers too, not only on 429s, naming the window closest to its limit"."""
    clock.set(_at(2026, 3, 14, 15, 9, 26))
    product = await make_product(client, tenant.headers, features=("api:rate:minute:10", "api:rate:day:12"))
    key = await make_api_key(client, tenant.headers, product)
    r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    assert r.status_code == 200
    # minute: 9 left, resets in 34 s; day: 11 left
    assert r.headers["ratelimit"] == '"calls_minute";r=9;t=34'
    assert r.headers["ratelimit-policy"] == '"calls_minute";q=10;w=60'
    assert r.headers["x-ratelimit-limit"] == "10" and r.headers["x-ratelimit-remaining"] == "9"
    assert r.headers["x-ratelimit-reset"] == str(_at(2026, 3, 14, 15, 10, 0))
    clock.advance(60)
    for _ in range(2):
        r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    assert r.headers["ratelimit"] == '"calls_minute";r=8;t=34'  # minute: 8 left, day: 9 left
    clock.advance(60)
    for _ in range(2):
        r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    # day: 12 - 5 = 7 left, minute: 8 left: the day is the window closest to its limit
    assert r.status_code == 200
    assert r.headers["ratelimit"] == f'"calls_day";r=7;t={_at(2026, 3, 15, 0, 0, 0) - int(clock.now())}'
    assert r.headers["ratelimit-policy"] == '"calls_day";q=12;w=86400'
    # the read-only check answers the same fields
    r = await client.get(f"/api/apilicense/validate/{key}", headers=tenant.headers)
    assert r.headers["ratelimit"].startswith('"calls_day";r=7;')


async def test_allowed_answer_of_a_quota_only_key_names_the_quota(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=5)
    r = await client.post(VALIDATE, json={"apiKey": key, "units": 2}, headers=tenant.headers)
    assert r.status_code == 200
    assert r.headers["ratelimit"] == '"quota";r=3' and r.headers["ratelimit-policy"] == '"quota";q=5'
    assert r.headers["x-ratelimit-remaining"] == "3" and "x-ratelimit-reset" not in r.headers
    unlimited = await make_api_key(client, tenant.headers, product)
    r = await client.post(VALIDATE, json={"apiKey": unlimited}, headers=tenant.headers)
    assert r.status_code == 200 and "ratelimit" not in r.headers  # nothing limited, nothing to name


async def test_api_key_endpoints_raise_the_documents_events(client, tenant, other_tenant, settings):
    """The ExisOne webhook overview lists `api.license.created` and `api.license.revoked`."""
    import orjson

    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    for _ in range(2):
        assert (await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)).status_code == 200
    assert (await client.delete(f"/api/apilicense/{key}", headers=other_tenant.headers)).status_code == 404
    async with db_connection(settings.database_url) as conn:
        rows = await conn.fetch("SELECT tenant_id, type, data FROM events ORDER BY id")
    assert [(str(r["tenant_id"]), r["type"]) for r in rows] == [(tenant.id, "api.license.created"),
                                                               (tenant.id, "api.license.revoked")]
    created = orjson.loads(rows[0]["data"])
    assert created["productId"] == product and key not in rows[0]["data"]  # the key itself never leaves


async def test_keys_issued_elsewhere_can_be_imported_and_validate(client, tenant, other_tenant, settings):
    """Issue 11: "a publisher moving from another licensing server brings its customers' existing
    keys (the documents' keys look like XXXX-XXXX-XXXX-XXXX). Add an import endpoint that registers
    existing API keys (stored as digests, like ours) with their terms, and make validate accept them"."""

    from quota_gateway.formats.digests import sha256 as key_digest

    product = await make_product(client, tenant.headers, features=("api:rate:minute:100", "api:tier:premium"))
    body = {"productId": product, "keys": [
        {"apiKey": "AAAA-BBBB-CCCC-DDDD", "maxApiCalls": 10, "usedApiCalls": 7, "email": "a@example.com",
         "clientIdentifier": "legacy-1"},
        {"apiKey": "k3y-from-elsewhere.v2", "expirationDate": "2028-01-01T00:00:00Z"},
    ]}
    r = await client.post("/api/apilicense/import", json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 2 and r.json()["items"][0]["apiKey"] == "AAAA…DDDD"

    # validate accepts them as typed by a customer: case, dashes and spaces do not matter
    r = await client.post(VALIDATE, json={"apiKey": "aaaa bbbb cccc dddd", "units": 2}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["quota"] == {"limit": 10, "used": 9, "remaining": 1}  # the usage brought along counts
    assert answer["features"] == ["api:rate:minute:100", "api:tier:premium"]
    assert answer["rateLimits"]["calls_minute"]["used"] == 1
    r = await client.post(VALIDATE, json={"apiKey": "AAAA-BBBB-CCCC-DDDD", "units": 2}, headers=tenant.headers)
    assert r.status_code == 429 and r.json()["errorCode"] == "quota_exhausted"
    r = await client.post(VALIDATE, json={"apiKey": "K3Y-FROM-ELSEWHERE.V2"}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["expiresAt"] == "2028-01-01T00:00:00Z"

    # stored as digests, like ours; another tenant's token does not see them
    async with db_connection(settings.database_url) as conn:
        stored = await conn.fetch("SELECT key_digest, key_hint, imported FROM api_licenses ORDER BY id")
    assert [bytes(row["key_digest"]) for row in stored] == [key_digest("AAAABBBBCCCCDDDD"),
                                                            key_digest("K3YFROMELSEWHERE.V2")]
    assert all(row["imported"] for row in stored) and "AAAABBBBCCCCDDDD" not in str([dict(row) for row in stored])
    r = await client.post(VALIDATE, json={"apiKey": "AAAA-BBBB-CCCC-DDDD"}, headers=other_tenant.headers)
    assert r.status_code == 404 and r.json()["errorCode"] == "not_found"

    # management endpoints take imported keys too
    shown = await client.get("/api/apilicense/AAAA-BBBB-CCCC-DDDD", headers=tenant.headers)
    assert shown.status_code == 200 and shown.json()["imported"] is True
    assert (await client.delete("/api/apilicense/aaaabbbbccccdddd", headers=tenant.headers)).status_code == 200
    r = await client.post(VALIDATE, json={"apiKey": "AAAA-BBBB-CCCC-DDDD"}, headers=tenant.headers)
    assert r.status_code == 403 and r.json()["errorCode"] == "revoked"


async def test_import_is_all_or_nothing_and_checks_its_input(client, tenant):
    product = await make_product(client, tenant.headers)
    first = await client.post("/api/apilicense/import", json={"productId": product, "keys": [
        {"apiKey": "AAAA-BBBB-CCCC-DDDD"}]}, headers=tenant.headers)
    assert first.status_code == 201
    again = await client.post("/api/apilicense/import", json={"productId": product, "keys": [
        {"apiKey": "EEEE-FFFF-GGGG-HHHH"}, {"apiKey": "aaaa-bbbb-cccc-dddd"}]}, headers=tenant.headers)
    assert again.status_code == 409 and again.json()["error"] == "key_exists"
    assert (await client.post(VALIDATE, json={"apiKey": "EEEE-FFFF-GGGG-HHHH"},
                              headers=tenant.headers)).status_code == 404  # nothing of the batch was kept
    ours = await make_api_key(client, tenant.headers, product)
    for bad, code in [("short", "invalid_key_format"), ("has/slash-1234", "invalid_key_format"),
                      (ours, "invalid_key_format"), ("ÄÄÄÄ-BBBB-CCCC", "invalid_key_format")]:
        r = await client.post("/api/apilicense/import", json={"productId": product, "keys": [{"apiKey": bad}]},
                              headers=tenant.headers)
        assert r.status_code == 400 and r.json()["error"] == code, (bad, r.text)
    r = await client.post("/api/apilicense/import", json={"productId": product, "keys": [
        {"apiKey": "IIII-JJJJ-KKKK"}, {"apiKey": "iiiijjjjkkkk"}]}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "duplicate_key"
    r = await client.post("/api/apilicense/import", json={"productId": 999999, "keys": [{"apiKey": "IIII-JJJJ-KKKK"}]},
                          headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "product_not_found"
    # a mistyped key of ours is still refused before any I/O, not looked up as an imported key
    mistyped = ours[:10] + ("A" if ours[10] != "A" else "B") + ours[11:]
    r = await client.post(VALIDATE, json={"apiKey": mistyped}, headers=tenant.headers)
    assert r.status_code == 404

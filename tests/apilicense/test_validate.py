"""The quota hot path: answers, limits, windows, expiry, revoke, reset, idempotency, bad input."""

from __future__ import annotations

import asyncio
import calendar

import pytest

from conftest import METRICS_HEADERS, make_api_key, make_product
from quota_gateway import _fastpath_py

VALIDATE = "/api/apilicense/validate"


def _at(*parts) -> int:
    return calendar.timegm((*parts, 0, 0, 0)[:6])


async def _validate(client, headers, key, **body):
    return await client.post(VALIDATE, json={"apiKey": key, **body}, headers=headers)


async def test_valid_answer_shape(client, tenant, clock):
    clock.set(_at(2026, 3, 14, 15, 9, 26))
    product = await make_product(client, tenant.headers, features=("api:rate:minute:10", "api:units:day:100",
                                                                     "api:tier:premium"))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=1000, validityDays=30)
    r = await _validate(client, tenant.headers, key, units=3)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "isValid": True,
        "unitsConsumed": 3,
        "quota": {"limit": 1000, "used": 3, "remaining": 997},
        "rateLimits": {
            "calls_minute": {"limit": 10, "used": 1, "remaining": 9, "resetsAt": "2026-03-14T15:10:00Z"},
            "units_day": {"limit": 100, "used": 3, "remaining": 97, "resetsAt": "2026-03-15T00:00:00Z"},
        },
        "features": ["api:rate:minute:10", "api:units:day:100", "api:tier:premium"],
        "expiresAt": "2026-04-13T15:09:26Z",
    }


async def test_no_quota_no_expiry(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    body = (await _validate(client, tenant.headers, key)).json()
    assert body["quota"] == {"limit": None, "used": 1, "remaining": None}
    assert body["expiresAt"] is None and body["rateLimits"] == {}


async def test_large_counts_render_as_plain_integers(client, tenant):
    product = await make_product(client, tenant.headers, features=("api:units:month:5000000000000",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10**13)
    body = (await _validate(client, tenant.headers, key, units=1_000_000)).json()
    assert body["quota"] == {"limit": 10**13, "used": 1_000_000, "remaining": 10**13 - 1_000_000}
    assert body["rateLimits"]["units_month"]["remaining"] == 5 * 10**12 - 1_000_000


@pytest.mark.parametrize("stale", ["packed", "text-numbers"], ids=["other-packed-format", "format-3-numbers-as-text"])
async def test_metadata_cached_in_an_older_format_is_refilled(app, client, tenant, clock, stale):
    clock.set(_at(2026, 3, 14, 15, 9, 26))
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, validityDays=30)
    await _validate(client, tenant.headers, key)
    from quota_gateway.apilicense.keyspace import LicenseRef

    entry = LicenseRef(_fastpath_py.normalize_api_key(key)).entry
    redis = app.state.services.redis
    if stale == "packed":
        await redis.eval("redis.call('HSET', KEYS[1], 'm', cmsgpack.pack('2', '1'))", 1, entry)
    else:  # format 3 held the same fields as 5, its numbers as text
        await redis.eval("redis.call('HSET', KEYS[1], 'm', cmsgpack.pack('3', '1', '1', ARGV[1], '0', '0', '-1', '0', "
                         "'[]', 'P', '', '0', '0', '0', '0', '0', '0', '0', '0'))", 1, entry, tenant.id)
    body = (await _validate(client, tenant.headers, key)).json()
    assert body["expiresAt"] == "2026-04-13T15:09:26Z" and body["quota"]["used"] == 2


async def test_counters_of_format_5_are_taken_over_after_an_upgrade(app, client, tenant, clock):
    """Format 5 kept a key in four strings (metadata, generation, backup, counters by license id);
    the first fill after an upgrade takes its counters over (window counts included) and drops them."""
    from quota_gateway.apilicense.keyspace import LicenseRef

    clock.set(_at(2026, 3, 14, 15, 9, 26))
    product = await make_product(client, tenant.headers, features=("api:rate:minute:3",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    ref = LicenseRef(_fastpath_py.normalize_api_key(key))
    redis = app.state.services.redis
    await redis.delete(ref.entry)  # as a format-5 gateway left the key: 4 used, 2 of them this minute
    minute = _at(2026, 3, 14, 15, 9, 0)
    async with app.state.services.pool.acquire() as conn:
        license_id = await conn.fetchval("SELECT id FROM api_licenses WHERE key_digest = $1", ref.digest)
    legacy = ref.legacy_keys(license_id)
    await redis.eval("local t = tonumber(ARGV[1]) redis.call('SET', KEYS[1], cmsgpack.pack(4, t, 2, 0, 0, 0, 0, 0, 0, "
                     "t, 9, 0, 0, 0, 0, 0, 0)) for i = 2, 4 do redis.call('SET', KEYS[i], 'x') end",
                     4, legacy[3], *legacy[:3], minute)
    body = (await _validate(client, tenant.headers, key)).json()
    assert body["quota"]["used"] == 5 and body["rateLimits"]["calls_minute"]["remaining"] == 0
    assert await redis.exists(*legacy) == 0
    assert (await _validate(client, tenant.headers, key)).json()["errorCode"] == "rate_limit_minute"


@pytest.mark.parametrize("key", ["qgk_" + "0" * 28, "nonsense", "qgk_7ZZZZZZZZZZZZZZZZZZZZZZZZZZZ"])
async def test_unknown_and_mistyped_keys_are_not_found(client, tenant, key):
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 404
    assert r.json()["isValid"] is False and r.json()["errorCode"] == "not_found"


async def test_checksum_valid_but_unknown_key_is_not_found(client, tenant):
    key = _fastpath_py.generate_api_key(b"\x01" * 16)
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 404 and r.json()["errorCode"] == "not_found"


async def test_mistyped_key_never_reaches_redis(app, client, tenant):
    from quota_gateway.apilicense.keyspace import LicenseRef

    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    redis = app.state.services.redis
    mistyped = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    assert (await _validate(client, tenant.headers, mistyped)).status_code == 404
    # had it been looked up, its (negative) metadata would be cached under the raw string's digest
    created = LicenseRef(_fastpath_py.normalize_api_key(key)).entry.encode()
    assert [k async for k in redis.scan_iter(match="qg:*:k:*")] == [created]
    unknown = _fastpath_py.generate_api_key(b"\x02" * 16)  # checksum-valid: does reach Redis
    assert (await _validate(client, tenant.headers, unknown)).status_code == 404
    assert [k async for k in redis.scan_iter(match=LicenseRef(unknown).entry)] != []


async def test_key_of_another_tenant_is_not_found(client, tenant, other_tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    r = await _validate(client, other_tenant.headers, key)
    assert r.status_code == 404 and r.json()["errorCode"] == "not_found"
    assert (await client.get(f"/api/apilicense/{key}", headers=other_tenant.headers)).status_code == 404
    listed = (await client.get("/api/apilicense", headers=other_tenant.headers)).json()
    assert listed["totalCount"] == 0


async def test_forgiving_key_input(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    assert (await _validate(client, tenant.headers, f" {key.lower()} ")).status_code == 200


async def test_lifetime_quota_exhausted_is_429_with_headers(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=5, validityDays=10)
    assert (await _validate(client, tenant.headers, key, units=5)).status_code == 200
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 429
    body = r.json()
    assert body["errorCode"] == "quota_exhausted" and body["isValid"] is False
    assert body["quota"] == {"limit": 5, "used": 5, "remaining": 0}
    assert body["retryAfterSeconds"] > 0
    assert int(r.headers["retry-after"]) == body["retryAfterSeconds"]
    assert r.headers["x-ratelimit-limit"] == "5" and r.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-reset" in r.headers
    assert r.headers["ratelimit"].startswith('"quota";r=0;t=')
    assert r.headers["ratelimit-policy"] == '"quota";q=5'


async def test_request_larger_than_remaining_quota_consumes_nothing(client, tenant):
    product = await make_product(client, tenant.headers, features=("api:units:hour:1000",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    assert (await _validate(client, tenant.headers, key, units=8)).status_code == 200
    assert (await _validate(client, tenant.headers, key, units=3)).status_code == 429
    body = (await _validate(client, tenant.headers, key, units=2)).json()
    assert body["quota"]["used"] == 10 and body["rateLimits"]["units_hour"]["used"] == 10


@pytest.mark.parametrize("period,seconds", [("minute", 60), ("hour", 3600), ("day", 86400)])
async def test_window_limit_and_roll_over(client, tenant, clock, period, seconds):
    clock.set(_at(2026, 5, 5, 5, 5, 5))
    product = await make_product(client, tenant.headers, features=(f"api:rate:{period}:3",))
    key = await make_api_key(client, tenant.headers, product)
    for _ in range(3):
        assert (await _validate(client, tenant.headers, key)).status_code == 200
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 429 and r.json()["errorCode"] == f"rate_limit_{period}"
    _, end = _fastpath_py.window_bounds(int(clock.now()), period)
    assert r.json()["retryAfterSeconds"] == end - int(clock.now())
    assert r.headers["ratelimit-policy"] == f'"calls_{period}";q=3;w={seconds}'
    clock.set(end - 1)
    assert (await _validate(client, tenant.headers, key)).status_code == 429
    clock.set(end)
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 200 and r.json()["rateLimits"][f"calls_{period}"]["used"] == 1


async def test_calendar_month_window_crosses_year_end(client, tenant, clock):
    clock.set(_at(2026, 12, 31, 23, 59, 0))
    product = await make_product(client, tenant.headers, features=("api:units:month:10",))
    key = await make_api_key(client, tenant.headers, product)
    r = await _validate(client, tenant.headers, key, units=10)
    assert r.json()["rateLimits"]["units_month"]["resetsAt"] == "2027-01-01T00:00:00Z"
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 429 and r.json()["errorCode"] == "rate_limit_month"
    assert r.json()["retryAfterSeconds"] == 60
    clock.set(_at(2027, 1, 1, 0, 0, 0))
    r = await _validate(client, tenant.headers, key, units=10)
    assert r.status_code == 200
    assert r.json()["rateLimits"]["units_month"]["resetsAt"] == "2027-02-01T00:00:00Z"


async def test_failed_window_consumes_from_no_other_window(client, tenant, clock):
    clock.set(_at(2026, 5, 5, 5, 5, 5))
    product = await make_product(client, tenant.headers, features=("api:rate:minute:100", "api:units:minute:5"))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=1000)
    assert (await _validate(client, tenant.headers, key, units=4)).status_code == 200
    r = await _validate(client, tenant.headers, key, units=2)
    assert r.status_code == 429 and r.json()["errorCode"] == "rate_limit_minute"
    body = (await _validate(client, tenant.headers, key, units=1)).json()
    assert body["quota"]["used"] == 5
    assert body["rateLimits"]["calls_minute"]["used"] == 2
    assert body["rateLimits"]["units_minute"]["used"] == 5


async def test_expiry(client, tenant, clock):
    clock.set(_at(2026, 1, 1, 0, 0, 0))
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, validityDays=1)
    assert (await _validate(client, tenant.headers, key)).status_code == 200
    clock.advance(86400)
    r = await _validate(client, tenant.headers, key)
    assert r.status_code == 403 and r.json()["errorCode"] == "expired"


async def test_revoke_takes_effect_on_next_request_on_every_process(settings, tenant, clock):
    from conftest import running_app

    async with running_app(settings, clock) as (_, first), running_app(settings, clock) as (_, second):
        product = await make_product(first, tenant.headers)
        key = await make_api_key(first, tenant.headers, product)
        assert (await _validate(second, tenant.headers, key)).status_code == 200
        assert (await first.delete(f"/api/apilicense/{key}", headers=tenant.headers)).status_code == 200
        r = await _validate(second, tenant.headers, key)
        assert r.status_code == 403 and r.json()["errorCode"] == "revoked"
        listed = (await first.get("/api/apilicense?status=revoked", headers=tenant.headers)).json()
        assert listed["totalCount"] == 1


async def test_limit_and_feature_changes_take_effect_on_next_request(client, tenant):
    product = await make_product(client, tenant.headers, features=("api:rate:minute:100",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    assert (await _validate(client, tenant.headers, key, units=2)).status_code == 200
    r = await client.patch(f"/api/apilicense/{key}", json={"maxApiCalls": 2}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["maxApiCalls"] == 2
    assert (await _validate(client, tenant.headers, key)).json()["errorCode"] == "quota_exhausted"
    await client.patch(f"/api/apilicense/{key}", json={"maxApiCalls": None}, headers=tenant.headers)
    assert (await _validate(client, tenant.headers, key)).status_code == 200
    f = await client.post(f"/api/product/{product}/features", json={"name": "api:rate:minute:1"}, headers=tenant.headers)
    assert f.status_code == 201
    r = await _validate(client, tenant.headers, key)
    assert r.json()["errorCode"] == "rate_limit_minute"  # 2 calls made this minute already, limit now 1


async def test_a_window_limit_added_later_counts_what_the_window_already_saw(client, tenant, clock):
    clock.set(_at(2026, 5, 5, 10, 20, 0))
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    for _ in range(3):
        assert (await _validate(client, tenant.headers, key, units=2)).status_code == 200
    for rule in ("api:rate:hour:5", "api:units:hour:8"):
        assert (await client.post(f"/api/product/{product}/features", json={"name": rule},
                                  headers=tenant.headers)).status_code == 201
    body = (await _validate(client, tenant.headers, key, units=2)).json()
    assert (body["rateLimits"]["calls_hour"]["used"], body["rateLimits"]["units_hour"]["used"]) == (4, 8)
    r = await _validate(client, tenant.headers, key, units=2)
    assert r.status_code == 429 and r.json()["errorCode"] == "rate_limit_hour"
    clock.set(_at(2026, 5, 5, 11, 0, 0))  # a new hour: nothing counted in it yet
    assert (await _validate(client, tenant.headers, key, units=2)).json()["rateLimits"]["units_hour"]["used"] == 2


async def test_patch_keeps_absent_fields(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10, validityDays=5)
    r = await client.patch(f"/api/apilicense/{key}", json={"maxApiCalls": 20}, headers=tenant.headers)
    assert r.json()["maxApiCalls"] == 20 and r.json()["expirationDate"] is not None


@pytest.mark.parametrize("period", ["lifetime", "minute", "hour", "day", "month", "all"])
async def test_reset_each_period(client, tenant, clock, period):
    clock.set(_at(2026, 7, 7, 7, 7, 7))
    product = await make_product(client, tenant.headers, features=(
        "api:rate:minute:2", "api:rate:hour:2", "api:rate:day:2", "api:rate:month:2"))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=2)
    for _ in range(2):
        assert (await _validate(client, tenant.headers, key)).status_code == 200
    r = await client.post(f"/api/apilicense/{key}/reset", params={"periodType": period}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    usage = (await client.get(f"/api/apilicense/{key}/usage", headers=tenant.headers)).json()
    assert usage["quota"]["used"] == (0 if period in ("lifetime", "all") else 2)
    for name, window in usage["rateLimits"].items():
        reset_here = period == "all" or name == f"calls_{period}"
        assert window["used"] == (0 if reset_here else 2), name


async def test_a_look_at_zero_units_is_not_refused_by_full_limits(app, client, tenant):
    """What the usage and reset endpoints take: the numbers, never a denial of the look itself."""
    from quota_gateway.apilicense.keyspace import LicenseRef

    product = await make_product(client, tenant.headers, features=("api:rate:minute:1",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=1)
    assert (await _validate(client, tenant.headers, key)).status_code == 200
    engine = app.state.services.quota
    outcome = await engine.run(LicenseRef(_fastpath_py.normalize_api_key(key)), tenant.id, 0, False)
    assert (outcome.code, outcome.used, outcome.windows) == ("ok", 1, [(0, 1, 1)])


async def test_reset_bad_period_is_400(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    r = await client.post(f"/api/apilicense/{key}/reset", params={"periodType": "week"}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_field"


async def test_check_only_consumes_nothing(client, tenant):
    product = await make_product(client, tenant.headers, features=("api:rate:minute:5",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=3)
    for _ in range(3):
        r = await _validate(client, tenant.headers, key, consumeUnits=False)
        assert r.status_code == 200 and r.json()["unitsConsumed"] == 0 and r.json()["quota"]["used"] == 0
    r = await client.get(f"/api/apilicense/validate/{key}", params={"units": 3}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["quota"]["used"] == 0
    r = await client.get(f"/api/apilicense/validate/{key}", params={"units": 4}, headers=tenant.headers)
    assert r.status_code == 429 and r.json()["errorCode"] == "quota_exhausted"
    assert (await _validate(client, tenant.headers, key, units=3)).status_code == 200


async def test_idempotent_retry_returns_first_answer_without_consuming(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    headers = {**tenant.headers, "Idempotency-Key": "req-42"}
    first = await client.post(VALIDATE, json={"apiKey": key, "units": 4}, headers=headers)
    again = await client.post(VALIDATE, json={"apiKey": key, "units": 4}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = await client.post(VALIDATE, json={"apiKey": key, "units": 1}, headers=tenant.headers)
    assert other.json()["quota"]["used"] == 5


async def test_idempotent_replays_keep_big_counts_and_denials_exact(client, tenant):
    product = await make_product(client, tenant.headers, features=("api:units:month:5000000000000",))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=2**53 - 1)
    headers = {**tenant.headers, "Idempotency-Key": "big"}
    first = await client.post(VALIDATE, json={"apiKey": key, "units": 999_999}, headers=headers)
    again = await client.post(VALIDATE, json={"apiKey": key, "units": 999_999}, headers=headers)
    assert first.content == again.content and first.json()["quota"]["remaining"] == 2**53 - 1 - 999_999
    await client.patch(f"/api/apilicense/{key}", json={"maxApiCalls": 999_999}, headers=tenant.headers)
    denied = [await client.post(VALIDATE, json={"apiKey": key}, headers={**tenant.headers, "Idempotency-Key": "no"})
              for _ in range(2)]
    assert [r.status_code for r in denied] == [429, 429] and denied[0].content == denied[1].content
    assert denied[1].headers["ratelimit"] == '"quota";r=0;t=86400'


async def test_concurrent_idempotent_retries_consume_once(client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=100)
    headers = {**tenant.headers, "Idempotency-Key": "same"}
    results = await asyncio.gather(*(client.post(VALIDATE, json={"apiKey": key, "units": 7}, headers=headers)
                                     for _ in range(20)))
    assert {r.json()["quota"]["used"] for r in results} == {7}


BAD_INPUTS = [
    ({"units": 0}, "invalid_field"),
    ({"units": -1}, "invalid_field"),
    ({"units": 10**12}, "invalid_field"),
    ({"units": 1.5}, "invalid_field"),
    ({"units": "2"}, "invalid_field"),
    ({"units": True}, "invalid_field"),
    ({"consumeUnits": "yes"}, "invalid_field"),
    ({"apiKey": None}, "missing_field"),
    ({"apiKey": 123}, "invalid_field"),
    ({"apiKey": ""}, "invalid_field"),
    ({"apiKey": "x" * 500}, "invalid_field"),
]


@pytest.mark.parametrize("patch,code", BAD_INPUTS, ids=[f"{next(iter(p))}={next(iter(p.values()))!r}"[:40] for p, _ in BAD_INPUTS])
async def test_bad_input_is_400(client, tenant, patch, code):
    body = {"apiKey": "qgk_" + "0" * 28, **patch}
    if patch.get("apiKey", "") is None:
        body.pop("apiKey")
    r = await client.post(VALIDATE, json=body, headers=tenant.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code


@pytest.mark.parametrize("raw,code,status", [
    (b"{", "invalid_json", 400), (b"", "invalid_json", 400), (b"[1]", "invalid_body", 400),
    (b'{"apiKey": "' + b"x" * 70_000 + b'"}', "body_too_large", 413),
])
async def test_bad_bodies(client, tenant, raw, code, status):
    r = await client.post(VALIDATE, content=raw, headers=tenant.headers)
    assert r.status_code == status and r.json()["error"] == code


async def test_auth_on_the_hot_path(client, tenant, settings):
    assert (await client.post(VALIDATE, json={"apiKey": "x"})).status_code == 401
    generate_only = await tenant.token_with(settings.database_url, ["generate"])
    r = await client.post(VALIDATE, json={"apiKey": "x"}, headers=generate_only)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"


async def test_metrics_count_outcomes_and_near_limit(client, tenant):
    product = await make_product(client, tenant.headers, name="Metered")
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=5)
    for _ in range(6):
        await _validate(client, tenant.headers, key)
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert 'qg_apilicense_validations_total{code="ok",product="Metered",result="allowed"} 5.0' in text
    assert 'qg_apilicense_validations_total{code="quota_exhausted",product="Metered",result="denied"} 1.0' in text
    assert 'qg_apilicense_near_limit_total{product="Metered"}' in text
    assert 'route="/api/apilicense/validate"' in text


async def test_malformed_rule_feature_is_refused_at_creation(client, tenant):
    product = await make_product(client, tenant.headers)
    for name in ("api:rate:week:5", "api:rate:minute:0", "api:units:day:x", "api:rate:minute"):
        r = await client.post(f"/api/product/{product}/features", json={"name": name}, headers=tenant.headers)
        assert r.status_code == 400 and r.json()["error"] == "invalid_feature", name

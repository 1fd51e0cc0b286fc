"""Unauthenticated routes: per-address request and failed-lookup windows (429 + Retry-After),
client addresses behind trusted proxies only, and the negative cache (a guessed key or
organization reaches Postgres once per window, scoped to the organization asking)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis as redis_sync

from conftest import METRICS_HEADERS, db_connection, running_app
from leases.test_leases import _floating_key
from quota_gateway.abuse import negative
from quota_gateway.abuse.clientaddr import ClientAddresses, limit_key
from quota_gateway.licensing import keys as key_format


def _scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"client": (peer, 5000), "headers": headers}


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    addresses = ClientAddresses("10.0.0.0/8, ::1")
    assert addresses.of(_scope("198.51.100.7", "203.0.113.9")) == "198.51.100.7"  # not a proxy: header ignored
    assert addresses.of(_scope("10.1.2.3", "203.0.113.9")) == "203.0.113.9"
    # the client's own claim sits left of what the trusted proxies appended
    assert addresses.of(_scope("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.9.9.9")) == "203.0.113.9"
    assert addresses.of(_scope("10.1.2.3", "10.5.5.5")) == "10.5.5.5"  # only proxies: the farthest one
    assert addresses.of(_scope("10.1.2.3", "not-an-address")) == "10.1.2.3"
    assert addresses.of(_scope("::1", "2001:db8::1")) == "2001:db8::1"
    assert ClientAddresses("").of(_scope("10.1.2.3", "203.0.113.9")) == "10.1.2.3"
    with pytest.raises(ValueError, match="QG_TRUSTED_PROXIES"):
        ClientAddresses("10.0.0.0/8,bogus")


async def test_failed_lookups_per_address_get_429_until_the_window_ends(settings, tenant, clock):
    limited = settings.with_(client_failures_per_minute=3, trusted_proxies="127.0.0.1/32")
    async with running_app(limited, clock) as (_, client):
        clock.set(1_800_000_000 - 1_800_000_000 % 60 + 10)  # 50 s left in this window
        assert (await client.get("/api/customers", headers=tenant.headers)).status_code == 200  # verified once
        url = f"/licensing/{tenant.id}/key/validate"
        for _ in range(3):
            r = await client.get(url, params={"key": key_format.generate()})
            assert r.status_code == 200 and r.json()["errorCode"] == "KEY_INVALID"
        r = await client.get(url, params={"key": key_format.generate()})
        assert r.status_code == 429
        assert r.headers["retry-after"] == "50"
        assert r.json() == {"error": "too_many_failed_lookups", "message": r.json()["message"], "retryAfter": 50}
        r = await client.get("/licensing/no-such-org/signature.pem")  # every unauthenticated route
        assert r.status_code == 429
        # another client behind the trusted proxy is its own address
        other = {"X-Forwarded-For": "203.0.113.9"}
        assert (await client.get(url, params={"key": key_format.generate()}, headers=other)).status_code == 200
        # authenticated routes are not limited per address (a token verified before is never refused)
        assert (await client.get("/api/customers", headers=tenant.headers)).status_code == 200
        clock.advance(50)
        r = await client.get(url, params={"key": key_format.generate()})
        assert r.status_code == 200


async def test_unknown_organizations_count_as_failed_lookups(settings, clock):
    async with running_app(settings.with_(client_failures_per_minute=2), clock) as (_, client):
        for _ in range(2):
            assert (await client.get("/licensing/ghost/signature.pem")).status_code == 404
        assert (await client.get("/licensing/ghost/signature.pem")).status_code == 429


async def test_requests_per_address_are_limited(settings, tenant, clock):
    async with running_app(settings.with_(client_requests_per_minute=4), clock) as (_, client):
        statuses = [(await client.get(f"/licensing/{tenant.id}/signature.pem")).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        r = await client.get("/portal/acme/login")
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests" and "retry-after" in r.headers
        clock.advance(60)
        assert (await client.get(f"/licensing/{tenant.id}/signature.pem")).status_code == 200


async def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(settings, tenant, clock):
    async with running_app(settings.with_(client_requests_per_minute=2), clock) as (_, client):
        url = f"/licensing/{tenant.id}/signature.pem"
        statuses = [(await client.get(url, headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
                    for i in range(3)]
        assert statuses == [200, 200, 429]


async def test_a_wrong_sign_in_code_is_a_failed_lookup(settings, tenant, clock):
    async with running_app(settings.with_(client_failures_per_minute=1), clock) as (_, client):
        form = await client.get("/portal/acme/login/code")
        assert form.status_code == 200
        csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        r = await client.post("/portal/acme/login/code", data={"email": "x@example.com", "code": "000000",
                                                                "csrf_token": csrf})
        assert r.status_code in (400, 403)
        assert (await client.get("/portal/acme/login")).status_code == 429


async def test_a_guessed_key_reaches_postgres_once_per_window(client, settings, tenant, other_tenant):
    key = key_format.generate()
    url = f"/licensing/{tenant.id}/key/validate"
    assert (await client.get(url, params={"key": key})).json()["errorCode"] == "KEY_INVALID"
    # The row appears behind the service's back (nothing drops the entry): the answer comes from
    # the negative cache, proving the second guess never reached Postgres.
    async with db_connection(settings.database_url) as conn:
        customer = await conn.fetchval("INSERT INTO customers (tenant_id, name) VALUES ($1, 'c') RETURNING id",
                                       tenant.id)
        await conn.execute("INSERT INTO floating_keys (tenant_id, customer_id, key_digest, key_hint, lease_limit, "
                           "products) VALUES ($1, $2, $3, 'x', 1, '[]')", tenant.id, customer,
                           key_format.digest(key))
    assert (await client.get(url, params={"key": key})).json()["errorCode"] == "KEY_INVALID"


async def test_negative_answers_are_scoped_to_the_organization_asking(client, app, tenant, other_tenant):
    key = await _floating_key(client, other_tenant, limit=2)
    # the tenant asks for the other tenant's key: invalid here, and remembered for this tenant only
    r = await client.get(f"/licensing/{tenant.id}/key/validate", params={"key": key})
    assert r.json()["errorCode"] == "KEY_INVALID"
    r = await client.get(f"/licensing/{other_tenant.id}/key/validate", params={"key": key})
    assert r.json()["isValid"] is True
    redis = app.state.services.redis
    digest = key_format.digest(key_format.normalize(key))
    assert await negative.is_missing(redis, negative.entry("fk", tenant.id, digest))
    assert not await negative.is_missing(redis, negative.entry("fk", other_tenant.id, digest))


async def test_an_unknown_organization_is_remembered(client, app):
    assert (await client.get("/licensing/nobody-here/signature.pem")).status_code == 404
    assert await negative.is_missing(app.state.services.redis, negative.entry("org", "", "nobody-here"))


async def test_the_document_and_metrics_are_limited_the_probes_are_not(settings, clock, redis_server):
    async with running_app(settings.with_(client_requests_per_minute=3), clock) as (_, client):
        statuses = [(await client.get("/openapi.json")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        r = await client.get("/openapi.json")
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests" and "retry-after" in r.headers
        r = await client.get("/metrics", headers=METRICS_HEADERS)  # the same address's window
        assert r.status_code == 429
        # the probes: no I/O (/healthz) or a check shared by every probe within a second (/readyz)
        for _ in range(10):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        clock.advance(60)
        r = await client.get("/metrics", headers=METRICS_HEADERS)
        assert r.status_code == 200 and "qg_http_requests_total" in r.text


async def test_wrong_metrics_credentials_count_as_failed_lookups(settings, clock):
    async with running_app(settings.with_(client_failures_per_minute=2), clock) as (_, client):
        for _ in range(2):
            assert (await client.get("/metrics", headers={"Authorization": "Bearer guess"})).status_code == 401
        assert (await client.get("/metrics", headers=METRICS_HEADERS)).status_code == 429


def _pings(redis_server) -> int:
    stats = redis_sync.Redis.from_url(redis_server.url).info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_readiness_is_checked_at_most_once_a_second(client, clock, redis_server):
    before = _pings(redis_server)
    answers = await asyncio.gather(*[client.get("/readyz") for _ in range(20)])
    assert {r.status_code for r in answers} == {200}
    assert answers[0].json() == {"status": "ready", "checks": {"redis": "ok", "postgres": "ok"}}
    assert _pings(redis_server) - before == 1
    clock.advance(0.5)
    assert (await client.get("/readyz")).status_code == 200
    assert _pings(redis_server) - before == 1
    clock.advance(0.6)
    assert (await client.get("/readyz")).status_code == 200
    assert _pings(redis_server) - before == 2


async def test_the_document_is_served_from_bytes_made_once(app, client):
    from quota_gateway.jsonio import dumps

    first, second = await client.get("/openapi.json"), await client.get("/openapi.json")
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    assert first.content == second.content
    spec = first.json()
    assert dumps(spec) == first.content and spec["paths"]["/metrics"]["get"]["responses"]["429"]


def test_ipv6_addresses_count_by_their_64():
    assert limit_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert limit_key("2001:0db8:0001:0002::1") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert limit_key("::ffff:198.51.100.7") == "198.51.100.7"  # IPv4-mapped: the IPv4 address
    assert limit_key("198.51.100.7") == "198.51.100.7"
    assert limit_key("") == ""


async def test_one_ipv6_subnet_shares_one_window(settings, tenant, clock):
    async with running_app(settings.with_(client_requests_per_minute=2), clock) as (app, _):
        url = f"/licensing/{tenant.id}/signature.pem"

        async def get_from(address: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(address, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return (await client.get(url)).status_code

        # every address of one /64 is one client: new interface ids get no new windows
        statuses = [await get_from(f"2001:db8:1:2::{i:x}") for i in range(1, 4)]
        assert statuses == [200, 200, 429]
        assert await get_from("2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
        assert await get_from("2001:db8:1:3::1") == 200  # the next /64 is another client

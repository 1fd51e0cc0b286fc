"""The ServiceNow client against the loopback stand-in: request shapes as ServiceNow documents
them, OAuth token caching and refresh, and every failure's stable code."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl

import pytest

from quota_gateway.clock import ManualClock
from quota_gateway.devtls import ensure_dev_certificate
from quota_gateway.embedded import free_port
from quota_gateway.support.servicenow import Instance, ServiceNowClient, ServiceNowError

from .servicenow_standin import StandinServer


def basic(url: str, **changes) -> Instance:
    values = {"url": url, "table": "incident", "auth_type": "basic", "username": "integration",
              "password": "s3cret-Passw0rd", "cache_key": "t:1"}
    return Instance(**{**values, **changes})


def oauth(url: str, **changes) -> Instance:
    values = {"url": url, "table": "incident", "auth_type": "oauth", "client_id": "client-abc",
              "client_secret": "client-secret-0123456789", "cache_key": "t:1"}
    return Instance(**{**values, **changes})


@pytest.fixture
async def client():
    # loopback (allowed, as under QG_WEBHOOK_ALLOW_PRIVATE); 5 s: CI's two cores may be busy
    made = ServiceNowClient(ManualClock(), timeout=5.0, allow_private=True)
    yield made
    await made.aclose()


async def test_create_sends_the_documented_request_and_reads_the_201(servicenow, client):
    record = await client.create_record(basic(servicenow.url), {"short_description": "Crash", "urgency": "2"})
    assert len(record["sys_id"]) == 32 and record["number"].startswith("INC")
    sent = servicenow.table_requests("POST")[0]
    assert sent.path == "/api/now/table/incident"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"integration:s3cret-Passw0rd").decode()
    assert sent.json == {"short_description": "Crash", "urgency": "2"}
    assert servicenow.records()[0]["short_description"] == "Crash"


async def test_update_patches_the_record_and_journal_fields_append(servicenow, client):
    instance = basic(servicenow.url)
    sys_id = (await client.create_record(instance, {"short_description": "x"}))["sys_id"]
    await client.update_record(instance, sys_id, {"work_notes": "first"})
    await client.update_record(instance, sys_id, {"work_notes": "second"})
    patch = servicenow.table_requests("PATCH")[0]
    assert patch.path == f"/api/now/table/incident/{sys_id}" and patch.json == {"work_notes": "first"}
    assert servicenow.notes(sys_id) == ["first", "second"]
    with pytest.raises(ServiceNowError) as raised:
        await client.update_record(instance, "0" * 32, {"work_notes": "lost"})
    assert raised.value.code == "record_not_found" and raised.value.status == 404


async def test_find_by_correlation_queries_with_sysparm_query(servicenow, client):
    instance = basic(servicenow.url)
    made = await client.create_record(instance, {"correlation_id": "qg-1"})
    assert await client.find_by_correlation(instance, "qg-2") is None
    found = await client.find_by_correlation(instance, "qg-1")
    assert found is not None and found["sys_id"] == made["sys_id"] and found["number"] == made["number"]
    query = servicenow.table_requests("GET")[-1].query
    assert query["sysparm_query"] == "correlation_id=qg-1" and query["sysparm_limit"] == "1"


async def test_oauth_client_credentials_token_is_form_encoded_and_cached(servicenow, client):
    instance = oauth(servicenow.url)
    await client.create_record(instance, {"short_description": "a"})
    await client.create_record(instance, {"short_description": "b"})
    assert servicenow.token_requests == 1
    token = next(iter(servicenow.tokens))
    assert all(r.headers["authorization"] == f"Bearer {token}" for r in servicenow.table_requests())
    # ServiceNow's tokens live 1799 s: shortly before that, a new one is asked for.
    client.clock.advance(1799 - 61)
    await client.create_record(instance, {"short_description": "c"})
    assert servicenow.token_requests == 1
    client.clock.advance(2)
    await client.create_record(instance, {"short_description": "d"})
    assert servicenow.token_requests == 2


async def test_oauth_password_grant_when_a_user_is_set(servicenow_server, servicenow, client):
    seen = []
    original = servicenow.oauth_token

    async def recording(request):
        seen.append((request.headers["content-type"], dict(parse_qsl((await request.body()).decode()))))
        return await original(request)

    servicenow.oauth_token = recording  # type: ignore[method-assign]
    servicenow_server._asgi = servicenow.app()
    await client.check(oauth(servicenow.url, username="integration", password="s3cret-Passw0rd"))
    content_type, form = seen[0]
    assert content_type == "application/x-www-form-urlencoded"
    assert form == {"grant_type": "password", "client_id": "client-abc", "client_secret": "client-secret-0123456789",
                    "username": "integration", "password": "s3cret-Passw0rd"}


async def test_a_401_gets_one_new_token_and_one_retry(servicenow, client):
    instance = oauth(servicenow.url)
    await client.create_record(instance, {"short_description": "a"})
    servicenow.revoke_tokens()  # the instance forgot the cached token before it expired
    await client.create_record(instance, {"short_description": "b"})
    assert servicenow.token_requests == 2 and len(servicenow.records()) == 2
    # A 401 that persists is reported after exactly one refresh.
    servicenow.fail("POST", status=401, times=2)
    with pytest.raises(ServiceNowError) as raised:
        await client.create_record(instance, {"short_description": "c"})
    assert raised.value.code == "unauthorized" and servicenow.token_requests == 3


@pytest.mark.parametrize(("change", "fault", "code", "status"), [
    ({"client_secret": "wrong-secret-000000"}, None, "oauth_failed", 401),
    ({"table": "u_missing"}, None, "table_not_found", 400),
    ({}, 500, "server_error", 500),
    ({}, 429, "rate_limited", 429),
    ({}, 403, "forbidden", 403),
])
async def test_failures_have_stable_codes(servicenow, client, change, fault, code, status):
    if fault:
        servicenow.fail(status=fault)
    with pytest.raises(ServiceNowError) as raised:
        await client.check(oauth(servicenow.url, **change))
    assert (raised.value.code, raised.value.status) == (code, status)


async def test_basic_auth_refused_and_rights_missing(servicenow, client):
    with pytest.raises(ServiceNowError) as raised:
        await client.check(basic(servicenow.url, password="wrong"))
    assert raised.value.code == "unauthorized" and "User Not Authenticated" in raised.value.message
    servicenow.readonly_users.add("integration")
    with pytest.raises(ServiceNowError) as raised:
        await client.create_record(basic(servicenow.url), {"short_description": "x"})
    assert raised.value.code == "forbidden" and "User Not Authorized" in raised.value.message


async def test_timeout(servicenow):
    servicenow.fail("GET", delay=1.5)
    client = ServiceNowClient(ManualClock(), timeout=0.5, allow_private=True)
    try:
        with pytest.raises(ServiceNowError) as raised:
            await client.check(basic(servicenow.url))
    finally:
        await client.aclose()
    assert raised.value.code == "timeout"


async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(servicenow):
    client = ServiceNowClient(ManualClock(), timeout=5.0, allow_private=False)
    try:
        with pytest.raises(ServiceNowError) as raised:
            await client.check(basic(servicenow.url.replace("127.0.0.1", "localhost")))
    finally:
        await client.aclose()
    assert raised.value.code == "destination_refused"
    assert servicenow.table_requests("GET") == []


async def test_refused_connection(client):
    with pytest.raises(ServiceNowError) as raised:
        await client.check(basic(f"http://127.0.0.1:{free_port()}"))
    assert raised.value.code == "connect_failed"


async def test_untrusted_certificate(tmp_path, client):
    cert, key = ensure_dev_certificate(tmp_path / "tls")
    server = StandinServer(ssl_certfile=str(cert), ssl_keyfile=str(key)).start()
    try:
        with pytest.raises(ServiceNowError) as raised:
            await client.check(basic(server.url))
    finally:
        server.stop()
    assert raised.value.code == "tls_failed"


async def test_unresolvable_host(client):
    # `.invalid` never resolves (RFC 6761); nothing is sent anywhere.
    with pytest.raises(ServiceNowError) as raised:
        await client.check(basic("https://qg-test-instance.invalid"))
    assert raised.value.code == "dns_failed"

"""ServiceNow through the gateway: settings (encrypted, masked, isolated), the connection test,
incidents made from tickets (the documented field mapping), work notes for replies, urgency
updates, OAuth, and the sync surviving ServiceNow failures on the job queue's schedule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import db_connection, running_app
from quota_gateway.devtls import ensure_dev_certificate
from quota_gateway.events import jobs
from quota_gateway.support import service

from .servicenow_standin import StandinServer

TICKET = {"productName": "Weather API", "email": "jane@customer.example", "subject": "It crashes",
          "message": "The app crashes on start."}
BASIC = {"authType": "basic", "username": "integration", "password": "s3cret-Passw0rd"}
OAUTH = {"authType": "oauth", "clientId": "client-abc", "clientSecret": "client-secret-0123456789"}


@pytest.fixture
async def quiet(settings, clock):
    """The app with its job worker off: tests run due jobs themselves, moving the clock."""
    async with running_app(replace(settings, events_worker=False, servicenow_timeout=0.5), clock) as (app, client):
        yield app, client


async def _configure(client, headers, url: str, **fields) -> dict:
    r = await client.post("/api/servicenow/settings", json={"instanceUrl": url, **BASIC, **fields}, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def _ticket(client, headers, **fields) -> int:
    r = await client.post("/api/support/ticket", json={**TICKET, **fields}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["ticketId"]


async def _show(client, headers, ticket_id: int) -> dict:
    return (await client.get(f"/api/support/tickets/{ticket_id}", headers=headers)).json()


async def test_settings_are_encrypted_masked_and_per_tenant(quiet, tenant, other_tenant, servicenow, settings):
    _, client = quiet
    r = await client.post("/api/servicenow/settings", json={"instanceUrl": servicenow.url + "/", **BASIC},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json() == {"instanceUrl": servicenow.url, "authType": "basic", "username": "integration",
                        "password": "****w0rd", "clientId": None, "clientSecret": None, "grantType": None,
                        "table": "incident", "enabled": True, "updatedAt": "2027-01-15T08:00:00Z",
                        "inboundTokenSet": False}
    assert (await client.get("/api/servicenow/settings", headers=tenant.headers)).json()["password"] == "****w0rd"
    async with db_connection(settings.database_url) as conn:
        stored = bytes(await conn.fetchval("SELECT password_enc FROM servicenow_settings"))
    assert b"s3cret-Passw0rd" not in stored
    r = await client.get("/api/servicenow/settings", headers=other_tenant.headers)
    assert (r.status_code, r.json()["error"]) == (404, "servicenow_not_configured")
    assert (await client.post("/api/servicenow/test", headers=other_tenant.headers)).status_code == 404
    # Saving without the password keeps it (the test still authenticates); the answer is a 200 now.
    r = await client.post("/api/servicenow/settings", json={"instanceUrl": servicenow.url, "authType": "basic",
                                                            "username": "integration", "table": "incident"},
                          headers=tenant.headers)
    assert r.status_code == 200 and r.json()["password"] == "****w0rd"
    assert (await client.post("/api/servicenow/test", headers=tenant.headers)).json()["ok"] is True
    # OAuth, password grant: both secrets masked.
    r = await client.post("/api/servicenow/settings", json={"instanceUrl": servicenow.url, **OAUTH,
                                                            "username": "integration", "password": "s3cret-Passw0rd"},
                          headers=tenant.headers)
    assert r.json()["grantType"] == "password" and r.json()["clientSecret"] == "****6789"
    r = await client.delete("/api/servicenow/settings", headers=tenant.headers)
    assert r.status_code == 200 and r.json() == {"deleted": True}
    assert (await client.delete("/api/servicenow/settings", headers=tenant.headers)).status_code == 404


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"instanceUrl": "http://acme.service-now.com", **BASIC}, "invalid_instance_url", "instanceUrl"),
    ({"instanceUrl": "https://acme.service-now.com/api/now", **BASIC}, "invalid_instance_url", "instanceUrl"),
    ({"instanceUrl": "https://user:pw@acme.service-now.com", **BASIC}, "invalid_instance_url", "instanceUrl"),
    ({"instanceUrl": "ftp://acme.service-now.com", **BASIC}, "invalid_instance_url", "instanceUrl"),
    ({"instanceUrl": "https://acme.service-now.com", **BASIC, "table": "Incident;drop"}, "invalid_table", "table"),
    ({"instanceUrl": "https://acme.service-now.com", "authType": "basic"}, "missing_field", "username"),
    ({"instanceUrl": "https://acme.service-now.com", "authType": "basic", "username": "u"}, "missing_field", "password"),
    ({"instanceUrl": "https://acme.service-now.com", "authType": "oauth"}, "missing_field", "clientId"),
    ({"instanceUrl": "https://acme.service-now.com", "authType": "oauth", "clientId": "c"}, "missing_field",
     "clientSecret"),
    ({"instanceUrl": "https://acme.service-now.com", "authType": "token"}, "invalid_field", "authType"),
])
async def test_bad_settings_are_400(quiet, tenant, body, code, field):
    _, client = quiet
    r = await client.post("/api/servicenow/settings", json=body, headers=tenant.headers)
    assert (r.status_code, r.json()["error"], r.json().get("field")) == (400, code, field), r.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080", "https://10.1.2.3",
                                 "https://169.254.169.254", "https://[::1]:8443"])
async def test_a_private_instance_address_is_refused_unless_allowed(settings, clock, tenant, url):
    """As for webhooks (QG_WEBHOOK_ALLOW_PRIVATE): a tenant's connection reached the gateway's loopback
    and internal networks, and the connection test told open ports from closed ones."""
    async with running_app(replace(settings, webhook_allow_private=False), clock) as (_, client):
        r = await client.post("/api/servicenow/settings", json={"instanceUrl": url, **BASIC}, headers=tenant.headers)
    assert (r.status_code, r.json()["error"], r.json()["field"]) == (400, "url_not_allowed", "instanceUrl"), r.text


async def test_connection_test_says_what_failed(quiet, tenant, servicenow, tmp_path):
    _, client = quiet

    async def test_with(url: str, **fields) -> dict:
        await _configure(client, tenant.headers, url, **fields)
        r = await client.post("/api/servicenow/test", headers=tenant.headers)
        assert r.status_code == 200, r.text
        return r.json()

    assert await test_with(servicenow.url) == {"ok": True, "instanceUrl": servicenow.url, "table": "incident",
                                               "authType": "basic"}
    failed = await test_with(servicenow.url, password="wrong-password")
    assert (failed["ok"], failed["failure"], failed["remoteStatus"]) == (False, "unauthorized", 401)
    assert (await test_with(servicenow.url, table="u_missing"))["failure"] == "table_not_found"
    servicenow.fail("GET", status=403)
    assert (await test_with(servicenow.url))["failure"] == "forbidden"
    assert (await test_with(servicenow.url, **{**OAUTH, "clientSecret": "wrong-secret-000"}))["failure"] == "oauth_failed"
    assert (await test_with("https://qg-test-instance.invalid"))["failure"] == "dns_failed"
    cert, key = ensure_dev_certificate(tmp_path / "tls")
    tls = StandinServer(ssl_certfile=str(cert), ssl_keyfile=str(key)).start()
    try:
        assert (await test_with(tls.url))["failure"] == "tls_failed"
    finally:
        tls.stop()
    servicenow.fail("GET", delay=1.0)
    assert (await test_with(servicenow.url))["failure"] == "timeout"


@pytest.mark.parametrize(("priority", "urgency"), [("Critical", "1"), ("High", "2"), ("Medium", "3"), ("Low", "3")])
async def test_a_ticket_becomes_an_incident(quiet, tenant, servicenow, priority, urgency):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    ticket_id = await _ticket(client, tenant.headers, priority=priority)
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "pending"
    assert await jobs.run_due(app.state.services) >= 1
    [post] = servicenow.table_requests("POST")
    assert post.path == "/api/now/table/incident" and post.headers["content-type"] == "application/json"
    assert post.json == {"short_description": "It crashes", "description": "The app crashes on start.",
                         "caller_id": "jane@customer.example", "urgency": urgency, "category": "software",
                         "subcategory": "Weather API", "correlation_id": f"qg-{tenant.id}-{ticket_id}",
                         "correlation_display": "quota_gateway"}
    [incident] = servicenow.records()
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync == {"state": "synced", "sysId": incident["sys_id"], "number": incident["number"], "lastError": None,
                    "attempts": 1, "syncedAt": "2027-01-15T08:00:00Z"}
    assert len(servicenow.table_requests()) == 1  # nothing else was needed


async def test_replies_become_work_notes_in_order(quiet, tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    ticket_id = await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    await client.post(f"/api/support/tickets/{ticket_id}/reply", json={"message": "Please send logs."},
                      headers=tenant.headers)
    async with app.state.services.pool.acquire() as conn:
        await service.add_customer_reply(conn, tenant.id, ticket_id, TICKET["email"], "<logs attached>")
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert servicenow.notes(incident["sys_id"]) == ["Support staff replied:\n\nPlease send logs.",
                                                    "Customer jane@customer.example replied:\n\n<logs attached>"]
    patches = servicenow.table_requests("PATCH")
    assert [p.path for p in patches] == [f"/api/now/table/incident/{incident['sys_id']}"] * 2
    assert all(set(p.json) == {"work_notes"} for p in patches)
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "synced"


async def test_a_priority_change_updates_the_urgency(quiet, tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    ticket_id = await _ticket(client, tenant.headers, priority="Low")
    await jobs.run_due(app.state.services)
    await client.put(f"/api/support/tickets/{ticket_id}/priority", json={"priority": "Critical"},
                     headers=tenant.headers)
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["urgency"] == "1"
    assert servicenow.table_requests("PATCH")[-1].json == {"urgency": "1"}


async def test_servicenow_down_never_fails_the_ticket_and_is_retried_on_schedule(quiet, tenant, servicenow, clock):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    servicenow.fail("POST", status=500, times=2)
    ticket_id = await _ticket(client, tenant.headers)  # answered at once, whatever ServiceNow does
    await jobs.run_due(app.state.services)
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync["state"] == "failed" and sync["lastError"].startswith("server_error: HTTP 500")
    assert sync["attempts"] == 1 and sync["sysId"] is None
    clock.advance(5 * 60 - 1)
    assert await jobs.run_due(app.state.services) == 0  # the schedule's first retry is 5 minutes later
    clock.advance(1)
    await jobs.run_due(app.state.services)
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["attempts"] == 2
    clock.advance(30 * 60)
    await jobs.run_due(app.state.services)
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync["state"] == "synced" and sync["lastError"] is None and sync["attempts"] == 3
    assert len(servicenow.records()) == 1


async def test_a_create_whose_answer_was_lost_is_found_not_repeated(quiet, tenant, servicenow, clock):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    # The instance makes the incident but answers after the gateway stopped waiting.
    servicenow.fail("POST", delay=1.0, apply_first=True)
    ticket_id = await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync["state"] == "failed" and sync["lastError"].startswith("timeout")
    assert len(servicenow.records()) == 1
    clock.advance(5 * 60)
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert len(servicenow.table_requests("POST")) == 1  # looked up by correlation_id instead
    lookup = servicenow.table_requests("GET")[-1]
    assert lookup.query["sysparm_query"] == f"correlation_id=qg-{tenant.id}-{ticket_id}"
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync["state"] == "synced" and sync["sysId"] == incident["sys_id"] and sync["number"] == incident["number"]


async def test_oauth_token_is_reused_and_refreshed_once_on_401(quiet, tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url, **OAUTH)
    for _ in range(2):
        await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    assert servicenow.token_requests == 1 and len(servicenow.records()) == 2
    servicenow.revoke_tokens()
    await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    assert servicenow.token_requests == 2 and len(servicenow.records()) == 3


async def test_disabled_or_missing_settings_sync_nothing(quiet, tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url, enabled=False)
    ticket_id = await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "none"
    assert servicenow.requests == []
    r = await client.post(f"/api/support/tickets/{ticket_id}/sync", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (409, "servicenow_not_enabled")
    # Enabled, then deleted while a sync waits: the job finds nothing to do and does not fail.
    await _configure(client, tenant.headers, servicenow.url)
    second = await _ticket(client, tenant.headers)
    await client.delete("/api/servicenow/settings", headers=tenant.headers)
    await jobs.run_due(app.state.services)
    assert (await _show(client, tenant.headers, second))["serviceNow"]["state"] == "none"
    assert servicenow.requests == []


async def test_a_ticket_from_before_the_setup_syncs_on_request(quiet, tenant, servicenow):
    app, client = quiet
    ticket_id = await _ticket(client, tenant.headers)
    await client.post(f"/api/support/tickets/{ticket_id}/reply", json={"message": "Looking into it."},
                      headers=tenant.headers)
    await _configure(client, tenant.headers, servicenow.url)
    r = await client.post(f"/api/support/tickets/{ticket_id}/sync", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["serviceNow"]["state"] == "pending"
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["description"] == TICKET["message"]
    assert servicenow.notes(incident["sys_id"]) == ["Support staff replied:\n\nLooking into it."]


async def test_tenants_sharing_an_instance_keep_their_own_incidents(quiet, tenant, other_tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    await _configure(client, other_tenant.headers, servicenow.url, table="u_missing")
    mine = await _ticket(client, tenant.headers)
    theirs = await _ticket(client, other_tenant.headers)
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["correlation_id"] == f"qg-{tenant.id}-{mine}"
    assert (await _show(client, tenant.headers, mine))["serviceNow"]["state"] == "synced"
    failed = (await _show(client, other_tenant.headers, theirs))["serviceNow"]
    assert failed["state"] == "failed" and failed["lastError"].startswith("table_not_found")


async def test_resolve_and_reopen_move_the_incident_state(quiet, tenant, servicenow):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    ticket_id = await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["state"] == "1"  # New, as the create left it: an open ticket writes no state
    await client.post(f"/api/support/tickets/{ticket_id}/reply", json={"message": "Fixed in 2.1."},
                      headers=tenant.headers)
    r = await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"},
                         headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "pending"
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    # Resolving needs a close code and notes in ServiceNow's incident model; the last reply is a
    # work note before the state changes.
    assert (incident["state"], incident["close_code"]) == ("6", "Solved (Permanently)")
    assert incident["close_notes"] == f"Resolved in quota_gateway (ticket {ticket_id})."
    patches = [p.json for p in servicenow.table_requests("PATCH")]
    assert patches == [{"work_notes": "Support staff replied:\n\nFixed in 2.1."},
                       {"state": "6", "close_code": "Solved (Permanently)",
                        "close_notes": f"Resolved in quota_gateway (ticket {ticket_id})."}]
    await jobs.run_due(app.state.services)
    assert len(servicenow.table_requests("PATCH")) == 2  # written once
    # The customer answers from the portal: the ticket reopens, the note lands, then In Progress.
    async with app.state.services.pool.acquire() as conn:
        await service.add_customer_reply(conn, tenant.id, ticket_id, TICKET["email"], "Still crashes.")
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["state"] == "2"
    assert [p.json for p in servicenow.table_requests("PATCH")][2:] == [
        {"work_notes": "Customer jane@customer.example replied:\n\nStill crashes."}, {"state": "2"}]
    # Resolved again by staff, then reopened by staff: each change reaches the incident.
    for status, state in (("resolved", "6"), ("open", "2")):
        await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": status}, headers=tenant.headers)
        await jobs.run_due(app.state.services)
        assert servicenow.records()[0]["state"] == state
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "synced"


async def test_a_ticket_resolved_before_its_incident_exists_makes_a_resolved_incident(quiet, tenant, servicenow,
                                                                                      clock):
    app, client = quiet
    await _configure(client, tenant.headers, servicenow.url)
    servicenow.fail("POST", status=503, times=1)
    ticket_id = await _ticket(client, tenant.headers)
    await jobs.run_due(app.state.services)  # ServiceNow down: no incident yet
    await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"}, headers=tenant.headers)
    clock.advance(5 * 60)
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    assert incident["state"] == "6" and incident["close_code"] == "Solved (Permanently)"
    # A failed state write is retried like any other part of the sync.
    await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "open"}, headers=tenant.headers)
    servicenow.fail("PATCH", status=500, times=1)
    await jobs.run_due(app.state.services)
    sync = (await _show(client, tenant.headers, ticket_id))["serviceNow"]
    assert sync["state"] == "failed" and servicenow.records()[0]["state"] == "6"
    clock.advance(5 * 60)
    await jobs.run_due(app.state.services)
    assert servicenow.records()[0]["state"] == "2"
    assert (await _show(client, tenant.headers, ticket_id))["serviceNow"]["state"] == "synced"

"""ServiceNow → tickets: the business rule's posts (built by the stand-in as the README's rule
builds them) reach /hooks/servicenow/{slug}; agents' comments become staff replies mailed to the
customer, resolve and reopen follow, nothing echoes back, and stale or foreign posts change nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import running_app
from quota_gateway.events import jobs
from quota_gateway.support import inbound, service

from .test_servicenow_sync import BASIC, TICKET


@pytest.fixture
async def desk(settings, clock, smtp_server):
    server = replace(settings, events_worker=False, servicenow_timeout=0.5, smtp_host=smtp_server.host,
                     smtp_port=smtp_server.port, smtp_security="none", smtp_from="support@acme.example")
    async with running_app(server, clock) as (app, client):
        yield app, client


async def _setup(client, tenant, servicenow) -> str:
    r = await client.post("/api/servicenow/settings", json={"instanceUrl": servicenow.url, **BASIC},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/api/servicenow/inbound-token", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["inboundUrl"].endswith(f"/hooks/servicenow/{tenant.slug}")
    return r.json()["token"]


async def _forward(client, tenant, token: str, servicenow) -> list[dict]:
    """Send what the business rule posted since the last call, as ServiceNow would."""
    answers = []
    posts, servicenow.rule_posts[:] = list(servicenow.rule_posts), []
    for body in posts:
        r = await client.post(f"/hooks/servicenow/{tenant.slug}", json=body,
                              headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


async def _thread(client, tenant, ticket_id: int) -> dict:
    return (await client.get(f"/api/support/tickets/{ticket_id}", headers=tenant.headers)).json()


async def test_agent_comments_and_states_come_back_without_echo(desk, tenant, servicenow, smtp_server):
    app, client = desk
    token = await _setup(client, tenant, servicenow)
    ticket_id = (await client.post("/api/support/ticket", json=TICKET, headers=tenant.headers)).json()["ticketId"]
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    # An agent answers the customer on the incident.
    servicenow.agent_update(incident["sys_id"], {"comments": "Please reinstall <b>2.1</b>.", "state": "2"})
    [answer] = await _forward(client, tenant, token, servicenow)
    assert answer == {"received": True, "ticketId": ticket_id, "applied": ["comment"], "stale": False}
    thread = await _thread(client, tenant, ticket_id)
    reply = thread["messages"][-1]
    assert (reply["author"], reply["message"], reply["fromServiceNow"]) == ("staff", "Please reinstall <b>2.1</b>.",
                                                                             True)
    # Mailed to the customer; nothing goes back: no work note repeats the agent's own comment.
    await jobs.run_due(app.state.services)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == [TICKET["email"]] and "Please reinstall" in mail.text
    assert servicenow.table_requests("PATCH") == [] and servicenow.notes(incident["sys_id"]) == []
    # The agent resolves the incident: the ticket follows, and the sync writes no state back.
    servicenow.agent_update(incident["sys_id"], {"state": "6", "close_code": "Solved (Permanently)",
                                                 "close_notes": "Reinstalled."})
    assert [a["applied"] for a in await _forward(client, tenant, token, servicenow)] == [["resolved"]]
    thread = await _thread(client, tenant, ticket_id)
    assert thread["status"] == "resolved" and thread["resolvedAt"] is not None
    await jobs.run_due(app.state.services)
    assert servicenow.table_requests("PATCH") == []
    # The customer answers in the portal: reopened here, the note and In Progress go to ServiceNow,
    # and the rule's posts about those writes change nothing here.
    async with app.state.services.pool.acquire() as conn:
        await service.add_customer_reply(conn, tenant.id, ticket_id, TICKET["email"], "Still broken.")
    await jobs.run_due(app.state.services)
    assert servicenow.records()[0]["state"] == "2"
    echoes = await _forward(client, tenant, token, servicenow)
    assert len(echoes) == 2 and all(a["applied"] == [] for a in echoes)
    assert (await _thread(client, tenant, ticket_id))["status"] == "open"
    # The agent reopens nothing but cancels: Canceled (8) resolves the ticket too.
    servicenow.agent_update(incident["sys_id"], {"state": "8"})
    assert [a["applied"] for a in await _forward(client, tenant, token, servicenow)] == [["resolved"]]


async def test_stale_repeated_and_racing_posts_change_nothing(desk, tenant, servicenow):
    app, client = desk
    token = await _setup(client, tenant, servicenow)
    ticket_id = (await client.post("/api/support/ticket", json=TICKET, headers=tenant.headers)).json()["ticketId"]
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    servicenow.agent_update(incident["sys_id"], {"comments": "First answer."})
    servicenow.agent_update(incident["sys_id"], {"comments": "Second answer."})
    first, second = list(servicenow.rule_posts)
    servicenow.rule_posts[:] = [second, first, second]  # out of order, and a retry
    answers = await _forward(client, tenant, token, servicenow)
    # No comment is lost to the order, none is added twice; only the state waits for a newer post.
    assert [(a["applied"], a["stale"]) for a in answers] == [(["comment"], False), (["comment"], True), ([], True)]
    assert [m["message"] for m in (await _thread(client, tenant, ticket_id))["messages"]] == [
        TICKET["message"], "Second answer.", "First answer."]
    # The same journal entry under a newer sys_mod_count (a rule that resends it) is added once.
    repeat = {**second, "sys_mod_count": "99"}
    r = await client.post(f"/hooks/servicenow/{tenant.slug}", json=repeat, headers={"Authorization": f"Bearer {token}"})
    assert r.json()["applied"] == []
    # Resolved here, not yet written to the incident: a post showing the incident still open is
    # older than that change and does not reopen the ticket.
    await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"}, headers=tenant.headers)
    r = await client.post(f"/hooks/servicenow/{tenant.slug}", json={**second, "sys_mod_count": "100", "state": "2",
                                                                    "comments": None},
                          headers={"Authorization": f"Bearer {token}"})
    assert r.json()["applied"] == [] and (await _thread(client, tenant, ticket_id))["status"] == "resolved"
    await jobs.run_due(app.state.services)
    assert servicenow.records()[0]["state"] == "6"


async def test_inbound_tokens_and_bad_posts(desk, tenant, other_tenant, servicenow):
    app, client = desk
    r = await client.post("/api/servicenow/inbound-token", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (404, "servicenow_not_configured")
    token = await _setup(client, tenant, servicenow)
    assert token.startswith("qgsn_")
    shown = (await client.get("/api/servicenow/settings", headers=tenant.headers)).json()
    assert shown["inboundTokenSet"] is True and token not in str(shown)
    async with app.state.services.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT inbound_token_digest FROM servicenow_settings WHERE tenant_id = $1",
                                     tenant.id)
    assert token.encode() not in bytes(stored)
    ticket_id = (await client.post("/api/support/ticket", json=TICKET, headers=tenant.headers)).json()["ticketId"]
    await jobs.run_due(app.state.services)
    [incident] = servicenow.records()
    post = {"sys_id": incident["sys_id"], "sys_mod_count": "5", "state": "6"}

    async def send(body, auth: str | None = f"Bearer {token}", slug: str = tenant.slug):
        return await client.post(f"/hooks/servicenow/{slug}", json=body,
                                 headers={"Authorization": auth} if auth else {})

    for auth in (None, "Bearer qgsn_wrong", f"Basic {token}"):
        r = await send(post, auth)
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
    assert (await send(post, slug=other_tenant.slug)).status_code == 401   # another tenant's URL
    assert (await send(post, slug="no-such-tenant")).status_code == 401
    for body, code in (({"sys_mod_count": "1"}, "invalid_field"), ({"sys_id": "x" * 32, "sys_mod_count": "1"},
                                                                   "invalid_field"),
                       ({"sys_id": incident["sys_id"]}, "missing_field"),
                       ({"sys_id": incident["sys_id"], "sys_mod_count": "-1"}, "invalid_field"),
                       ({"sys_id": incident["sys_id"], "sys_mod_count": 1, "comments": 5}, "invalid_field")):
        r = await send(body)
        assert (r.status_code, r.json()["error"]) == (400, code), body
    r = await client.post(f"/hooks/servicenow/{tenant.slug}", content=b"[1]",
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_body")
    r = await send({"sys_id": "0" * 32, "sys_mod_count": "1", "state": "6"})
    assert (r.status_code, r.json()["error"]) == (404, "ticket_not_found")
    assert (await send(post)).json()["applied"] == ["resolved"]
    # Rotated: the old token stops working; turning the connection off stops the inbound path.
    newer = (await client.post("/api/servicenow/inbound-token", headers=tenant.headers)).json()["token"]
    assert (await send({**post, "sys_mod_count": "6"})).status_code == 401
    assert (await send({**post, "sys_mod_count": "6"}, f"Bearer {newer}")).status_code == 200
    await client.post("/api/servicenow/settings", json={"instanceUrl": servicenow.url, **BASIC, "enabled": False},
                      headers=tenant.headers)
    assert (await send({**post, "sys_mod_count": "7"}, f"Bearer {newer}")).status_code == 401
    assert ticket_id


def test_journal_entries_as_servicenow_renders_them():
    assert inbound.comment_text("2027-01-15 08:00:00 - Jane Agent (Additional comments)\nHello\nthere\n\n") == \
        "Hello\nthere"
    assert inbound.comment_text("2027-01-15 08:00:00 - Jane Agent (Work notes)\ninternal\n\n") is None
    assert inbound.comment_text("Plain text from a custom rule") == "Plain text from a custom rule"
    assert inbound.comment_text("  \n") is None


@pytest.mark.parametrize("suffix", ["²", "9" * 30])
async def test_an_odd_ticket_number_in_the_correlation_id_is_not_found(desk, tenant, servicenow, suffix):
    """'²' passes str.isdigit() but int() refuses it; 30 digits overflow PostgreSQL's bigint."""
    _, client = desk
    token = await _setup(client, tenant, servicenow)
    r = await client.post(f"/hooks/servicenow/{tenant.slug}", headers={"Authorization": f"Bearer {token}"},
                          json={"sys_id": "a" * 32, "sys_mod_count": "1", "correlation_id": f"qg-{tenant.id}-{suffix}"})
    assert r.status_code == 404 and r.json()["error"] == "ticket_not_found", r.text


async def test_a_comment_with_nul_is_kept(desk, tenant, servicenow):
    """PostgreSQL text refuses NUL: the agent's comment was a 500 on every retry of the rule."""
    _, client = desk
    token = await _setup(client, tenant, servicenow)
    ticket_id = (await client.post("/api/support/ticket", json=TICKET, headers=tenant.headers)).json()["ticketId"]
    r = await client.post(f"/hooks/servicenow/{tenant.slug}", headers={"Authorization": f"Bearer {token}"},
                          json={"sys_id": "b" * 32, "sys_mod_count": "3", "comments": "Fixed\x00 in 2.1",
                                "correlation_id": f"qg-{tenant.id}-{ticket_id}"})
    assert r.status_code == 200 and r.json()["applied"] == ["comment"], r.text
    assert (await _thread(client, tenant, ticket_id))["messages"][-1]["message"] == "Fixed\ufffd in 2.1"

"""Support tickets: creation (the SDK's endpoint), the staff endpoints, replies and their e-mail,
status and priority, stats, the abuse limits, and tenant isolation."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from conftest import db_connection, make_product, running_app
from quota_gateway.errors import ApiError
from quota_gateway.events import jobs
from quota_gateway.support import service

TICKET = {"productName": "Weather API", "email": "jane@customer.example", "subject": "It crashes",
          "message": "The app crashes on start."}


@pytest.fixture
async def quiet(settings, clock):
    """The app with its job worker off (tests run due jobs themselves) and small creation limits."""
    changed = replace(settings, events_worker=False, support_tickets_per_email=3, support_tickets_per_token=5,
                      support_ticket_window=3600)
    async with running_app(changed, clock) as (app, client):
        yield app, client


@pytest.fixture
async def sdk_headers(tenant, settings):
    """A token with only the `email` permission, as a shipped application would hold."""
    return await tenant.token_with(settings.database_url, ["email"])


async def _create(client, headers, **fields) -> int:
    r = await client.post("/api/support/ticket", json={**TICKET, **fields}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["ticketId"]


async def _events(settings, kind: str) -> list[dict]:
    async with db_connection(settings.database_url) as conn:
        rows = await conn.fetch("SELECT data FROM events WHERE type = $1 ORDER BY id", kind)
    return [orjson.loads(r["data"]) if isinstance(r["data"], str) else r["data"] for r in rows]


async def test_create_links_product_license_hardware_and_version(quiet, tenant, sdk_headers, settings):
    _, client = quiet
    product_id = await make_product(client, tenant.headers)
    key = (await client.post("/api/licenses", json={"productId": product_id}, headers=tenant.headers)).json()
    r = await client.post("/api/support/ticket", headers=sdk_headers, json={
        **TICKET, "activationKey": key["activationKey"].lower(), "hardwareId": "ab12cd", "version": "2.1.0",
        "priority": "high"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["status"] == "open" and body["priority"] == "High"
    ticket = (await client.get(f"/api/support/tickets/{body['ticketId']}", headers=tenant.headers)).json()
    assert ticket["productId"] == product_id and ticket["productName"] == "Weather API"
    assert ticket["licenseId"] == key["id"]
    assert ticket["activationKey"] == key["activationKey"][:4] + "-****-****-" + key["activationKey"][-4:]
    assert ticket["hardwareId"] == "AB12CD" and ticket["version"] == "2.1.0"
    assert ticket["email"] == TICKET["email"] and ticket["subject"] == "It crashes"
    assert ticket["createdAt"] == "2027-01-15T08:00:00Z" and ticket["resolvedAt"] is None
    assert ticket["serviceNow"]["state"] == "none"
    [message] = ticket["messages"]
    assert message["author"] == "customer" and message["message"] == TICKET["message"]
    [created] = await _events(settings, "ticket.created")
    assert created["ticketId"] == body["ticketId"] and created["priority"] == "High"


async def test_unknown_product_and_key_are_kept_not_refused(quiet, tenant, sdk_headers):
    _, client = quiet
    ticket_id = await _create(client, sdk_headers, productName="Nope", activationKey="not a key")
    ticket = (await client.get(f"/api/support/tickets/{ticket_id}", headers=tenant.headers)).json()
    assert ticket["productId"] is None and ticket["productName"] == "Nope"
    assert ticket["licenseId"] is None and ticket["activationKey"] is None and ticket["priority"] == "Medium"


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"subject": "s" * 201}, 400, "subject_too_long"),
    ({"message": "m" * 20_001}, 400, "message_too_long"),
    ({"subject": "  "}, 400, "invalid_field"),
    ({"priority": "Urgent"}, 400, "invalid_priority"),
    ({"email": "not-an-address"}, 400, "invalid_field"),
    ({"subject": None}, 400, "missing_field"),
    ({"message": 7}, 400, "invalid_field"),
])
async def test_bad_tickets_are_400_with_stable_codes(quiet, sdk_headers, change, status, code):
    _, client = quiet
    r = await client.post("/api/support/ticket", json={**TICKET, **change}, headers=sdk_headers)
    assert (r.status_code, r.json()["error"]) == (status, code), r.text


async def test_permissions(quiet, tenant, sdk_headers, settings):
    _, client = quiet
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    assert (await client.post("/api/support/ticket", json=TICKET, headers=verify_only)).status_code == 403
    assert (await client.post("/api/support/ticket", json=TICKET)).status_code == 401
    ticket_id = await _create(client, sdk_headers)
    # The token shipped in applications opens tickets and does nothing else.
    for method, path, body in [("GET", "/api/support/tickets", None), ("GET", "/api/support/tickets/stats", None),
                               ("GET", f"/api/support/tickets/{ticket_id}", None),
                               ("POST", f"/api/support/tickets/{ticket_id}/reply", {"message": "x"}),
                               ("PUT", f"/api/support/tickets/{ticket_id}/status", {"status": "resolved"}),
                               ("PUT", f"/api/support/tickets/{ticket_id}/priority", {"priority": "Low"}),
                               ("GET", "/api/servicenow/settings", None)]:
        r = await client.request(method, path, json=body, headers=sdk_headers)
        assert r.status_code == 403, (method, path)
    manage = await tenant.token_with(settings.database_url, ["manage"])
    assert (await client.get(f"/api/support/tickets/{ticket_id}", headers=manage)).status_code == 200


async def test_html_is_stored_and_returned_as_text(quiet, tenant, sdk_headers):
    _, client = quiet
    html = '<script>alert("x")</script><b>bold</b> & more'
    ticket_id = await _create(client, sdk_headers, subject="<i>subject</i>", message=html)
    r = await client.get(f"/api/support/tickets/{ticket_id}", headers=tenant.headers)
    assert r.headers["content-type"] == "application/json"
    assert r.json()["subject"] == "<i>subject</i>" and r.json()["messages"][0]["message"] == html


async def test_list_filters_and_pages(quiet, tenant, settings):
    _, client = quiet
    headers = tenant.headers  # admin: not limited by the small per-token window below the tickets made here
    made = []
    for i, (product, priority, email) in enumerate([("Alpha", "Low", "a@x.example"), ("Alpha", "High", "b@x.example"),
                                                     ("Beta", "High", "a@x.example"), ("Beta", "Critical", "c@x.example")]):
        made.append(await _create(client, headers, productName=product, priority=priority, email=email,
                                  subject=f"ticket {i}"))
    await client.put(f"/api/support/tickets/{made[0]}/status", json={"status": "resolved"}, headers=headers)

    async def ids(**query) -> list[int]:
        r = await client.get("/api/support/tickets", params=query, headers=headers)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["items"]]

    assert await ids() == made[::-1]  # newest first
    assert await ids(status="resolved") == [made[0]]
    assert await ids(status="open", priority="high") == [made[2], made[1]]
    assert await ids(product="alpha") == [made[1], made[0]]
    assert await ids(email="A@X.example") == [made[2], made[0]]
    page = (await client.get("/api/support/tickets", params={"page": 2, "pageSize": 3}, headers=headers)).json()
    assert [t["id"] for t in page["items"]] == [made[0]]
    assert (page["page"], page["pageSize"], page["totalCount"], page["totalPages"]) == (2, 3, 4, 2)
    r = await client.get("/api/support/tickets", params={"status": "closed"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_field"
    r = await client.get("/api/support/tickets", params={"priority": "urgent"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_priority"


async def test_status_resolve_and_reopen_stamp_times(quiet, tenant, sdk_headers, clock, settings):
    _, client = quiet
    ticket_id = await _create(client, sdk_headers)
    clock.advance(3600)
    r = await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert r.json()["resolvedAt"] == "2027-01-15T09:00:00Z"
    again = await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"},
                             headers=tenant.headers)
    assert again.json()["resolvedAt"] == "2027-01-15T09:00:00Z"  # no change, no second event
    assert len(await _events(settings, "ticket.resolved")) == 1
    clock.advance(60)
    r = await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "open"}, headers=tenant.headers)
    assert r.json()["status"] == "open" and r.json()["resolvedAt"] is None
    assert r.json()["reopenedAt"] == "2027-01-15T09:01:00Z"
    r = await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "closed"}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_field"


async def test_priority_and_stats(quiet, tenant):
    _, client = quiet
    headers = tenant.headers
    first = await _create(client, headers)
    second = await _create(client, headers, email="b@x.example")
    third = await _create(client, headers, email="c@x.example")
    r = await client.put(f"/api/support/tickets/{first}/priority", json={"priority": "critical"}, headers=headers)
    assert r.status_code == 200 and r.json()["priority"] == "Critical"
    await client.put(f"/api/support/tickets/{second}/priority", json={"priority": "High"}, headers=headers)
    await client.put(f"/api/support/tickets/{third}/priority", json={"priority": "High"}, headers=headers)
    await client.put(f"/api/support/tickets/{third}/status", json={"status": "resolved"}, headers=headers)
    r = await client.put(f"/api/support/tickets/{first}/priority", json={"priority": "Urgent"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_priority"
    stats = (await client.get("/api/support/tickets/stats", headers=headers)).json()
    # critical/high count open tickets: what still needs attention
    assert stats == {"open": 2, "resolved": 1, "critical": 1, "high": 1, "total": 3}


async def test_staff_reply_is_mailed_to_the_customer(quiet, tenant, sdk_headers, smtp_server, settings):
    app, client = quiet
    r = await client.put("/api/smtp", json={"host": smtp_server.host, "port": smtp_server.port, "security": "none",
                                            "from": "support@acme.example"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    ticket_id = await _create(client, sdk_headers, subject="Login fails")
    reply = 'Try <b>restarting</b> & "clearing" the cache.'
    r = await client.post(f"/api/support/tickets/{ticket_id}/reply", json={"message": reply}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    thread = r.json()["messages"]
    assert [(m["author"], m["message"]) for m in thread] == [("customer", TICKET["message"]), ("staff", reply)]
    await jobs.run_due(app.state.services)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == [TICKET["email"]] and mail.subject == "Re: Login fails"
    assert reply in mail.text  # the plain-text part carries the reply as written
    assert "&lt;b&gt;restarting&lt;/b&gt; &amp;" in mail.html and "<b>restarting</b>" not in mail.html
    [replied] = await _events(settings, "ticket.replied")
    assert replied["ticketId"] == ticket_id and replied["author"] == "staff"
    r = await client.post(f"/api/support/tickets/{ticket_id}/reply", json={"message": "x" * 20_001},
                          headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "message_too_long"
    r = await client.post("/api/support/tickets/999999/reply", json={"message": "x"}, headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "ticket_not_found"


async def test_customer_reply_reopens_a_resolved_ticket(quiet, tenant, sdk_headers, clock, settings):
    app, client = quiet
    ticket_id = await _create(client, sdk_headers)
    await client.put(f"/api/support/tickets/{ticket_id}/status", json={"status": "resolved"}, headers=tenant.headers)
    clock.advance(120)
    async with app.state.services.pool.acquire() as conn:
        with pytest.raises(ApiError) as raised:  # another address: the same answer as no ticket
            await service.add_customer_reply(conn, tenant.id, ticket_id, "mallory@x.example", "hi")
        assert raised.value.code == "ticket_not_found"
        ticket = await service.add_customer_reply(conn, tenant.id, ticket_id, "JANE@customer.example", "Still broken",
                                                  now=clock.utcnow())
    assert ticket["status"] == "open" and ticket["resolvedAt"] is None
    assert ticket["reopenedAt"] == clock.utcnow()
    assert ticket["messages"][-1] == {**ticket["messages"][-1], "author": "customer", "message": "Still broken",
                                      "authorEmail": TICKET["email"]}
    [replied] = await _events(settings, "ticket.replied")
    assert replied["author"] == "customer"


async def test_creation_is_limited_per_address_and_per_token(quiet, sdk_headers, clock):
    _, client = quiet
    for _ in range(3):
        await _create(client, sdk_headers)
    r = await client.post("/api/support/ticket", json=TICKET, headers=sdk_headers)
    assert r.status_code == 429 and r.json()["error"] == "ticket_rate_limit_email"
    assert r.headers["Retry-After"] == "3600"  # the window is the clock's hour, just begun
    # Other addresses still get through, until the token's own window is full.
    await _create(client, sdk_headers, email="b@x.example")
    await _create(client, sdk_headers, email="c@x.example")
    r = await client.post("/api/support/ticket", json={**TICKET, "email": "d@x.example"}, headers=sdk_headers)
    assert r.status_code == 429 and r.json()["error"] == "ticket_rate_limit_token"
    clock.advance(1200)
    r = await client.post("/api/support/ticket", json={**TICKET, "email": "d@x.example"}, headers=sdk_headers)
    assert int(r.headers["Retry-After"]) == r.json()["retryAfterSeconds"] == 2400
    clock.advance(2400)
    await _create(client, sdk_headers)


async def test_tenants_never_see_each_others_tickets(quiet, tenant, other_tenant, sdk_headers):
    _, client = quiet
    ticket_id = await _create(client, sdk_headers)
    theirs = other_tenant.headers
    for method, path, body in [("GET", f"/api/support/tickets/{ticket_id}", None),
                               ("POST", f"/api/support/tickets/{ticket_id}/reply", {"message": "x"}),
                               ("PUT", f"/api/support/tickets/{ticket_id}/status", {"status": "resolved"}),
                               ("PUT", f"/api/support/tickets/{ticket_id}/priority", {"priority": "Low"}),
                               ("POST", f"/api/support/tickets/{ticket_id}/sync", None)]:
        r = await client.request(method, path, json=body, headers=theirs)
        assert (r.status_code, r.json()["error"]) == (404, "ticket_not_found"), (method, path)
    assert (await client.get("/api/support/tickets", headers=theirs)).json()["totalCount"] == 0
    assert (await client.get("/api/support/tickets/stats", headers=theirs)).json()["total"] == 0
    mine = (await client.get(f"/api/support/tickets/{ticket_id}", headers=tenant.headers)).json()
    assert mine["status"] == "open" and len(mine["messages"]) == 1


@pytest.mark.parametrize("ticket_id", ["0", "abc", "99999999999999999999999", "-1"])
async def test_odd_ids_are_404(quiet, tenant, ticket_id):
    _, client = quiet
    r = await client.get(f"/api/support/tickets/{ticket_id}", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (404, "ticket_not_found")

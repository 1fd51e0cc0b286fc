"""Support tickets in the portal and the admin UI, and the ServiceNow settings page, through
HTTP: the flows, messages shown as text, CSRF on every form, and tenant isolation."""

from __future__ import annotations

import re

import pytest
from web_helpers import csrf_of, portal_cookie, sign_in_admin, sql_value


async def portal_session(client, settings, tenant, clock, email: str = "buyer@example.com") -> str:
    """Sign the client in to the tenant's portal as `email`; returns a form token."""
    cookie = await portal_cookie(settings.database_url, tenant.id, clock, email)
    client.cookies.set("qg_portal", cookie, path=f"/portal/{tenant.slug}")
    return csrf_of((await client.get(f"/portal/{tenant.slug}/tickets")).text)


async def test_customer_and_staff_talk_through_a_ticket(client, settings, tenant, clock):
    product = (await client.post("/api/product", json={"name": "Desk App"}, headers=tenant.headers)).json()["id"]
    await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com"},
                      headers=tenant.headers)
    form = await portal_session(client, settings, tenant, clock)
    portal = f"/portal/{tenant.slug}"
    page = await client.get(f"{portal}/tickets")
    assert "<option>Desk App</option>" in page.text
    r = await client.post(f"{portal}/tickets", data={"csrf_token": form, "product": "Desk App", "priority": "High",
                                                     "subject": "Export <b>fails</b>",
                                                     "message": "It says <script>alert(1)</script>\nline two"})
    assert r.status_code == 303
    ticket_url = r.headers["location"]
    ticket_id = ticket_url.rsplit("/", 1)[1]
    thread = await client.get(ticket_url)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in thread.text and "<script>alert" not in thread.text
    assert "Export &lt;b&gt;fails&lt;/b&gt;" in thread.text

    admin_form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    admin = f"/admin/{tenant.slug}"
    listing = await client.get(f"{admin}/tickets")
    assert "Export &lt;b&gt;fails&lt;/b&gt;" in listing.text and "buyer@example.com" in listing.text
    assert re.search(r"<strong>1</strong> open, high", listing.text)
    r = await client.post(f"{admin}/tickets/{ticket_id}/reply", data={"csrf_token": admin_form,
                                                                     "message": "Try version 2.1 <i>please</i>"})
    assert r.status_code == 303
    await client.post(f"{admin}/tickets/{ticket_id}/priority", data={"csrf_token": admin_form,
                                                                    "priority": "critical"})
    await client.post(f"{admin}/tickets/{ticket_id}/status", data={"csrf_token": admin_form, "status": "resolved"})
    detail = await client.get(f"{admin}/tickets/{ticket_id}")
    assert "Try version 2.1 &lt;i&gt;please&lt;/i&gt;" in detail.text and "resolved" in detail.text
    assert '<option selected>Critical</option>' in detail.text
    assert await sql_value(settings, "SELECT count(*) FROM jobs WHERE kind = 'mail.send'") == 1   # the reply e-mail

    thread = await client.get(ticket_url)
    assert "Support team" in thread.text and "Try version 2.1" in thread.text and "resolved" in thread.text
    r = await client.post(f"{ticket_url}/reply", data={"csrf_token": form, "message": "Still broken"})
    assert r.status_code == 303
    thread = await client.get(ticket_url)
    assert "Still broken" in thread.text
    assert await sql_value(settings, "SELECT status FROM support_tickets WHERE id = $1", int(ticket_id)) == "open"
    empty = await client.post(f"{ticket_url}/reply", data={"csrf_token": form, "message": "   "})
    assert "required" in (await client.get(empty.headers["location"])).text


async def test_portal_ticket_creation_is_bounded_per_address(client, settings, tenant, clock):
    form = await portal_session(client, settings, tenant, clock)
    for i in range(settings.support_tickets_per_email):
        r = await client.post(f"/portal/{tenant.slug}/tickets", data={"csrf_token": form, "product": "Desk App",
                                                                      "subject": f"Q{i}", "message": "?"})
        assert r.headers["location"] != f"/portal/{tenant.slug}/tickets"
    r = await client.post(f"/portal/{tenant.slug}/tickets", data={"csrf_token": form, "product": "Desk App",
                                                                  "subject": "One more", "message": "?"})
    assert r.headers["location"] == f"/portal/{tenant.slug}/tickets"
    assert await sql_value(settings, "SELECT count(*) FROM support_tickets") == settings.support_tickets_per_email


async def test_servicenow_settings_page(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    assert "Not connected" in (await client.get(f"{base}/servicenow")).text
    bad = await client.post(f"{base}/servicenow", data={"csrf_token": form, "instance_url": "http://evil.example",
                                                        "auth_type": "basic", "username": "u", "password": "p"})
    assert "instanceUrl must be https" in (await client.get(bad.headers["location"])).text
    r = await client.post(f"{base}/servicenow", data={
        "csrf_token": form, "instance_url": "https://acme.service-now.com", "auth_type": "basic",
        "username": "integration", "password": "very-secret-password", "table": "incident", "enabled": "1"})
    page = await client.get(r.headers["location"])
    assert "ServiceNow settings saved." in page.text and "https://acme.service-now.com" in page.text
    assert "very-secret-password" not in page.text and "****word" in page.text
    # A blank password keeps the stored one.
    await client.post(f"{base}/servicenow", data={
        "csrf_token": form, "instance_url": "https://acme.service-now.com", "auth_type": "basic",
        "username": "integration", "password": "", "table": "incident"})
    page = await client.get(f"{base}/servicenow")
    assert "****word" in page.text and "switched off" in page.text
    # The inbound token: shown once on its own page, stored as a digest, then only "set".
    assert "No inbound token yet" in page.text and f"/hooks/servicenow/{tenant.slug}" in page.text
    shown = await client.post(f"{base}/servicenow/inbound-token", data={"csrf_token": form})
    token = re.search(r"qgsn_[A-Za-z0-9_-]+", shown.text).group(0)
    page = await client.get(f"{base}/servicenow")
    assert "An inbound token is set" in page.text and token not in page.text
    await client.post(f"{base}/servicenow/delete", data={"csrf_token": form})
    assert await sql_value(settings, "SELECT count(*) FROM servicenow_settings") == 0


_ADMIN_FORMS = ["/tickets/1/reply", "/tickets/1/status", "/tickets/1/priority", "/tickets/1/resync", "/servicenow",
                "/servicenow/delete", "/servicenow/test", "/servicenow/inbound-token"]


@pytest.mark.parametrize("path", _ADMIN_FORMS)
async def test_admin_support_forms_refuse_a_post_without_the_csrf_token(client, settings, tenant, clock, path):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    assert (await client.post(f"/admin/{tenant.slug}{path}", data={"message": "x"})).status_code == 403


@pytest.mark.parametrize("path", ["/tickets", "/tickets/1/reply"])
async def test_portal_support_forms_refuse_a_post_without_the_csrf_token(client, settings, tenant, clock, path):
    await portal_session(client, settings, tenant, clock)
    r = await client.post(f"/portal/{tenant.slug}{path}", data={"product": "X", "subject": "s", "message": "m"})
    assert r.status_code == 403


async def test_tickets_stay_with_their_tenant_and_customer(client, settings, tenant, other_tenant, clock):
    # globex's customer opens a ticket; acme's admin and another globex customer must not reach it.
    form = await portal_session(client, settings, other_tenant, clock, email="victim@example.com")
    r = await client.post(f"/portal/{other_tenant.slug}/tickets", data={"csrf_token": form, "product": "Globex Tool",
                                                                         "subject": "Globex secret", "message": "m"})
    ticket_id = r.headers["location"].rsplit("/", 1)[1]
    client.cookies.clear()
    form = await portal_session(client, settings, other_tenant, clock, email="snoop@example.com")
    assert "Globex secret" not in (await client.get(f"/portal/{other_tenant.slug}/tickets")).text
    r = await client.get(f"/portal/{other_tenant.slug}/tickets/{ticket_id}")
    assert r.status_code == 404 and "Globex secret" not in r.text
    await client.post(f"/portal/{other_tenant.slug}/tickets/{ticket_id}/reply",
                      data={"csrf_token": form, "message": "injected"})
    client.cookies.clear()
    admin_form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    admin = f"/admin/{tenant.slug}"
    assert "Globex secret" not in (await client.get(f"{admin}/tickets?status=")).text
    r = await client.get(f"{admin}/tickets/{ticket_id}")
    assert r.status_code == 404 and "Globex secret" not in r.text
    for path, data in (("reply", {"message": "injected"}), ("status", {"status": "resolved"}),
                       ("priority", {"priority": "Low"})):
        await client.post(f"{admin}/tickets/{ticket_id}/{path}", data={"csrf_token": admin_form, **data})
    assert await sql_value(settings, "SELECT count(*) FROM support_messages") == 1
    assert await sql_value(settings, "SELECT status || priority FROM support_tickets") == "openMedium"
    # A ticket of acme's own customer is not visible in globex's portal for the same address.
    form = await portal_session(client, settings, tenant, clock, email="victim@example.com")
    assert "Globex secret" not in (await client.get(f"/portal/{tenant.slug}/tickets")).text

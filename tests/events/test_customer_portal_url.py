"""{{CustomerPortalUrl}} in every e-mail, through a real SMTP server: the tenant's own address
when it set one, else this gateway's portal of that tenant ({QG_PUBLIC_URL}/portal/{slug}/), and
never another tenant's. {{TenantName}}: the display name the portal shows, else the tenant's name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import db_connection, make_product, running_app
from quota_gateway.config import Settings, portal_url, public_base
from quota_gateway.errors import ApiError
from quota_gateway.events import jobs
from quota_gateway.web import service as web_service

DAY = 86400
PUBLIC = "https://licenses.gateway.example"


@pytest.fixture
async def quiet(settings, clock):
    """The app behind a public address (with a trailing slash, which must not double), its job
    worker off: the tests run due jobs themselves."""
    async with running_app(replace(settings, events_worker=False, public_url=PUBLIC + "/"), clock) as (app, client):
        yield app, client


async def _mail_setup(client, tenant, smtp_server, **mail_settings) -> None:
    r = await client.put("/api/smtp", json={"host": smtp_server.host, "port": smtp_server.port, "security": "none",
                                            "from": f"licenses@{tenant.slug}.example"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    r = await client.put("/api/email/settings", json={"deliverLicenses": True, **mail_settings},
                         headers=tenant.headers)
    assert r.status_code == 200, r.text


async def _license(client, tenant, product: int, email: str, days: int = 30) -> dict:
    r = await client.post("/api/licenses", json={"productId": product, "email": email, "validityDays": days},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _staff_reply(client, tenant, email: str) -> None:
    r = await client.post("/api/support/ticket", headers=tenant.headers, json={
        "productName": "Desk", "email": email, "subject": "It crashes", "message": "On start."})
    assert r.status_code == 201, r.text
    r = await client.post(f"/api/support/tickets/{r.json()['ticketId']}/reply", json={"message": "Update to 2.1."},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text


def _by_recipient(mails) -> dict[str, list]:
    found: dict[str, list] = {}
    for mail in mails:
        found.setdefault(mail.rcpt_tos[0], []).append(mail)
    return found


def test_public_base_and_portal_url():
    plain = Settings(host="10.0.0.5", port=9000)
    assert public_base(plain) == "http://10.0.0.5:9000"
    assert public_base(replace(plain, dev_tls=True)) == "https://10.0.0.5:9000"
    assert public_base(replace(plain, public_url="https://gw.example/base/")) == "https://gw.example/base"
    assert portal_url(replace(plain, public_url="https://gw.example/"), "acme") == "https://gw.example/portal/acme/"


async def test_every_mail_links_to_the_gateway_portal_by_default(quiet, tenant, other_tenant, smtp_server, clock):
    app, client = quiet
    for t in (tenant, other_tenant):
        await _mail_setup(client, t, smtp_server)
        product = await make_product(client, t.headers, name="Desk")
        await _license(client, t, product, f"buyer@{t.slug}.example")   # license delivery
        await _staff_reply(client, t, f"asker@{t.slug}.example")         # ticket reply
    clock.advance(23 * DAY)                                             # renewal reminder, 7 days ahead
    await jobs.run_due(app.state.services)
    mails = _by_recipient(await smtp_server.wait_for(6))

    for t, other in ((tenant, other_tenant), (other_tenant, tenant)):
        own, foreign = f"{PUBLIC}/portal/{t.slug}/", f"/portal/{other.slug}/"
        delivery, reminder = sorted(mails[f"buyer@{t.slug}.example"], key=lambda m: "expires" in m.subject)
        [reply] = mails[f"asker@{t.slug}.example"]
        assert "license key" in delivery.subject and "expires in 7 days" in reminder.subject
        assert "It crashes" in reply.subject
        assert f"Manage your licenses at {own}\r\n" in delivery.text
        assert f"Renew it at {own}\r\n" in reminder.text
        assert f"See the whole conversation at {own}\r\n" in reply.text
        for mail in (delivery, reminder, reply):
            assert f'href="{own}"' in mail.html, mail.html
            assert "portal//" not in mail.text
            # Tenant isolation: the other tenant's portal appears in none of this tenant's mail.
            assert foreign not in mail.text and foreign not in mail.html

    r = await client.get("/api/email/settings", headers=tenant.headers)
    assert r.json()["customerPortalUrl"] == ""
    assert r.json()["effectiveCustomerPortalUrl"] == f"{PUBLIC}/portal/{tenant.slug}/"
    document = (await client.get("/openapi.json")).json()
    shown = document["paths"]["/api/email/settings"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "effectiveCustomerPortalUrl" in shown["schema"]["properties"]


async def test_the_tenants_own_address_wins(quiet, tenant, other_tenant, smtp_server, clock):
    app, client = quiet
    own = "https://account.acme.example/licenses"
    await _mail_setup(client, tenant, smtp_server, customerPortalUrl=own)
    await _mail_setup(client, other_tenant, smtp_server)
    for t in (tenant, other_tenant):
        product = await make_product(client, t.headers, name="Desk")
        await _license(client, t, product, f"buyer@{t.slug}.example")
        await _staff_reply(client, t, f"asker@{t.slug}.example")
    await jobs.run_due(app.state.services)
    mails = _by_recipient(await smtp_server.wait_for(4))

    for mail in (*mails["buyer@acme.example"], *mails["asker@acme.example"]):
        assert own in mail.text and f'href="{own}"' in mail.html
        assert "/portal/" not in mail.text and "/portal/" not in mail.html   # not the gateway's portal
    # The other tenant, with no address of its own, keeps the gateway's portal, never acme's address.
    for mail in (*mails["buyer@globex.example"], *mails["asker@globex.example"]):
        assert f"{PUBLIC}/portal/globex/" in mail.text and own not in mail.text and own not in mail.html

    r = await client.get("/api/email/settings", headers=tenant.headers)
    assert r.json()["customerPortalUrl"] == own == r.json()["effectiveCustomerPortalUrl"]
    # Clearing the address brings the default back.
    r = await client.put("/api/email/settings", json={"customerPortalUrl": ""}, headers=tenant.headers)
    assert r.json()["effectiveCustomerPortalUrl"] == f"{PUBLIC}/portal/acme/"
    product = await make_product(client, tenant.headers, name="Desk 2")
    await _license(client, tenant, product, "second@acme.example")
    await jobs.run_due(app.state.services)
    *_, again = await smtp_server.wait_for(5)
    assert again.rcpt_tos == ["second@acme.example"] and f"{PUBLIC}/portal/acme/" in again.text


async def test_tenant_name_is_the_display_name_the_portal_shows(quiet, tenant, other_tenant, smtp_server, settings):
    app, client = quiet
    products = {}
    for t in (tenant, other_tenant):
        await _mail_setup(client, t, smtp_server)
        products[t.slug] = await make_product(client, t.headers, name="Desk")
    async with db_connection(settings.database_url) as conn:
        await web_service.save_branding(conn, tenant.id, "Acme Licensing", "#1d4ed8", None)
    for t in (tenant, other_tenant):
        await _license(client, t, products[t.slug], f"buyer@{t.slug}.example")
    await jobs.run_due(app.state.services)
    mails = _by_recipient(await smtp_server.wait_for(2))
    [acme], [globex] = mails["buyer@acme.example"], mails["buyer@globex.example"]
    assert f"--\r\nAcme Licensing · {PUBLIC}/portal/acme/" in acme.text and ">Acme Licensing · <" in acme.html
    # the other tenant set no display name: its own name, never acme's
    assert f"--\r\nGlobex · {PUBLIC}/portal/globex/" in globex.text and "Acme" not in globex.text + globex.html
    # a display name cleared again falls back to the tenant's name
    async with db_connection(settings.database_url) as conn:
        await web_service.save_branding(conn, tenant.id, "", "#1d4ed8", None)
    await _license(client, tenant, products["acme"], "second@acme.example")
    await jobs.run_due(app.state.services)
    *_, again = await smtp_server.wait_for(3)
    assert again.rcpt_tos == ["second@acme.example"] and f"--\r\nAcme · {PUBLIC}/portal/acme/" in again.text


async def test_a_display_name_is_one_line_and_the_smtp_test_subject_stays_one(quiet, tenant, smtp_server, settings):
    _, client = quiet
    await _mail_setup(client, tenant, smtp_server)
    async with db_connection(settings.database_url) as conn:
        with pytest.raises(ApiError) as refused:
            await web_service.save_branding(conn, tenant.id, "Acme\r\nBcc: all@example.com", "#1d4ed8", None)
        assert refused.value.code == "invalid_field"
        # a name stored before that rule (or a tenant's own name) still makes a one-line subject
        await conn.execute("INSERT INTO tenant_branding (tenant_id, display_name, colour) VALUES ($1, $2, '#1d4ed8') "
                           "ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name",
                           tenant.id, "Acme\r\nBcc: all@example.com")
    r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["ops@acme.example"] and mail.message["Subject"] == "Acme Bcc: all@example.com: SMTP test"


@pytest.mark.parametrize("address", ["javascript:alert(1)", "https://account.acme.example/\r\nBcc: all@example.com",
                                     "account.acme.example/licenses", "https://user:pw@account.acme.example/"])
async def test_the_tenants_address_must_be_an_http_url(client, tenant, address):
    """It becomes a link in every customer e-mail: a script URL or a line break never gets there."""
    r = await client.put("/api/email/settings", json={"customerPortalUrl": address}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_url", r.text
    assert r.json()["field"] == "customerPortalUrl"
    assert (await client.get("/api/email/settings", headers=tenant.headers)).json()["customerPortalUrl"] == ""

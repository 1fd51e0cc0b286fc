"""Admin pages for floating keys and leases, e-mail (SMTP, templates), plans and the analytics'
API-key validations, through HTTP: the flows, CSRF on every new form, and tenant isolation."""

from __future__ import annotations

import asyncio
import re

import pytest
from web_helpers import secret_of, sign_in_admin, sql_value

from conftest import make_api_key, make_product, running_app


async def test_floating_keys_customers_and_live_leases(app, client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    product = (await client.post("/api/product", json={"name": "CAD Suite"}, headers=tenant.headers)).json()["id"]
    await client.post(f"/api/product/{product}/features", json={"name": "render"}, headers=tenant.headers)
    r = await client.post(f"{base}/floating/customers", data={"csrf_token": form, "name": "Initech <R&D>",
                                                             "contact": "it@initech.example"})
    assert r.status_code == 303
    page = await client.get(f"{base}/floating")
    assert "Initech &lt;R&amp;D&gt;" in page.text and "Initech <R&D>" not in page.text   # escaped
    customer = re.search(r'<option value="(\d+)">Initech', page.text).group(1)

    bad = await client.post(f"{base}/floating/keys", data={"csrf_token": form, "customer_id": customer,
                                                           "product_id": str(product), "lease_limit": "2",
                                                           "features": "render, nonsense"})
    assert bad.status_code == 303 and "nonsense" in (await client.get(bad.headers["location"])).text
    made = await client.post(f"{base}/floating/keys", data={"csrf_token": form, "customer_id": customer,
                                                            "product_id": str(product), "lease_limit": "2",
                                                            "validity_days": "30", "features": "render"})
    assert made.status_code == 200 and "shown this once" in made.text
    key = secret_of(made.text)
    key_url = re.search(rf'href="({base}/floating/\d+)"', made.text).group(1)

    for client_id in ("workstation-7", "laptop-3"):
        r = await client.post(f"/licensing/{tenant.id}/lease/obtain", json={"key": key, "clientId": client_id})
        assert r.json()["success"], r.text
    services = app.state.services
    await services.lease_history.drain(services.lease_history.touched())
    listing = await client.get(f"{base}/floating")
    assert "2 / 2" in listing.text and key not in listing.text   # masked
    detail = await client.get(key_url)
    assert detail.text.count('class="lease"') == 2
    assert "workstation-7" in detail.text and "laptop-3" in detail.text and "render" in detail.text
    # Created and revoked on the injectable clock (2027-01-15 08:00 UTC here), not the database's.
    assert "<dt>Created</dt><dd>2027-01-15 08:00 UTC</dd>" in detail.text

    clock.advance(60)
    r = await client.post(f"{key_url}/revoke", data={"csrf_token": form})
    assert r.status_code == 303
    revoked_at = await sql_value(settings, "SELECT revoked_at FROM floating_keys WHERE tenant_id = $1", tenant.id)
    assert revoked_at.timestamp() == clock.now()
    customer_at = await sql_value(settings, "SELECT created_at FROM customers WHERE tenant_id = $1", tenant.id)
    assert customer_at.timestamp() == clock.now() - 60
    detail = await client.get(key_url)
    assert "revoked" in detail.text and "No live leases" in detail.text
    r = await client.post(f"/licensing/{tenant.id}/lease/obtain", json={"key": key})
    assert r.json()["errorCode"] == "KEY_INVALID"


async def test_smtp_settings_test_message_and_templates(client, settings, tenant, clock, smtp_server):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    page = await client.get(f"{base}/email")
    assert "No SMTP server is configured" in page.text
    # Blank: every e-mail links to this gateway's portal (the address to give out), and the page says so.
    assert f'<code id="effective-portal">http://127.0.0.1:8080/portal/{tenant.slug}/</code>' in page.text
    r = await client.post(f"{base}/email/smtp", data={
        "csrf_token": form, "host": smtp_server.host, "port": str(smtp_server.port), "security": "none",
        "username": "shop", "password": "s3cret-pass", "from": "shop@acme.example"})
    assert r.status_code == 303
    page = await client.get(f"{base}/email")
    assert "this tenant's own server" in page.text and "s3cret-pass" not in page.text
    stored = await sql_value(settings, "SELECT password_enc FROM smtp_settings WHERE tenant_id = $1", tenant.id)
    assert b"s3cret-pass" not in bytes(stored)   # sealed at rest
    # Saving again with a blank password keeps the stored one.
    await client.post(f"{base}/email/smtp", data={
        "csrf_token": form, "host": smtp_server.host, "port": str(smtp_server.port), "security": "none",
        "username": "shop", "password": "", "from": "shop@acme.example"})
    assert bytes(await sql_value(settings, "SELECT password_enc FROM smtp_settings WHERE tenant_id = $1",
                            tenant.id)) == bytes(stored)
    # The test server takes no AUTH: drop the user and password, then send a test message.
    await client.post(f"{base}/email/smtp", data={
        "csrf_token": form, "host": smtp_server.host, "port": str(smtp_server.port), "security": "none",
        "username": "", "password": "", "clear_password": "1", "from": "shop@acme.example"})
    assert await sql_value(settings, "SELECT password_enc FROM smtp_settings WHERE tenant_id = $1", tenant.id) is None
    r = await client.post(f"{base}/email/smtp/test", data={"csrf_token": form, "to": "me@acme.example"})
    assert "Test message sent" in (await client.get(r.headers["location"])).text
    mail = (await smtp_server.wait_for(1))[0]
    assert "SMTP test" in mail.subject
    bad = await client.post(f"{base}/email/smtp", data={"csrf_token": form, "host": "h", "port": "99999",
                                                        "from": "x@y.example"})
    assert "port" in (await client.get(bad.headers["location"])).text

    r = await client.post(f"{base}/email/settings", data={"csrf_token": form, "contact_email": "ops@acme.example",
                                                          "customer_portal_url": "https://acme.example/portal",
                                                          "deliver_licenses": "1"})
    page = await client.get(f"{base}/email")
    assert "ops@acme.example" in page.text and "https://acme.example/portal" in page.text
    assert '<code id="effective-portal">https://acme.example/portal</code>' in page.text
    assert f"<code>http://127.0.0.1:8080/portal/{tenant.slug}/</code>" in page.text   # what blank would give

    url = f"{base}/email/templates/license_delivery"
    assert "{{LicenseKey}}" in (await client.get(url)).text
    broken = await client.post(url, data={"csrf_token": form, "subject": "Key {{ oops", "text": "x", "html": ""})
    assert "subject, line 1" in (await client.get(broken.headers["location"])).text
    await client.post(url, data={"csrf_token": form, "subject": "Your key for {{ProductName}}",
                                 "text": "Key: {{LicenseKey}}\r\nThanks", "html": "<p>{{LicenseKey}}</p>"})
    page = await client.get(url)
    assert "Your key for {{ProductName}}" in page.text and "yours" in page.text
    assert "changed" in (await client.get(f"{base}/email")).text
    await client.post(f"{url}/reset", data={"csrf_token": form})
    assert "default" in (await client.get(url)).text
    assert (await client.get(f"{base}/email/templates/no_such_template")).status_code == 404
    r = await client.post(f"{base}/email/smtp/delete", data={"csrf_token": form})
    assert await sql_value(settings, "SELECT count(*) FROM smtp_settings") == 0


async def test_plans_are_created_and_toggled(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    r = await client.post(f"{base}/plans", data={"csrf_token": form, "name": "Annual", "duration_days": "365"})
    page = await client.get(r.headers["location"])
    assert "Plan “Annual” created." in page.text and "365 days" in page.text
    again = await client.post(f"{base}/plans", data={"csrf_token": form, "name": "Annual"})
    assert "already exists" in (await client.get(again.headers["location"])).text
    plan = await sql_value(settings, "SELECT id FROM plans WHERE name = 'Annual'")
    r = await client.post(f"{base}/plans/{plan}/toggle", data={"csrf_token": form})
    assert "no longer offered" in (await client.get(r.headers["location"])).text
    assert await sql_value(settings, "SELECT is_active FROM plans WHERE id = $1", plan) is False
    licenses = await client.get(f"{base}/licenses")
    assert "Annual" not in licenses.text   # inactive plans are not offered for new keys


_NEW_FORMS = ["/floating/customers", "/floating/keys", "/floating/1/revoke", "/email/smtp", "/email/smtp/delete",
              "/email/smtp/test", "/email/settings", "/email/templates/license_delivery",
              "/email/templates/license_delivery/reset", "/plans", "/plans/1/toggle", "/webhooks", "/webhooks/1",
              "/webhooks/1/enabled", "/webhooks/1/delete", "/webhooks/1/rotate-secret", "/webhooks/1/ping",
              "/webhooks/deliveries/1/redeliver"]


@pytest.mark.parametrize("path", _NEW_FORMS)
async def test_new_forms_refuse_a_post_without_the_csrf_token(client, settings, tenant, clock, path):
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    r = await client.post(f"/admin/{tenant.slug}{path}", data={"name": "Sneaky", "host": "evil.example"})
    assert r.status_code == 403


async def test_new_pages_keep_tenants_apart(settings, tenant, other_tenant, clock):
    async with running_app(settings, clock) as (_, client):
        # globex has a customer, a floating key, a plan and SMTP settings.
        product = (await client.post("/api/product", json={"name": "Globex Tool"},
                                     headers=other_tenant.headers)).json()["id"]
        customer = (await client.post("/api/customers", json={"name": "Globex Customer"},
                                      headers=other_tenant.headers)).json()["id"]
        made = (await client.post("/api/floating/keys", json={"customerId": customer, "leaseLimit": 3,
                                                              "products": [{"productId": product}]},
                                  headers=other_tenant.headers)).json()
        plan = (await client.post("/api/plan", json={"name": "Globex Plan"}, headers=other_tenant.headers)).json()
        await client.put("/api/smtp", json={"host": "smtp.globex.example", "port": 25, "security": "none",
                                            "from": "noreply@globex.example"}, headers=other_tenant.headers)

        form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
        base = f"/admin/{tenant.slug}"
        assert "Globex Customer" not in (await client.get(f"{base}/floating")).text
        r = await client.get(f"{base}/floating/{made['id']}")
        assert r.status_code == 404 and "Globex" not in r.text
        await client.post(f"{base}/floating/{made['id']}/revoke", data={"csrf_token": form})
        assert await sql_value(settings, "SELECT revoked_at FROM floating_keys WHERE id = $1", made["id"]) is None
        own = (await client.post("/api/product", json={"name": "Acme Tool"}, headers=tenant.headers)).json()["id"]
        await client.post(f"{base}/floating/keys", data={"csrf_token": form, "customer_id": str(customer),
                                                         "product_id": str(own), "lease_limit": "1"})
        await client.post(f"{base}/floating/keys", data={"csrf_token": form, "customer_id": str(customer),
                                                         "product_id": str(product), "lease_limit": "1"})
        assert await sql_value(settings, "SELECT count(*) FROM floating_keys WHERE tenant_id = $1", tenant.id) == 0
        assert "Globex Plan" not in (await client.get(f"{base}/products")).text
        await client.post(f"{base}/plans/{plan['id']}/toggle", data={"csrf_token": form})
        assert await sql_value(settings, "SELECT is_active FROM plans WHERE id = $1", plan["id"]) is True
        page = await client.get(f"{base}/email")
        assert "smtp.globex.example" not in page.text and "No SMTP server is configured" in page.text
        await client.post(f"{base}/email/templates/ticket_reply", data={"csrf_token": form, "subject": "Acme",
                                                                        "text": "acme", "html": ""})
        assert await sql_value(settings, "SELECT count(*) FROM email_templates WHERE tenant_id = $1",
                               other_tenant.id) == 0
        await client.post(f"{base}/email/smtp/delete", data={"csrf_token": form})
        assert await sql_value(settings, "SELECT count(*) FROM smtp_settings WHERE tenant_id = $1",
                               other_tenant.id) == 1


async def test_analytics_counts_each_tenants_api_key_validations_by_outcome(client, settings, tenant, other_tenant,
                                                                          clock):
    """Both tenants sell a product of the same name: each sees only its own validations."""
    for who, allowed, refused in ((tenant, 3, 0), (other_tenant, 5, 2)):
        key = await make_api_key(client, who.headers, await make_product(client, who.headers), maxApiCalls=100)
        for units in [1] * allowed + [1000] * refused:
            await client.post("/api/apilicense/validate", json={"apiKey": key, "units": units}, headers=who.headers)
    await client.post("/api/apilicense/validate", json={"apiKey": "qgk_nonsense"}, headers=tenant.headers)
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    page = (await client.get(f"/admin/{tenant.slug}/analytics")).text
    counts = dict(re.findall(r'aria-label="(\w+): (\d+)"', page))
    assert counts == {"ok": "3", "not_found": "1"}, counts


async def test_portal_branding_display_name_colour_and_logo(client, settings, tenant, other_tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    admin, portal = f"/admin/{tenant.slug}", f"/portal/{tenant.slug}"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    r = await client.post(f"{admin}/settings/branding", data={"csrf_token": form, "display_name": "Acme Licensing",
                                                              "colour": "#7C2D12"},
                          files={"logo": ("logo.png", png, "image/png")})
    assert "Portal branding saved." in (await client.get(r.headers["location"])).text
    login = (await client.get(f"{portal}/login")).text
    assert "Acme Licensing" in login and f'src="{portal}/logo"' in login
    css = await client.get(f"{portal}/brand.css")
    assert css.headers["content-type"].startswith("text/css") and "--brand: #7c2d12;" in css.text
    logo = await client.get(f"{portal}/logo")
    assert logo.content == png and logo.headers["content-type"] == "image/png"
    # White text on a pale colour fails WCAG AA; a file that is not an image is refused; nothing changes.
    for data, files, message in (({"colour": "#FDE68A"}, None, "WCAG AA"),
                                 ({"colour": "#1D4ED8"}, {"logo": ("x.png", b"<svg/>", "image/png")}, "PNG or JPEG")):
        r = await client.post(f"{admin}/settings/branding", data={"csrf_token": form, "display_name": "X", **data},
                              files=files)
        assert message in (await client.get(r.headers["location"])).text
    assert "--brand: #7c2d12;" in (await client.get(f"{portal}/brand.css")).text
    # Another tenant's portal keeps its own (default) look.
    other = f"/portal/{other_tenant.slug}"
    assert "Acme Licensing" not in (await client.get(f"{other}/login")).text
    assert "#7c2d12" not in (await client.get(f"{other}/brand.css")).text
    assert (await client.get(f"{other}/logo")).status_code == 404


async def test_api_key_page_usage_windows_units_by_day_reset_and_revoke(app, client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    product = await make_product(client, tenant.headers, name="Weather API", features=("api:rate:minute:10",))
    made = await client.post(f"{base}/api-keys", data={"csrf_token": form, "product_id": str(product),
                                                       "client_name": "Acme Corp", "max_api_calls": "1000"})
    api_key = secret_of(made.text)
    key_url = f"{base}/api-keys/" + re.search(rf'href="{base}/api-keys/(\d+)"', made.text).group(1)
    for _ in range(3):
        r = await client.post("/api/apilicense/validate", json={"apiKey": api_key, "units": 2}, headers=tenant.headers)
        assert r.status_code == 200 and r.json()["isValid"] is True, r.text
    page = await client.get(key_url)
    meters = re.findall(r'<span class="meter-label">([^<]+)</span>.*?<span class="meter-value">([^<]+)</span>',
                        page.text, re.S)
    assert meters == [("Lifetime quota", "6 / 1000 (1%)"),   # units against the quota, calls against the window
                      ("calls minute", "3 / 10 (30%) · resets 2027-01-15 08:01 UTC")], meters
    for _ in range(200):   # units by day: from the write-behind record, which may take them in parts
        page = await client.get(key_url)
        if re.search(r"<td>2027-01-15</td><td>6</td>", page.text):
            break
        await asyncio.sleep(0.05)
    assert re.search(r"<td>2027-01-15</td><td>6</td>", page.text), page.text
    await client.post(f"{key_url}/reset", data={"csrf_token": form, "period": "minute"})
    page = await client.get(key_url)
    assert "0 / 10 (0%)" in page.text and "6 / 1000 (1%)" in page.text   # the window only
    r = await client.post(f"{key_url}/revoke", data={"csrf_token": form})
    assert r.status_code == 303
    page = await client.get(key_url)
    assert "API key revoked." in page.text and 'badge revoked' in page.text and "Revoke API key" not in page.text
    r = await client.post("/api/apilicense/validate", json={"apiKey": api_key, "units": 1}, headers=tenant.headers)
    assert r.json()["isValid"] is False and r.json()["errorCode"] == "revoked", r.text

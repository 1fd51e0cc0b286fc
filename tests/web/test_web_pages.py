"""Admin and portal pages through HTTP: the flows a person follows, against real PostgreSQL, Redis and SMTP."""

from __future__ import annotations

import re

import pytest
from web_helpers import activate_from, csrf_of, portal_cookie, secret_of, sign_in_admin

from conftest import running_app
from quota_gateway.events import jobs


@pytest.fixture
async def mail_app(settings, clock, smtp_server):
    mailing = settings.with_(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                             smtp_from="licensing@acme.example")
    async with running_app(mailing, clock) as (app, client):
        yield app, client


async def _code_from_mail(app, smtp_server, count: int) -> tuple[str, str]:
    await jobs.run_due(app.state.services)
    mails = await smtp_server.wait_for(count)
    mail = mails[count - 1]
    code = re.search(r"\b(\d{6})\b", mail.subject)
    link = re.search(r"(http://\S+/login/code\?\S+)", mail.text)
    assert code and link, mail.text
    return code.group(1), link.group(1)


async def test_admin_manages_products_keys_and_tokens(client, settings, tenant, clock):
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    r = await client.post(f"{base}/products", data={"csrf_token": form, "name": "Desk App", "cooldown_hours": "24"})
    product_url = r.headers["location"]
    assert (await client.post(f"{product_url}/features", data={"csrf_token": form, "name": "export"})).status_code == 303
    product_id = product_url.rsplit("/", 1)[1]
    page = await client.get(product_url)
    assert "export" in page.text and "Feature “export” added." in page.text
    made = await client.post(f"{base}/licenses", data={"csrf_token": form, "product_id": product_id,
                                                       "email": "buyer@example.com", "kind": "standard"})
    assert made.status_code == 200 and "shown this once" in made.text
    key = secret_of(made.text)
    listing = await client.get(f"{base}/licenses", params={"q": "buyer@"})
    assert "buyer@example.com" in listing.text and key not in listing.text   # masked in listings
    assert "1 key · page 1 of 1" in listing.text
    license_id = re.search(rf'href="{base}/licenses/(\d+)"', listing.text).group(1)
    code = await client.post(f"{base}/licenses/{license_id}/offline-code",
                             data={"csrf_token": form, "hardware_id": "ab12" * 16})
    assert "Offline activation code" in code.text
    detail = await client.get(f"{base}/licenses/{license_id}")
    assert "AB12AB12" in detail.text and "activated" in detail.text
    await client.post(f"{base}/licenses/{license_id}/revoke", data={"csrf_token": form})
    assert "revoked" in (await client.get(f"{base}/licenses/{license_id}")).text

    api = await client.post(f"{base}/api-keys", data={"csrf_token": form, "product_id": product_id,
                                                      "client_name": "Acme Corp", "max_api_calls": "1000"})
    api_key = secret_of(api.text)
    assert api_key.startswith("qgk_")
    v = await client.post("/api/apilicense/validate", json={"apiKey": api_key, "units": 250}, headers=tenant.headers)
    assert v.status_code == 200
    key_id = re.search(r'href="/admin/acme/api-keys/(\d+)"', api.text).group(1)
    usage = await client.get(f"{base}/api-keys/{key_id}")
    assert "250 / 1000" in usage.text
    await client.post(f"{base}/api-keys/{key_id}/reset", data={"csrf_token": form, "period": "lifetime"})
    assert "0 / 1000" in (await client.get(f"{base}/api-keys/{key_id}")).text

    t = await client.post(f"{base}/tokens", data={"csrf_token": form, "name": "billing", "scopes": ["verify", "manage"]})
    secret = secret_of(t.text)
    public_id = secret.split("_")[2]
    headers = {"Authorization": f"ExisOneApi {secret}"}
    assert (await client.get("/api/product", headers=headers)).status_code == 200
    tokens_page = await client.get(f"{base}/tokens")
    assert secret not in tokens_page.text and public_id in tokens_page.text
    await client.post(f"{base}/tokens/{public_id}/revoke", data={"csrf_token": form})
    assert (await client.get("/api/product", headers=headers)).status_code == 401

    crypto_page = await client.get(f"{base}/crypto")
    assert crypto_page.text.count("BEGIN PUBLIC KEY") == 1
    await client.post(f"{base}/crypto/rotate", data={"csrf_token": form})
    assert (await client.get(f"{base}/crypto")).text.count("BEGIN PUBLIC KEY") == 2


async def test_admin_signs_in_with_an_emailed_code(mail_app, settings, tenant, clock, smtp_server):
    app, client = mail_app
    await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock, email="boss@acme.example")
    client.cookies.clear()
    page = await client.get(f"/admin/{tenant.slug}/login")
    await client.post(f"/admin/{tenant.slug}/login", data={"csrf_token": csrf_of(page.text),
                                                           "email": "Boss@Acme.example"})
    code, _ = await _code_from_mail(app, smtp_server, 1)
    r = await client.post(f"/admin/{tenant.slug}/login/code", data={"csrf_token": csrf_of(page.text),
                                                                    "email": "boss@acme.example", "code": code})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/{tenant.slug}/"
    # Nobody else gets a code: an unknown address is answered alike, and nothing is mailed.
    await client.post(f"/admin/{tenant.slug}/login", data={"csrf_token": csrf_of(page.text),
                                                           "email": "intruder@example.com"})
    await jobs.run_due(app.state.services)
    assert len(smtp_server.messages) == 1


async def test_sign_in_mail_links_to_the_public_address(settings, clock, smtp_server, tenant, other_tenant):
    """The sign-in e-mail's link and {{CustomerPortalUrl}} use QG_PUBLIC_URL (never the request's
    Host), each tenant's mail its own portal."""
    public = settings.with_(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                            smtp_from="licensing@acme.example", public_url="https://licenses.gateway.example")
    async with running_app(public, clock) as (app, client):
        for number, t in enumerate((tenant, other_tenant), 1):
            product = (await client.post("/api/product", json={"name": "Desk"}, headers=t.headers)).json()["id"]
            await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com"},
                              headers=t.headers)
            page = await client.get(f"/portal/{t.slug}/login")
            await client.post(f"/portal/{t.slug}/login", data={"csrf_token": csrf_of(page.text),
                                                               "email": "buyer@example.com"},
                              headers={"Host": "attacker.example"})
            await jobs.run_due(app.state.services)
            mail = (await smtp_server.wait_for(number))[number - 1]
            own = f"https://licenses.gateway.example/portal/{t.slug}/"
            other = other_tenant if t is tenant else tenant
            assert f"Or open {own}login/code?" in mail.text and f"· {own}\r\n" in mail.text
            assert f'href="{own}"' in mail.html
            assert f"/portal/{other.slug}/" not in mail.text + mail.html and "attacker" not in mail.text + mail.html


async def test_customer_portal(mail_app, tenant, clock, smtp_server):
    app, client = mail_app
    product = (await client.post("/api/product", json={"name": "Desk App", "deactivationCooldownHours": 24},
                                 headers=tenant.headers)).json()["id"]
    await client.post(f"/api/product/{product}/features", json={"name": "export"}, headers=tenant.headers)
    made = (await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com",
                                                     "kind": "corporate", "maxSeats": 3, "validityDays": 365,
                                                     "features": ["export"]},
                              headers=tenant.headers)).json()
    key = made["activationKey"]
    # A key of the same product for someone else, which this customer must not see.
    await client.post("/api/licenses", json={"productId": product, "email": "someone@example.com"},
                      headers=tenant.headers)
    # Two devices activate from addresses in Australia and Germany (the country is all that is kept).
    for hardware, address in (("DEVICE-ONE", "1.1.1.1"), ("DEVICE-TWO", "85.214.0.1")):
        await activate_from(app, tenant, key, hardware, address, "buyer@example.com")

    base = f"/portal/{tenant.slug}"
    page = await client.get(f"{base}/login")
    assert page.status_code == 200
    await client.post(f"{base}/login", data={"csrf_token": csrf_of(page.text), "email": "buyer@example.com"})
    code, link = await _code_from_mail(app, smtp_server, 1)
    # The e-mailed link only shows the prefilled form: opening it signs nobody in.
    confirm = await client.get(link.replace("http://127.0.0.1:8080", ""))
    assert confirm.status_code == 200 and f'value="{code}"' in confirm.text
    assert (await client.get(f"{base}/")).status_code == 303
    r = await client.post(f"{base}/login/code", data={"csrf_token": csrf_of(confirm.text),
                                                      "email": "buyer@example.com", "code": code})
    assert r.status_code == 303
    home = await client.get(f"{base}/")
    assert "Desk App" in home.text and "2 of 3 in use" in home.text and "DEVICE-ONE" in home.text
    # Each license with its product, type, seats, expiry and features; only this address's keys.
    assert home.text.count('class="card license"') == 1 and "<dd>Corporate</dd>" in home.text
    assert made["expirationDate"][:10] in home.text and '<span class="tag">export</span>' in home.text
    history = await client.get(f"{base}/history")
    countries = re.findall(r"<td>([A-Z]{2})</td></tr>", history.text)
    assert sorted(countries) == ["AU", "DE"]
    license_id = re.search(rf'action="{base}/licenses/(\d+)/deactivate"', home.text).group(1)
    form = csrf_of(home.text)
    r = await client.post(f"{base}/licenses/{license_id}/deactivate", data={"csrf_token": form,
                                                                            "hardware_id": "DEVICE-ONE"})
    assert r.status_code == 303
    home = await client.get(f"{base}/")
    assert "1 of 3 in use" in home.text and "Next possible" in home.text
    # The cooldown applies and says when.
    await client.post(f"{base}/licenses/{license_id}/deactivate", data={"csrf_token": form,
                                                                        "hardware_id": "DEVICE-TWO"})
    assert "You can free another in 24 h" in (await client.get(f"{base}/")).text
    assert "DEVICE-TWO" in (await client.get(f"{base}/")).text


async def test_portal_shows_only_the_customers_own_licenses(client, settings, tenant, other_tenant, clock):
    for t, name in ((tenant, "Acme Tool"), (other_tenant, "Globex Tool")):
        product = (await client.post("/api/product", json={"name": name}, headers=t.headers)).json()["id"]
        await client.post("/api/licenses", json={"productId": product, "email": "same@example.com"}, headers=t.headers)
    await client.post("/api/licenses", json={"productId": product, "email": "other@example.com"},
                      headers=other_tenant.headers)
    cookie = await portal_cookie(settings.database_url, other_tenant.id, clock, "same@example.com")
    client.cookies.set("qg_portal", cookie, path=f"/portal/{other_tenant.slug}")
    home = await client.get(f"/portal/{other_tenant.slug}/")
    assert "Globex Tool" in home.text and "Acme Tool" not in home.text
    assert home.text.count('class="card license"') == 1
    client.cookies.set("qg_portal", cookie, path=f"/portal/{tenant.slug}")
    assert (await client.get(f"/portal/{tenant.slug}/")).status_code == 303

"""The admin UI and the portal in a real headless Chromium (Debian's chromium + chromedriver).

The gateway runs under uvicorn on a free loopback port; sign-in codes come from a real SMTP
server; every page visited is saved to test-artifacts/screenshots/ (at desktop and 360 px widths).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from pathlib import Path
from typing import Self

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait
from web_helpers import activate_from, make_admin_link, portal_cookie

from conftest import running_app
from quota_gateway.app import create_app
from quota_gateway.embedded import free_port

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="chromium and chromedriver are installed by `make browser`")


class LiveServer:
    """uvicorn serving the app on its own thread and event loop."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on",
                                                    log_level="warning", loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self.thread.start()
        for _ in range(300):
            if self.server.started:
                return self
            await asyncio.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 20)


@pytest.fixture(scope="module")
def browser():
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(browser, name: str) -> None:
    """A full-height screenshot at desktop width, and one at 360 px (phones). Every page shot is
    also checked: each form field has a label (or an aria name), and everything the page loaded came
    from the gateway itself (no CDN)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter(e => e.type !== 'hidden'"
        " && !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))"
        " .map(e => e.outerHTML.slice(0, 160))")
    assert not unlabelled, f"{name}: form fields without a label: {unlabelled}"
    foreign = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
        " .filter(u => !u.startsWith(location.origin + '/') && !u.startsWith('data:'))")
    assert not foreign, f"{name} loaded from elsewhere: {foreign}"
    for width, suffix in ((1280, ""), (360, "-360")):
        browser.set_window_size(width, 900)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(max(height, 600), 4000))
        browser.save_screenshot(str(SHOTS / f"{name}{suffix}.png"))
        if width == 360:   # nothing may overflow a phone's width
            overflow = browser.execute_script("return document.documentElement.scrollWidth")
            culprits = browser.execute_script(
                "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 362"
                " && !e.closest('.table-wrap')).map(e => e.tagName + '.' + e.className).slice(0, 5)"
                " .concat([window.innerWidth, document.documentElement.clientWidth])")
            assert overflow <= 362, f"{name} is {overflow}px wide at 360px: {culprits}"
    browser.set_window_size(1280, 900)


def fill(browser, field_id: str, text: str) -> None:
    element = browser.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(text)


def _left_document(element) -> bool:
    """The element is gone: the next page replaced it. While the page is being swapped Chromium may
    answer "Node with given id does not belong to the document" instead of a stale reference."""
    try:
        element.is_enabled()
    except (StaleElementReferenceException, WebDriverException):
        return True
    return False


def submit(browser, css: str) -> None:
    """Click a form's button and wait for the page it leads to."""
    button = browser.find_element(By.CSS_SELECTOR, css)
    button.click()
    WebDriverWait(browser, 15).until(lambda _: _left_document(button))
    WebDriverWait(browser, 15).until(lambda b: b.execute_script("return document.readyState") == "complete")


async def sign_in_in_browser(browser, url: str, database_url: str, tenant, clock) -> None:
    """The browser signs in to the tenant's admin UI through a one-time link (GET, then the button)."""
    token = await make_admin_link(database_url, tenant.id, "owner@acme.example", clock)
    browser.get(f"{url}/admin/{tenant.slug}/login/link?token={token}")
    await asyncio.to_thread(submit, browser, "form button[type=submit]")


async def send_form(browser, url: str | None, fields: dict[str, str], form: str) -> None:
    """Open `url` (None: stay), fill the fields by id, press the submit button of the form `form`
    (a CSS selector) and wait for the page it leads to."""
    if url:
        browser.get(url)
    for field_id, text in fields.items():
        fill(browser, field_id, text)
    await asyncio.to_thread(submit, browser, f"{form} button[type=submit]")


async def wait_for_mail(smtp_server, count: int) -> str:
    mails = await smtp_server.wait_for(count, timeout=15)
    code = re.search(r"\b(\d{6})\b", mails[count - 1].subject)
    assert code
    return code.group(1)


@pytest.fixture
async def live(settings, clock, smtp_server, tenant):
    mailing = settings.with_(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                             smtp_from="licensing@acme.example")
    async with LiveServer(create_app(mailing, clock=clock)) as server:
        yield server, mailing


async def test_admin_in_a_browser(live, browser, tenant, clock, smtp_server):
    server, mailing = live
    token = await make_admin_link(mailing.database_url, tenant.id, "owner@acme.example", clock)
    # A one-time link, as `make run` prints it: the GET shows a button, the POST signs in.
    browser.get(f"{server.url}/admin/{tenant.slug}/login/link?token={token}")
    shot(browser, "admin-link-confirm")
    await asyncio.to_thread(submit, browser, "form button[type=submit]")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Dashboard"

    await send_form(browser, f"{server.url}/admin/{tenant.slug}/products", {"name": "Desk App", "cooldown_hours": "24"},
                    "form[action$='/products']")
    assert "Desk App" in browser.find_element(By.TAG_NAME, "h1").text
    fill(browser, "fname", "export")
    await asyncio.to_thread(submit, browser, "form[action$='/features'] button[type=submit]")
    assert "export" in browser.page_source
    shot(browser, "admin-product")

    await send_form(browser, f"{server.url}/admin/{tenant.slug}/licenses", {"email": "buyer@example.com"},
                    "form[method=post][action$='/licenses']")
    key = browser.find_element(By.ID, "secret").get_attribute("value")
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4})+", key), key
    shot(browser, "admin-license-created")
    browser.get(f"{server.url}/admin/{tenant.slug}/licenses")
    assert "buyer@example.com" in browser.page_source
    shot(browser, "admin-licenses")

    await send_form(browser, f"{server.url}/admin/{tenant.slug}/tokens", {"name": "billing backend"},
                    "form[action$='/tokens']")
    secret = browser.find_element(By.ID, "secret").get_attribute("value")
    public_id = secret.split("_")[2]
    async with httpx.AsyncClient(base_url=server.url) as api:
        headers = {"Authorization": f"ExisOneApi {secret}"}
        assert (await api.post("/api/license/validate", headers=headers,
                               json={"activationKey": key, "hardwareId": "X"})).status_code == 200
        browser.get(f"{server.url}/admin/{tenant.slug}/tokens")
        browser.execute_script("window.confirm = () => true;")
        await asyncio.to_thread(submit, browser, f"#token-{public_id} form button")
        assert "revoked" in browser.find_element(By.ID, f"token-{public_id}").text.lower()
        shot(browser, "admin-tokens")
        assert (await api.post("/api/license/validate", headers=headers,
                               json={"activationKey": key, "hardwareId": "X"})).status_code == 401

    browser.get(f"{server.url}/admin/{tenant.slug}/")
    shot(browser, "admin-dashboard-first-steps")
    browser.get(f"{server.url}/admin/{tenant.slug}/crypto")
    shot(browser, "admin-crypto")
    await asyncio.to_thread(submit, browser, "form.signout button")
    assert "/login" in browser.current_url


async def test_portal_in_a_browser(live, browser, tenant, clock, smtp_server):
    server, mailing = live
    async with running_app(mailing, clock) as (app, client):
        product = (await client.post("/api/product", json={"name": "Desk App", "deactivationCooldownHours": 24},
                                     headers=tenant.headers)).json()["id"]
        await client.post(f"/api/product/{product}/features", json={"name": "export"}, headers=tenant.headers)
        key = (await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com",
                                                        "kind": "corporate", "maxSeats": 3},
                                 headers=tenant.headers)).json()["activationKey"]
        for hardware, address in (("A1B2C3D4E5F6A7B8", "1.1.1.1"), ("FFEE0011DDCC2233", "85.214.0.1")):
            await activate_from(app, tenant, key, hardware, address, "buyer@example.com")

    browser.delete_all_cookies()
    browser.get(f"{server.url}/portal/{tenant.slug}/login")
    shot(browser, "portal-login")
    fill(browser, "email", "buyer@example.com")
    await asyncio.to_thread(submit, browser, "form button[type=submit]")
    code = await wait_for_mail(smtp_server, 1)
    fill(browser, "code", code)
    await asyncio.to_thread(submit, browser, "form button[type=submit]")
    assert browser.find_element(By.TAG_NAME, "h1").text == "My licenses"
    assert "2 of 3 in use" in browser.page_source
    shot(browser, "portal-licenses")

    browser.execute_script("window.confirm = () => true;")
    await asyncio.to_thread(submit, browser, ".devices li:first-child button")
    assert "1 of 3 in use" in browser.page_source and "Next possible" in browser.page_source
    shot(browser, "portal-after-deactivate")

    await asyncio.to_thread(submit, browser, "nav a[href$='/history']")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert any(r.text.endswith("AU") for r in rows) and any(r.text.endswith("DE") for r in rows)
    assert any("deactivated" in r.text for r in rows)
    shot(browser, "portal-history")


async def test_analytics_in_a_browser(live, browser, tenant, clock):
    server, mailing = live
    async with running_app(mailing, clock) as (app, client):
        product = (await client.post("/api/product", json={"name": "Desk App"}, headers=tenant.headers)).json()["id"]
        addresses = ["1.1.1.1", "1.1.1.2", "85.214.0.1", "133.1.1.1", "5.9.0.1", "200.1.1.1"]
        for i, address in enumerate(addresses):
            key = (await client.post("/api/licenses", json={"productId": product, "email": f"c{i}@example.com"},
                                     headers=tenant.headers)).json()["activationKey"]
            await activate_from(app, tenant, key, f"HW{i}", address, f"c{i}@example.com")
            clock.advance(86400 * (i % 2))   # spread over a few days
        await client.post("/api/license/validate", headers=tenant.headers,
                          json={"activationKey": key, "hardwareId": "SOMEONE-ELSE", "productName": "Desk App"})
        api_product = (await client.post("/api/product", json={"name": "Weather API"},
                                         headers=tenant.headers)).json()["id"]
        api_key = (await client.post("/api/apilicense", json={"productId": api_product, "maxApiCalls": 100,
                                                              "clientName": "Big Client"},
                                     headers=tenant.headers)).json()["apiKey"]
        async with httpx.AsyncClient(base_url=server.url) as api:   # counted by the process serving the page
            r = await api.post("/api/apilicense/validate", json={"apiKey": api_key, "units": 90},
                               headers=tenant.headers)
            assert r.status_code == 200
        async with app.state.services.pool.acquire() as conn:   # written behind within the flush interval
            for _ in range(100):
                if await conn.fetchval("SELECT count(*) FROM api_usage_daily"):
                    break
                await asyncio.sleep(0.05)

    browser.delete_all_cookies()
    await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)
    browser.get(f"{server.url}/admin/{tenant.slug}/analytics?grain=day")
    WebDriverWait(browser, 15).until(
        lambda b: b.execute_script("return document.getElementById('map').dataset.rendered === 'true'"))
    # The activations chart drew something: count non-transparent pixels on its canvas.
    painted = browser.execute_script("""
        const c = document.querySelector('#chart-activations canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;""")
    assert painted > 500, painted
    assert "6 activations in this period" in browser.page_source
    # The map coloured the countries with activations, and not the others.
    fills = browser.execute_script("""
        const f = (code) => { const p = document.querySelector('#map [data-code="' + code + '"]');
                              return p ? (p.getAttribute('fill') || getComputedStyle(p).fill) : null; };
        return {AU: f('AU'), DE: f('DE'), JP: f('JP'), FR: f('FR')};""")
    assert fills["AU"] and fills["DE"] and fills["JP"], fills
    assert fills["AU"] != fills["FR"] and fills["DE"] != fills["FR"], fills
    assert fills["AU"] == fills["DE"] != fills["JP"], fills   # shades follow the counts (2, 2, 1)
    page = browser.page_source
    assert "AU: 2" in page and "DE: 2" in page
    assert "not_activated" in page   # the refused validation, by status
    assert "None yet." not in page   # the API-key validation, by outcome
    assert "Big Client" in page and "90 / 100 (90 %)" in page   # most used, and near its limit
    shot(browser, "admin-analytics")
    browser.get(f"{server.url}/admin/{tenant.slug}/")   # the dashboard with the same data
    assert len(browser.find_elements(By.CSS_SELECTOR, "table tbody tr")) == 6
    shot(browser, "admin-dashboard")


async def test_admin_floating_keys_plans_and_email_in_a_browser(live, browser, tenant, clock, smtp_server):
    server, mailing = live
    async with httpx.AsyncClient(base_url=server.url) as api:
        product = (await api.post("/api/product", json={"name": "CAD Suite"}, headers=tenant.headers)).json()["id"]
        await api.post(f"/api/product/{product}/features", json={"name": "render"}, headers=tenant.headers)
    browser.delete_all_cookies()
    await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)

    await send_form(browser, f"{server.url}/admin/{tenant.slug}/products",
                    {"plan_name": "Annual", "duration_days": "365"}, "form[action$='/plans']")
    assert "365 days" in browser.find_element(By.CSS_SELECTOR, "[id^=plan-]").text

    await send_form(browser, f"{server.url}/admin/{tenant.slug}/floating", {"customer_name": "Initech"},
                    "form[action$='/customers']")
    await send_form(browser, None, {"lease_limit": "3", "features": "render"}, "form[action$='/floating/keys']")
    key = browser.find_element(By.ID, "secret").get_attribute("value")
    async with httpx.AsyncClient(base_url=server.url) as api:
        for client_id in ("workstation-7", "laptop-3"):
            r = await api.post(f"/licensing/{tenant.id}/lease/obtain", json={"key": key, "clientId": client_id})
            assert r.json()["success"], r.text
    await asyncio.to_thread(submit, browser, "a.button")   # "Done": the key's page

    def leases_listed(b) -> bool:
        if "laptop-3" in b.page_source and "workstation-7" in b.page_source:
            return True
        b.refresh()   # the lease history reaches Postgres within the flush interval
        return False
    await asyncio.to_thread(WebDriverWait(browser, 10, poll_frequency=0.3).until, leases_listed)
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.lease")) == 2
    assert "2 of 3" in browser.page_source
    shot(browser, "admin-floating-key")
    browser.get(f"{server.url}/admin/{tenant.slug}/floating")
    assert "2 / 3" in browser.page_source
    shot(browser, "admin-floating")

    browser.get(f"{server.url}/admin/{tenant.slug}/email")
    fill(browser, "host", smtp_server.host)
    fill(browser, "port", str(smtp_server.port))
    browser.find_element(By.CSS_SELECTOR, "#security option[value=none]").click()
    fill(browser, "from", "shop@acme.example")
    await asyncio.to_thread(submit, browser, "form[action$='/email/smtp'] button[type=submit]")
    assert "SMTP settings saved." in browser.page_source
    fill(browser, "to", "me@acme.example")
    await asyncio.to_thread(submit, browser, "form[action$='/smtp/test'] button[type=submit]")
    assert "Test message sent" in browser.page_source
    assert "SMTP test" in (await smtp_server.wait_for(1, timeout=15))[0].subject
    shot(browser, "admin-email")
    browser.find_element(By.CSS_SELECTOR, "a[href$='/email/templates/ticket_reply']").click()
    fill(browser, "subject", "Re: {{TicketSubject}} [Acme support]")
    await asyncio.to_thread(submit, browser, "form[action$='/ticket_reply'] button[type=submit]")
    assert "Template ticket_reply saved." in browser.page_source
    shot(browser, "admin-email-template")


async def test_support_tickets_in_a_browser(live, browser, tenant, clock, smtp_server):
    server, mailing = live
    from quota_gateway.db import create_pool
    from quota_gateway.support import service as support

    cookie = await portal_cookie(mailing.database_url, tenant.id, clock, "buyer@example.com")
    browser.delete_all_cookies()
    browser.get(f"{server.url}/portal/{tenant.slug}/login")
    browser.add_cookie({"name": "qg_portal", "value": cookie, "path": f"/portal/{tenant.slug}"})
    browser.get(f"{server.url}/portal/{tenant.slug}/tickets")
    fill(browser, "product", "Desk App")
    browser.find_element(By.CSS_SELECTOR, "#priority option[value=High], #priority option:nth-child(3)").click()
    fill(browser, "subject", "Export fails <b>on Windows</b>")
    fill(browser, "message", "Clicking Export shows <script>alert(1)</script>\nand nothing happens.")
    await asyncio.to_thread(submit, browser, "form[action$='/tickets'] button[type=submit]")
    assert "Your request is sent" in browser.page_source
    assert "<script>alert(1)</script>" in browser.find_element(By.CSS_SELECTOR, ".message .body").text
    ticket_id = int(browser.current_url.rsplit("/", 1)[1])

    pool = await create_pool(mailing.database_url, max_size=1)
    try:   # the staff answers through the support service
        async with pool.acquire() as conn:
            await support.add_staff_reply(conn, mailing, tenant.id, ticket_id, "Please update to 2.1 and try again.",
                                          clock.utcnow())
    finally:
        await pool.close()
    browser.refresh()
    assert "Support team" in browser.page_source and "Please update to 2.1" in browser.page_source
    fill(browser, "message", "2.1 fixed it, thank you!")
    await asyncio.to_thread(submit, browser, "form[action$='/reply'] button[type=submit]")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".thread .message")) == 3
    shot(browser, "portal-ticket")

    await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)
    browser.get(f"{server.url}/admin/{tenant.slug}/tickets")
    assert "Export fails" in browser.find_element(By.ID, f"ticket-{ticket_id}").text
    shot(browser, "admin-tickets")
    browser.find_element(By.CSS_SELECTOR, f"#ticket-{ticket_id} a").click()
    fill(browser, "message", "Glad to hear it. Closing this one.")
    await asyncio.to_thread(submit, browser, "form[action$='/reply'] button[type=submit]")
    await asyncio.to_thread(submit, browser, "form[action$='/status'] button[type=submit]")
    assert "Ticket resolved." in browser.page_source
    assert len(browser.find_elements(By.CSS_SELECTOR, ".thread .message")) == 4
    shot(browser, "admin-ticket")


async def test_servicenow_round_trip_in_a_browser(live, browser, tenant, clock):
    """The admin connects ServiceNow and issues the inbound token in the browser; a ticket becomes
    an incident, an agent answers in ServiceNow, and the answer shows on the ticket's page."""
    from support.servicenow_standin import StandinServer

    server, mailing = live
    standin = StandinServer().start()
    try:
        await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)
        base = f"{server.url}/admin/{tenant.slug}"
        await send_form(browser, f"{base}/servicenow", {"instance_url": standin.url, "username": "integration",
                                                         "password": "s3cret-Passw0rd"},
                        "form[action$='/servicenow']")
        assert "ServiceNow settings saved." in browser.page_source
        assert "No inbound token yet" in browser.page_source
        await asyncio.to_thread(submit, browser, "form[action$='/servicenow/inbound-token'] button[type=submit]")
        token = browser.find_element(By.ID, "secret").get_attribute("value")
        assert token.startswith("qgsn_") and f"/hooks/servicenow/{tenant.slug}" in browser.page_source
        browser.get(f"{base}/servicenow")
        assert "An inbound token is set" in browser.page_source and token not in browser.page_source
        shot(browser, "admin-servicenow")

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
            r = await api.post("/api/support/ticket", headers=tenant.headers, json={
                "productName": "Desk App", "email": "buyer@example.com", "subject": "Sync stops at 99 %",
                "message": "The sync never finishes."})
            ticket_id = r.json()["ticketId"]
            for _ in range(200):   # the gateway's job worker makes the incident
                if standin.instance.records():
                    break
                await asyncio.sleep(0.05)
            [incident] = standin.instance.records()
            standin.instance.agent_update(incident["sys_id"], {"comments": "A fix ships in 2.2 <tomorrow>."})
            for post in standin.instance.rule_posts:   # what the business rule posts
                r = await api.post(f"/hooks/servicenow/{tenant.slug}", json=post,
                                   headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200 and r.json()["applied"] == ["comment"], r.text
        browser.get(f"{base}/tickets/{ticket_id}")
        messages = browser.find_elements(By.CSS_SELECTOR, ".thread .message")
        assert len(messages) == 2 and "Staff (in ServiceNow)" in messages[1].text
        assert "A fix ships in 2.2 <tomorrow>." in messages[1].text   # shown as text
        assert incident["number"] in browser.page_source
        shot(browser, "admin-ticket-servicenow")
    finally:
        standin.stop()


async def test_admin_payments_in_a_browser(live, browser, tenant, clock):
    """A Stripe purchase of a price nobody mapped shows as `unmapped`; the admin maps it (API) and
    presses "Process again": the key is made."""
    from payments.payhelpers import checkout_session, stripe_event, stripe_headers

    server, mailing = live
    secret = "whsec_test_Browser5WbX5kEWLlfzsGNjH64I8"

    async def outcomes(api) -> list[str | None]:
        r = await api.get("/api/payments/events", headers=tenant.headers)
        return [e["outcome"] for e in r.json()["items"]]

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        product = (await api.post("/api/product", json={"name": "Desk App"}, headers=tenant.headers)).json()["id"]
        mapping = {"priceId": "price_pro", "productId": product, "validityDays": 365}
        r = await api.put("/api/payments/stripe", headers=tenant.headers,
                          json={"webhookSecret": secret, "mappings": [mapping]})
        assert r.status_code == 200, r.text
        body = stripe_event("checkout.session.completed",
                            checkout_session("cs_test_browser", email="ada@example.com", price_id="price_team"),
                            event_id="evt_browser", created=int(clock.now()))
        r = await api.post(f"/hooks/stripe/{tenant.slug}", content=body,
                           headers=stripe_headers(body, secret, int(clock.now())))
        assert r.status_code == 200, r.text
        for _ in range(200):   # the gateway's job worker processes it
            if await outcomes(api) == ["unmapped"]:
                break
            await asyncio.sleep(0.05)
        assert await outcomes(api) == ["unmapped"]
        await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)
        browser.get(f"{server.url}/admin/{tenant.slug}/payments")
        row = browser.find_element(By.CSS_SELECTOR, "tr[id^=payment-event-]")
        assert "unmapped" in row.text.lower() and "evt_browser" in row.text   # badges are upper-cased by CSS
        assert "price_pro" in browser.page_source and secret not in browser.page_source
        shot(browser, "admin-payments")
        r = await api.put("/api/payments/stripe", headers=tenant.headers, json={"mappings": [
            mapping, {"priceId": "price_team", "productId": product, "licenseKind": "corporate", "seats": 5}]})
        assert r.status_code == 200, r.text
        await asyncio.to_thread(submit, browser, "tr[id^=payment-event-] form button[type=submit]")
        assert "queued to be processed again" in browser.page_source
        for _ in range(200):
            if await outcomes(api) == ["fulfilled:1"]:
                break
            await asyncio.sleep(0.05)
        assert await outcomes(api) == ["fulfilled:1"]
        browser.refresh()
        assert "fulfilled:1" in browser.find_element(By.CSS_SELECTOR, "tr[id^=payment-event-]").text.lower()
        licenses = (await api.get("/api/licenses", headers=tenant.headers)).json()["items"]
        assert [(lic["licenseType"], lic["maxSeats"]) for lic in licenses] == [("corporate", 5)]


async def test_admin_webhooks_in_a_browser(live, browser, tenant, other_tenant, clock, webhook_receiver):
    server, mailing = live
    async with httpx.AsyncClient(base_url=server.url) as api:   # globex's endpoint, which acme must not see
        theirs = (await api.post("/api/webhooks", json={"url": webhook_receiver.url + "?globex", "events": ["*"]},
                                 headers=other_tenant.headers)).json()["id"]
    browser.delete_all_cookies()
    await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)

    browser.get(f"{server.url}/admin/{tenant.slug}/webhooks")
    assert "globex" not in browser.page_source
    fill(browser, "url", webhook_receiver.url)
    fill(browser, "description", "Billing system")
    await asyncio.to_thread(submit, browser, "form[action$='/webhooks'] button[type=submit]")
    secret = browser.find_element(By.ID, "secret").get_attribute("value")
    assert secret.startswith("whsec_")
    webhook_receiver.secrets.append(secret)
    shot(browser, "admin-webhook-secret")
    await asyncio.to_thread(submit, browser, "a.button")   # "Done": the endpoint's page

    await asyncio.to_thread(submit, browser, "form[action$='/ping'] button")
    assert "Ping delivered: HTTP 200" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    arrival = (await webhook_receiver.wait_for(1))[0]
    assert arrival.event_type == "webhook.ping" and arrival.exiso_ok
    assert browser.find_element(By.ID, "request-body").text == arrival.body.decode()

    browser.execute_script("window.confirm = () => true;")
    await asyncio.to_thread(submit, browser, "form[action$='/redeliver'] button")
    assert "Redelivery queued" in browser.page_source
    arrivals = await webhook_receiver.wait_for(2, timeout=15)   # the gateway's job worker sends it
    assert arrivals[1].json["id"] == arrivals[0].json["id"] and arrivals[1].exiso_ok

    def second_attempt_shown(b) -> bool:
        if b.find_elements(By.CSS_SELECTOR, "#attempt-2 .badge.succeeded"):
            return True
        b.refresh()   # the attempt's outcome is recorded just after the receiver answered
        return False
    await asyncio.to_thread(WebDriverWait(browser, 10, poll_frequency=0.3).until, second_attempt_shown)
    shot(browser, "admin-webhook-delivery")

    browser.find_element(By.CSS_SELECTOR, "p.small a[href*='/webhooks/']").click()
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.CSS_SELECTOR, "table.deliveries"))
    row = browser.find_element(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert "webhook.ping" in row.text and "SUCCEEDED" in row.text.upper() and "HTTP 200" in row.text
    assert row.find_elements(By.TAG_NAME, "td")[2].text == "2"   # attempts
    webhook_receiver.fail_next(1, status=503)
    await asyncio.to_thread(submit, browser, "form[action$='/ping'] button")
    assert "Ping failed: HTTP 503" in browser.find_element(By.CSS_SELECTOR, ".flash.error").text
    await asyncio.to_thread(submit, browser, "p.small a[href*='/webhooks/']")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")) == 2
    browser.find_element(By.CSS_SELECTOR, "#status option[value=succeeded]").click()
    await asyncio.to_thread(submit, browser, "form[role=search] button")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")
    assert len(rows) == 1 and "HTTP 200" in rows[0].text
    await asyncio.to_thread(submit, browser, "form[action$='/rotate-secret'] button")
    rotated = browser.find_element(By.ID, "secret").get_attribute("value")
    assert rotated.startswith("whsec_") and rotated != secret
    await asyncio.to_thread(submit, browser, "a.button")
    assert rotated[:10] in browser.page_source and secret[:10] in browser.page_source   # both sign for now
    shot(browser, "admin-webhook")

    browser.get(f"{server.url}/admin/{tenant.slug}/webhooks")
    assert "Billing system" in browser.page_source and "HTTP 503" in browser.page_source   # the latest attempt
    assert "globex" not in browser.page_source
    shot(browser, "admin-webhooks")
    browser.get(f"{server.url}/admin/{tenant.slug}/webhooks/deliveries")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.deliveries tbody tr")) == 2
    shot(browser, "admin-webhook-deliveries")
    # Another tenant's endpoint, by number and through its own admin pages: neither is reachable.
    browser.get(f"{server.url}/admin/{tenant.slug}/webhooks/{theirs}")
    assert "no webhook endpoint" in browser.page_source and "globex" not in browser.page_source
    browser.get(f"{server.url}/admin/{other_tenant.slug}/webhooks")
    assert browser.current_url.endswith(f"/admin/{other_tenant.slug}/login")


async def test_first_start_link_lets_a_new_user_manage_products_keys_and_tokens(browser, tmp_path):
    """`make run` on a first start (`quota-gateway serve` with its embedded servers): the one-time
    link it prints, opened in the browser, signs in; the new user makes a product, a license key and
    an access token, and the token validates the key."""
    from test_serve import _start_serve, _stop, _wait_healthy

    proc, port, lines = await asyncio.to_thread(_start_serve, tmp_path)
    try:
        link = re.search(r"web admin sign-in link for \S+ \(one use, \d+ min\): (http\S+)", "".join(lines))
        assert link, lines
        base = f"http://127.0.0.1:{port}/admin/default"
        assert link.group(1).startswith(f"{base}/login/link?token=")
        await asyncio.to_thread(_wait_healthy, f"http://127.0.0.1:{port}/healthz")
        browser.delete_all_cookies()
        browser.get(link.group(1))
        await asyncio.to_thread(submit, browser, "form button[type=submit]")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Dashboard"

        await send_form(browser, f"{base}/products", {"name": "First App"}, "form[action$='/products']")
        assert "First App" in browser.find_element(By.TAG_NAME, "h1").text
        await send_form(browser, f"{base}/licenses", {"email": "first@example.com"},
                        "form[method=post][action$='/licenses']")
        key = browser.find_element(By.ID, "secret").get_attribute("value")
        await send_form(browser, f"{base}/tokens", {"name": "first backend"}, "form[action$='/tokens']")
        token = browser.find_element(By.ID, "secret").get_attribute("value")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
            r = await api.post("/api/license/validate", headers={"Authorization": f"ExisOneApi {token}"},
                               json={"activationKey": key, "hardwareId": "FIRST-DEVICE"})
            assert r.status_code == 200 and r.json()["status"] == "not_activated", r.text
        browser.get(f"{base}/licenses")
        assert "first@example.com" in browser.page_source
    finally:
        await asyncio.to_thread(_stop, proc)


async def test_tenants_stay_apart_in_a_browser(live, browser, tenant, other_tenant, clock, smtp_server):
    """Two tenants with the same customer: acme's admin and acme's portal show acme's data only,
    never globex's, and globex's pages and objects are out of reach of acme's sessions."""
    server, mailing = live
    async with running_app(mailing, clock) as (app, client):
        made = {}
        for t, name, address in ((tenant, "Acme Desk", "1.1.1.1"), (other_tenant, "Globex Desk", "133.1.1.1")):
            product = (await client.post("/api/product", json={"name": name}, headers=t.headers)).json()["id"]
            made[t.slug] = (await client.post("/api/licenses", json={"productId": product, "email": "same@example.com"},
                                              headers=t.headers)).json()
            await activate_from(app, t, made[t.slug]["activationKey"], f"HW-{t.slug.upper()}", address,
                                "same@example.com", product=name)
    theirs = made[other_tenant.slug]

    browser.delete_all_cookies()
    await sign_in_in_browser(browser, server.url, mailing.database_url, tenant, clock)
    admin = f"{server.url}/admin/{tenant.slug}"
    for path in ("/", "/products", "/licenses", "/licenses?q=same%40example.com", "/analytics"):
        browser.get(admin + path)
        page = browser.page_source
        assert "Globex" not in page and "HW-GLOBEX" not in page and "JP: " not in page, path
    assert "AU: 1" in browser.page_source   # the map's countries: acme's activation only
    browser.get(f"{admin}/licenses")
    assert "Acme Desk" in browser.page_source and "same@example.com" in browser.page_source
    browser.get(f"{admin}/licenses/{theirs['id']}")   # globex's key by number, through acme's pages
    assert "There is no such license key." in browser.page_source
    assert "Globex" not in browser.page_source and "HW-GLOBEX" not in browser.page_source
    shot(browser, "admin-other-tenants-license")
    browser.get(f"{server.url}/admin/{other_tenant.slug}/licenses")   # acme's session is no session there
    assert browser.current_url.endswith(f"/admin/{other_tenant.slug}/login")

    browser.delete_all_cookies()
    browser.get(f"{server.url}/portal/{tenant.slug}/login")
    fill(browser, "email", "same@example.com")
    await asyncio.to_thread(submit, browser, "form button[type=submit]")
    fill(browser, "code", await wait_for_mail(smtp_server, 1))
    await asyncio.to_thread(submit, browser, "form button[type=submit]")
    assert "Acme Desk" in browser.page_source and "Globex" not in browser.page_source
    assert "HW-ACME" in browser.page_source and "HW-GLOBEX" not in browser.page_source
    await asyncio.to_thread(submit, browser, "nav a[href$='/history']")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert len(rows) == 1 and rows[0].endswith("AU"), rows   # not globex's activation from Japan
    browser.get(f"{server.url}/portal/{other_tenant.slug}/")   # the same customer, another tenant: sign in again
    assert browser.current_url.endswith(f"/portal/{other_tenant.slug}/login")

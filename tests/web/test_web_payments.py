"""The admin payments page through HTTP: each provider's receiver URL, masked secrets and
mappings, the events with their outcomes (filtered), and processing an event again once its
mapping is fixed; CSRF on the form, and another tenant's events never shown."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from web_helpers import sign_in_admin

from conftest import running_app
from payments.payhelpers import checkout_session, stripe_event, stripe_headers
from quota_gateway.events import jobs

SECRET = "whsec_test_AdminPage5WbX5kEWLlfzsGNjH64I8"


@pytest.fixture
async def quiet(settings, clock):
    """The app with its job worker off: the test runs the payment jobs itself."""
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def _stripe_paid(client, clock, tenant, session_id: str, price_id: str, event_id: str) -> None:
    body = stripe_event("checkout.session.completed", checkout_session(session_id, email="ada@example.com",
                                                                       price_id=price_id),
                        event_id=event_id, created=int(clock.now()))
    r = await client.post(f"/hooks/stripe/{tenant.slug}", content=body,
                          headers=stripe_headers(body, SECRET, int(clock.now())))
    assert r.status_code == 200, r.text


async def test_payments_page_shows_settings_and_events_and_reprocesses(quiet, settings, tenant, other_tenant, clock):
    app, client = quiet
    form = await sign_in_admin(client, settings.database_url, tenant.id, tenant.slug, clock)
    base = f"/admin/{tenant.slug}"
    page = await client.get(f"{base}/payments")
    assert page.status_code == 200 and page.text.count("Not connected.") == 2
    product = (await client.post("/api/product", json={"name": "Desk App"}, headers=tenant.headers)).json()["id"]
    r = await client.put("/api/payments/stripe", headers=tenant.headers, json={
        "webhookSecret": SECRET, "mappings": [{"priceId": "price_known", "productId": product}]})
    assert r.status_code == 200, r.text
    await _stripe_paid(client, clock, tenant, "cs_test_known", "price_known", "evt_known")
    await _stripe_paid(client, clock, tenant, "cs_test_new", "price_new", "evt_new")
    await jobs.run_due(app.state.services)

    page = await client.get(f"{base}/payments")
    assert f"/hooks/stripe/{tenant.slug}" in page.text and "whsec_****64I8" in page.text and SECRET not in page.text
    assert "price_known" in page.text and "Desk App" in page.text
    assert "none: a session whose payload names no price" in page.text
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr id="payment-event-\d+">.*?(evt_\w+).*?</tr>', page.text,
                                                         re.S)}
    assert "fulfilled:1" in rows["evt_known"] and "Process again" not in rows["evt_known"]
    assert "unmapped" in rows["evt_new"] and "Process again" in rows["evt_new"]
    filtered = await client.get(f"{base}/payments", params={"outcome": "unmapped"})
    assert "evt_new" in filtered.text and "evt_known" not in filtered.text

    # The publisher maps the new price, then processes the event again from the page.
    r = await client.put("/api/payments/stripe", headers=tenant.headers, json={"mappings": [
        {"priceId": "price_known", "productId": product}, {"priceId": "price_new", "productId": product}]})
    assert r.status_code == 200, r.text
    event_id = re.search(r'id="payment-event-(\d+)">(?:(?!</tr>).)*evt_new', page.text, re.S).group(1)
    refused = await client.post(f"{base}/payments/events/{event_id}/reprocess", data={})
    assert refused.status_code == 403   # no CSRF token
    r = await client.post(f"{base}/payments/events/{event_id}/reprocess", data={"csrf_token": form})
    assert r.status_code == 303
    assert "queued to be processed again" in (await client.get(r.headers["location"])).text
    await jobs.run_due(app.state.services)
    page = await client.get(f"{base}/payments")
    assert page.text.count("fulfilled:1") == 2 and "Process again" not in page.text
    again = await client.post(f"{base}/payments/events/{event_id}/reprocess", data={"csrf_token": form})
    assert "only an event that delivered nothing" in (await client.get(again.headers["location"])).text

    # Another tenant's admin sees none of it, and cannot reprocess this tenant's event.
    client.cookies.clear()
    other_form = await sign_in_admin(client, settings.database_url, other_tenant.id, other_tenant.slug, clock)
    theirs = await client.get(f"/admin/{other_tenant.slug}/payments")
    assert "evt_new" not in theirs.text and "No events" in theirs.text
    r = await client.post(f"/admin/{other_tenant.slug}/payments/events/{event_id}/reprocess",
                          data={"csrf_token": other_form})
    assert "no payment event" in (await client.get(r.headers["location"])).text

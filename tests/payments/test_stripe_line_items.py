"""Checkout Sessions whose webhook payload names nothing (no metadata, line items not expanded,
the usual case for Payment Links and hosted Checkout): the gateway reads the session's line items
from Stripe's API (a loopback stand-in of that one call), or records a clear outcome the tenant
can list, fix and reprocess. Also the `stripe` library reading the stand-in, as a check of its shapes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import stripe as stripe_library

from conftest import running_app
from payments.payhelpers import checkout_session, stripe_event, stripe_headers
from quota_gateway.events import jobs

from .stripe_standin import StripeApiServer, line_item

SECRET = "whsec_test_LineItems5WbX5kEWLlfzsGNjH64I8"
API_KEY = "rk_test_51StandinReadKey0000"


@pytest.fixture(scope="module")
def stripe_api_server():
    server = StripeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def stripe_api(stripe_api_server):
    return stripe_api_server.reset()


@pytest.fixture
async def shop(settings, clock, tenant, smtp_server, stripe_api_server):
    """The app (job worker off) with Stripe's API at the stand-in, a product, and Stripe
    configured with two mappings and no API key yet."""
    server = replace(settings, events_worker=False, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                     smtp_security="none", smtp_from="shop@acme.example", stripe_api_base=stripe_api_server.url)
    async with running_app(server, clock) as (app, client):
        r = await client.post("/api/product", json={"name": "Desktop App"}, headers=tenant.headers)
        product_id = r.json()["id"]
        r = await client.put("/api/payments/stripe", headers=tenant.headers, json={
            "webhookSecret": SECRET,
            "mappings": [{"priceId": "price_desktop", "productId": product_id},
                         {"stripeProductId": "prod_team", "productId": product_id, "licenseKind": "corporate",
                          "seats": 5}]})
        assert r.status_code == 200, r.text
        yield app, client


def _bare_session(session_id: str, email: str = "ada@example.com") -> dict:
    """A Checkout Session as its webhook carries it when the publisher set no metadata."""
    session = checkout_session(session_id, email=email, price_id="unused")
    session["metadata"] = {}
    return session


async def _post(client, clock, tenant, session: dict, event_id: str):
    body = stripe_event("checkout.session.completed", session, event_id=event_id, created=int(clock.now()))
    r = await client.post(f"/hooks/stripe/{tenant.slug}", content=body,
                          headers=stripe_headers(body, SECRET, int(clock.now())))
    assert r.status_code == 200, r.text


async def _events(client, tenant, **query) -> list[dict]:
    r = await client.get("/api/payments/events", params=query, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _licenses(client, tenant) -> list[dict]:
    r = await client.get("/api/licenses", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _set_api_key(client, tenant, api_key: str) -> dict:
    r = await client.get("/api/payments/stripe", headers=tenant.headers)
    mappings = [{k: v for k, v in m.items() if k in ("priceId", "stripeProductId", "productId", "licenseKind", "seats")
                 and v is not None} for m in r.json()["mappings"]]
    r = await client.put("/api/payments/stripe", json={"apiKey": api_key, "mappings": mappings}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_without_an_api_key_the_event_is_recorded_no_line_items_then_reprocessed(shop, tenant, clock,
                                                                                        stripe_api, smtp_server):
    app, client = shop
    stripe_api.sessions["cs_test_bare"] = [line_item(1, "price_desktop", "prod_desktop", quantity=2)]
    await _post(client, clock, tenant, _bare_session("cs_test_bare"), "evt_bare")
    await jobs.run_due(app.state.services)
    [event] = await _events(client, tenant)
    assert (event["eventId"], event["outcome"], event["reprocessable"]) == ("evt_bare", "no_line_items", True)
    assert await _licenses(client, tenant) == [] and stripe_api.requests == []
    # The tenant adds a restricted key (the webhook secret is kept), then reprocesses the event.
    shown = await _set_api_key(client, tenant, API_KEY)
    assert shown["apiKey"] == "rk_****0000" and shown["webhookSecret"] == ["whsec_****64I8"]
    r = await client.post(f"/api/payments/events/{event['id']}/reprocess", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["outcome"] is None
    assert [e["id"] for e in await _events(client, tenant, outcome="pending")] == [event["id"]]
    await jobs.run_due(app.state.services)
    [event] = await _events(client, tenant)
    assert (event["outcome"], event["reprocessable"]) == ("fulfilled:2", False)
    [(path, query, headers)] = stripe_api.requests
    assert path == "/v1/checkout/sessions/cs_test_bare/line_items" and query == {"limit": "100"}
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert len(await _licenses(client, tenant)) == 2
    await smtp_server.wait_for(2)
    # Fulfilled: processing it again is refused, and so is an event of another tenant (404).
    r = await client.post(f"/api/payments/events/{event['id']}/reprocess", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (409, "not_reprocessable")
    r = await client.post("/api/payments/events/999999/reprocess", headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (404, "event_not_found")


async def test_line_items_are_read_page_by_page_and_mapped_by_price_or_product(shop, tenant, clock, stripe_api):
    app, client = shop
    await _set_api_key(client, tenant, API_KEY)
    # 101 lines: one mapped price (quantity 2), 99 things the tenant does not license, one mapped
    # product (quantity 3) on the second page.
    lines = [line_item(0, "price_desktop", "prod_desktop", quantity=2)]
    lines += [line_item(n, f"price_other_{n}", "prod_other") for n in range(1, 100)]
    lines.append(line_item(100, "price_team_monthly", "prod_team", quantity=3))
    stripe_api.sessions["cs_test_many"] = lines
    await _post(client, clock, tenant, _bare_session("cs_test_many"), "evt_many")
    await jobs.run_due(app.state.services)
    [event] = await _events(client, tenant)
    assert event["outcome"] == "fulfilled:3"
    assert [q for _, q, _ in stripe_api.requests] == [{"limit": "100"},
                                                      {"limit": "100", "starting_after": lines[99]["id"]}]
    made = await _licenses(client, tenant)
    assert sorted(lic["licenseType"] for lic in made) == ["corporate", "standard", "standard"]
    assert [lic["maxSeats"] for lic in made if lic["licenseType"] == "corporate"] == [15]
    assert {lic["email"] for lic in made} == {"ada@example.com"}


async def test_refusals_are_recorded_and_outages_retried(shop, tenant, clock, stripe_api):
    app, client = shop
    await _set_api_key(client, tenant, "rk_test_51StandinNoCheckout00")   # lacks Checkout Sessions: read
    stripe_api.sessions["cs_test_a"] = [line_item(1, "price_desktop", "prod_desktop")]
    await _post(client, clock, tenant, _bare_session("cs_test_a"), "evt_a")
    await _post(client, clock, tenant, _bare_session("cs_test_unknown"), "evt_unknown")
    await jobs.run_due(app.state.services)
    outcomes = {e["eventId"]: e["outcome"] for e in await _events(client, tenant)}
    assert outcomes == {"evt_a": "line_items_refused:403", "evt_unknown": "line_items_refused:403"}
    await _set_api_key(client, tenant, API_KEY)
    for event in await _events(client, tenant):
        await client.post(f"/api/payments/events/{event['id']}/reprocess", headers=tenant.headers)
    await jobs.run_due(app.state.services)
    outcomes = {e["eventId"]: e["outcome"] for e in await _events(client, tenant)}
    assert outcomes == {"evt_a": "fulfilled:1", "evt_unknown": "line_items_refused:404"}
    assert [e["eventId"] for e in await _events(client, tenant, outcome="line_items_refused")] == ["evt_unknown"]
    # Stripe down (a 500, then answering): the event stays pending and the job queue retries it.
    stripe_api.sessions["cs_test_b"] = [line_item(2, "price_desktop", "prod_desktop")]
    stripe_api.fail(500)
    await _post(client, clock, tenant, _bare_session("cs_test_b"), "evt_b")
    await jobs.run_due(app.state.services)
    [pending] = await _events(client, tenant, outcome="pending")
    assert pending["eventId"] == "evt_b"
    clock.advance(5 * 60)
    await jobs.run_due(app.state.services)
    assert (await _events(client, tenant, outcome="fulfilled"))[0]["eventId"] == "evt_b"


async def test_api_key_is_sealed_masked_validated_and_removable(shop, tenant, other_tenant, settings):
    app, client = shop
    r = await client.put("/api/payments/stripe", headers=tenant.headers,
                         json={"apiKey": "pk_test_publishable", "mappings": []})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_field")
    shown = await _set_api_key(client, tenant, "sk_test_51StandinSecretKey0000")
    assert shown["apiKey"] == "sk_****0000"
    async with app.state.services.pool.acquire() as conn:
        blob = await conn.fetchval("SELECT secrets_enc FROM payment_settings WHERE tenant_id = $1", tenant.id)
    assert b"sk_test_51StandinSecretKey" not in bytes(blob)
    shown = await _set_api_key(client, tenant, "")
    assert shown["apiKey"] is None and shown["webhookSecret"] == ["whsec_****64I8"]
    r = await client.get("/api/payments/events", headers=other_tenant.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/api/payments/events", params={"provider": "square"}, headers=tenant.headers)
    assert r.status_code == 400


def test_the_stripe_library_reads_the_standins_answers(stripe_api_server, stripe_api):
    """The stand-in's shapes are the ones Stripe's own library parses (list, paging, errors)."""
    stripe_api.sessions["cs_test_lib"] = [line_item(n, "price_desktop", "prod_desktop") for n in range(3)]
    def line_items(api_key: str):
        client = stripe_library.StripeClient(api_key, base_addresses={"api": stripe_api_server.url})
        return getattr(client, "v1", client).checkout.sessions.line_items  # v1: the library's namespace from 2025

    listed = line_items(API_KEY).list("cs_test_lib", params={"limit": 2})
    assert [item.price.id for item in listed.auto_paging_iter()] == ["price_desktop"] * 3
    assert listed.data[0].quantity == 1 and listed.has_more is True
    with pytest.raises(stripe_library.InvalidRequestError) as missing:
        line_items(API_KEY).list("cs_test_none")
    assert missing.value.code == "resource_missing" and missing.value.http_status == 404
    with pytest.raises(stripe_library.AuthenticationError):
        line_items("sk_test_wrong_key_0000").list("cs_test_lib")
    with pytest.raises(stripe_library.PermissionError):
        line_items("rk_test_51StandinNoCheckout00").list("cs_test_lib")

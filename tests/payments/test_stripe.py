"""Stripe → licenses through the real receiver, job queue and SMTP server: settings, signatures,
fulfilment exactly once (replays, concurrent duplicates), renewals, refunds, cancellations."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest

from conftest import db_connection, running_app
from payments.payhelpers import checkout_session, stripe_event, stripe_headers
from quota_gateway.events import jobs
from quota_gateway.payments import service

SECRET = "whsec_test_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH"


@pytest.fixture
async def shop(settings, clock, tenant, smtp_server):
    """The app with its job worker off (the test runs due jobs), mail to the test SMTP server,
    a product with two features and a 30-day plan, and Stripe configured for the tenant."""
    server = replace(settings, events_worker=False, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                     smtp_security="none", smtp_from="shop@acme.example")
    async with running_app(server, clock) as (app, client):
        r = await client.post("/api/product", json={"name": "Desktop App"}, headers=tenant.headers)
        product_id = r.json()["id"]
        for feature in ("Export", "Sync"):
            await client.post(f"/api/product/{product_id}/features", json={"name": feature}, headers=tenant.headers)
        plan = await client.post("/api/plan", json={"name": "Monthly", "durationDays": 30}, headers=tenant.headers)
        assert plan.status_code == 201, plan.text
        r = await client.put("/api/payments/stripe", headers=tenant.headers, json={
            "webhookSecret": SECRET,
            "mappings": [
                {"priceId": "price_desktop_perpetual", "productName": "Desktop App"},
                {"priceId": "price_desktop_monthly", "productId": product_id, "planId": plan.json()["id"],
                 "features": ["Export"], "onCancel": "expire"},
                {"stripeProductId": "prod_team", "productId": product_id, "licenseKind": "corporate", "seats": 5,
                 "validityDays": 365, "onRefund": "expire", "onCancel": "revoke"},
            ]})
        assert r.status_code == 200, r.text
        yield app, client, product_id


async def _post(client, clock, tenant, event_type: str, obj: dict, event_id: str, *, secret: str = SECRET,
                timestamp: int | None = None, tamper: bool = False):
    body = stripe_event(event_type, obj, event_id=event_id, created=int(clock.now()))
    headers = stripe_headers(body, secret, int(clock.now()) if timestamp is None else timestamp)
    if tamper:
        body = body.replace(b'"livemode":false', b'"livemode":true ')
    return await client.post(f"/hooks/stripe/{tenant.slug}", content=body, headers=headers)


async def _licenses(database_url: str, tenant_id: str) -> list[asyncpg.Record]:
    async with db_connection(database_url) as conn:
        return await conn.fetch("SELECT id, kind, max_seats, email, features, expires_at, revoked_at FROM licenses "
                                "WHERE tenant_id = $1 ORDER BY id", tenant_id)


async def _count(database_url: str, table: str) -> int:
    async with db_connection(database_url) as conn:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")


async def _outcomes(database_url: str) -> list[str]:
    async with db_connection(database_url) as conn:
        return [r["outcome"] for r in await conn.fetch("SELECT outcome FROM payment_events ORDER BY id")]


async def _validate(client, tenant, key: str, hardware: str = "A" * 64) -> dict:
    await client.post("/api/license/activate", json={"activationKey": key, "email": "ada@example.com",
                                                     "hardwareId": hardware, "productName": "Desktop App"},
                      headers=tenant.headers)
    r = await client.post("/api/license/validate", json={"activationKey": key, "hardwareId": hardware,
                                                         "productName": "Desktop App"}, headers=tenant.headers)
    return r.json()


# --- settings ------------------------------------------------------------------------------------

async def test_settings_masked_encrypted_validated_and_isolated(shop, tenant, other_tenant, settings):
    _, client, product_id = shop
    r = await client.get("/api/payments/stripe", headers=tenant.headers)
    body = r.json()
    assert body["webhookSecret"] == ["whsec_****e8FH"]
    assert body["receiverUrl"] == "http://testserver/hooks/stripe/acme"
    assert [m.get("priceId") for m in body["mappings"]] == ["price_desktop_perpetual", "price_desktop_monthly", None]
    assert body["mappings"][0]["productId"] == product_id and body["mappings"][1]["periodDays"] == 30
    assert body["mappings"][2]["productName"] == "Desktop App"
    async with db_connection(settings.database_url) as conn:
        stored = bytes(await conn.fetchval("SELECT secrets_enc FROM payment_settings"))
    assert SECRET.encode() not in stored and b"e8FH" not in stored
    # another tenant sees nothing, and its receiver does not exist
    assert (await client.get("/api/payments/stripe", headers=other_tenant.headers)).status_code == 404
    r = await client.post("/hooks/stripe/globex", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert r.status_code == 404 and r.json()["error"] == "not_configured"
    # a PUT without the secret keeps it; two secrets during rotation
    r = await client.put("/api/payments/stripe", json={"mappings": []}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["webhookSecret"] == ["whsec_****e8FH"]
    r = await client.put("/api/payments/stripe", json={"webhookSecret": [SECRET, "whsec_next_abcd1234"],
                                                       "mappings": []}, headers=tenant.headers)
    assert r.json()["webhookSecret"] == ["whsec_****e8FH", "whsec_****1234"]
    # admin only
    verify_only = await tenant.token_with(settings.database_url, ["verify", "generate", "manage"])
    assert (await client.get("/api/payments/stripe", headers=verify_only)).status_code == 403


@pytest.mark.parametrize("mapping,code", [
    ({"priceId": "price_x", "productName": "No Such App"}, "product_not_found"),
    ({"priceId": "price_x", "productId": 999999}, "product_not_found"),
    ({"productName": "Desktop App"}, "missing_field"),
    ({"priceId": "price_x"}, "missing_field"),
    ({"priceId": "price_x", "productName": "Desktop App", "planId": 999999}, "plan_not_found"),
    ({"priceId": "price_x", "productName": "Desktop App", "features": ["Teleport"]}, "unknown_feature"),
    ({"priceId": "price_x", "productName": "Desktop App", "seats": 3}, "invalid_field"),
    ({"priceId": "price_x", "productName": "Desktop App", "onRefund": "shrug"}, "invalid_field"),
])
async def test_settings_refuse_bad_mappings(shop, tenant, mapping, code):
    _, client, _ = shop
    r = await client.put("/api/payments/stripe", json={"mappings": [mapping]}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == code, r.text


async def test_settings_duplicate_mapping_first_time_secret_and_delete(shop, tenant, other_tenant):
    _, client, _ = shop
    twice = [{"priceId": "price_x", "productName": "Desktop App"}] * 2
    r = await client.put("/api/payments/stripe", json={"mappings": twice}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "duplicate_mapping"
    await client.post("/api/product", json={"name": "Desktop App"}, headers=other_tenant.headers)
    r = await client.put("/api/payments/stripe", json={"mappings": []}, headers=other_tenant.headers)
    assert r.status_code == 400 and r.json()["field"] == "webhookSecret"
    r = await client.put("/api/payments/stripe", json={"webhookSecret": [], "mappings": []}, headers=tenant.headers)
    assert r.status_code == 400
    assert (await client.delete("/api/payments/stripe", headers=tenant.headers)).json() == {"deleted": True}
    assert (await client.delete("/api/payments/stripe", headers=tenant.headers)).status_code == 404
    assert (await client.get("/api/payments/stripe", headers=tenant.headers)).status_code == 404


# --- receipt and fulfilment ---------------------------------------------------------------------------

async def test_checkout_completed_delivers_keys_by_mail(shop, tenant, clock, settings, smtp_server):
    app, client, _ = shop
    session = checkout_session("cs_test_a1b2c3", email="ada@example.com", price_id="price_desktop_perpetual",
                               quantity=2)
    r = await _post(client, clock, tenant, "checkout.session.completed", session, "evt_1PaidSession")
    assert r.status_code == 200 and r.json() == {"received": True, "handled": True, "duplicate": False}
    assert await _licenses(settings.database_url, tenant.id) == []  # the work happens in the job
    await jobs.run_due(app.state.services)  # fulfilment
    await jobs.run_due(app.state.services)  # the two e-mails
    licenses = await _licenses(settings.database_url, tenant.id)
    assert [(lic["kind"], lic["email"], lic["expires_at"]) for lic in licenses] == [
        ("standard", "ada@example.com", None)] * 2
    mails = await smtp_server.wait_for(2)
    keys = sorted(line.strip() for mail in mails for line in mail.text.splitlines()
                  if line.startswith("    ") and line.count("-") == 3)
    assert len(keys) == 2 and all(m.rcpt_tos == ["ada@example.com"] for m in mails)
    assert all("Desktop App" in m.subject for m in mails)
    for number, key in enumerate(keys):
        assert (await _validate(client, tenant, key, hardware=str(number) * 64))["status"] == "licensed"
    assert await _outcomes(settings.database_url) == ["fulfilled:2"]


async def test_nul_characters_in_an_event_do_not_lose_the_purchase(shop, tenant, clock, settings):
    """PostgreSQL's jsonb refuses \\u0000 and its text refuses NUL: a signed event carrying one (in
    what the buyer typed, or in its id) was a 500, retried by Stripe until it gave up."""
    app, client, _ = shop
    session = checkout_session("cs_test_nul", email="ada@example.com", price_id="price_desktop_perpetual")
    session["customer_details"]["name"] = "Ada\x00Buyer"
    r = await _post(client, clock, tenant, "checkout.session.completed", session, "evt_1Nul\x00")
    assert r.status_code == 200 and r.json() == {"received": True, "handled": True, "duplicate": False}, r.text
    again = await _post(client, clock, tenant, "checkout.session.completed", session, "evt_1Nul\x00")
    assert again.json()["duplicate"] is True
    await jobs.run_due(app.state.services)
    assert [lic["email"] for lic in await _licenses(settings.database_url, tenant.id)] == ["ada@example.com"]
    assert await _outcomes(settings.database_url) == ["fulfilled:1"]


async def test_signature_refusals_leave_no_trace(shop, tenant, clock, settings):
    _, client, _ = shop
    session = checkout_session("cs_test_refused", email="eve@example.com", price_id="price_desktop_perpetual")
    for kwargs in ({"tamper": True}, {"secret": "whsec_wrong"}, {"timestamp": int(clock.now()) - 301},
                   {"timestamp": int(clock.now()) + 301}):
        r = await _post(client, clock, tenant, "checkout.session.completed", session, "evt_refused", **kwargs)
        assert r.status_code == 400 and r.json()["error"] == "invalid_signature", (kwargs, r.text)
    r = await client.post(f"/hooks/stripe/{tenant.slug}", content=b"{}")
    assert r.status_code == 400 and r.json()["error"] == "invalid_signature"
    assert await _count(settings.database_url, "payment_events") == 0
    assert await _count(settings.database_url, "jobs") == 0


async def test_replays_and_concurrent_duplicates_fulfil_once(shop, tenant, clock, settings, smtp_server):
    app, client, _ = shop
    session = checkout_session("cs_test_dupes", email="bob@example.com", price_id="price_desktop_perpetual")
    answers = await asyncio.gather(*[_post(client, clock, tenant, "checkout.session.completed", session,
                                           "evt_1Dupe") for _ in range(6)])
    assert [r.status_code for r in answers] == [200] * 6
    assert sorted(r.json()["duplicate"] for r in answers) == [False] + [True] * 5
    # the same payment announced by a second event (delayed-payment success) and a later replay
    r = await _post(client, clock, tenant, "checkout.session.async_payment_succeeded", session, "evt_2Async")
    assert r.json()["duplicate"] is False
    clock.advance(60)
    assert (await _post(client, clock, tenant, "checkout.session.completed", session, "evt_1Dupe")).json()[
        "duplicate"] is True
    await jobs.run_due(app.state.services)
    await jobs.run_due(app.state.services)
    assert len(await _licenses(settings.database_url, tenant.id)) == 1
    assert sorted(await _outcomes(settings.database_url)) == ["already_fulfilled", "fulfilled:1"]
    assert len(await smtp_server.wait_for(1)) == 1


async def test_two_events_of_one_session_processed_at_once_fulfil_once(shop, tenant, clock, settings):
    app, client, _ = shop
    session = checkout_session("cs_test_race", email="carol@example.com", price_id="price_desktop_perpetual")
    for event_id in ("evt_race_a", "evt_race_b", "evt_race_c"):
        await _post(client, clock, tenant, "checkout.session.completed", session, event_id)
    async with db_connection(settings.database_url) as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM payment_events ORDER BY id")]
    services = app.state.services
    outcomes = await asyncio.gather(*[service.process_event(services.pool, services.settings, services.redis, i,
                                                            clock.utcnow()) for i in ids])
    assert sorted(outcomes) == ["already_fulfilled", "already_fulfilled", "fulfilled:1"]
    assert len(await _licenses(settings.database_url, tenant.id)) == 1


async def test_unpaid_unmapped_and_other_events(shop, tenant, clock, settings):
    app, client, _ = shop
    unpaid = checkout_session("cs_test_unpaid", email="dan@example.com", price_id="price_desktop_perpetual",
                              payment_status="unpaid")
    await _post(client, clock, tenant, "checkout.session.completed", unpaid, "evt_unpaid")
    unmapped = checkout_session("cs_test_unmapped", email="dan@example.com", price_id="price_unknown")
    await _post(client, clock, tenant, "checkout.session.completed", unmapped, "evt_unmapped")
    r = await _post(client, clock, tenant, "customer.created", {"id": "cus_1", "object": "customer"}, "evt_other")
    assert r.status_code == 200 and r.json() == {"received": True, "handled": False}
    await jobs.run_due(app.state.services)
    assert await _outcomes(settings.database_url) == ["not_paid", "unmapped"]
    assert await _licenses(settings.database_url, tenant.id) == []
    # the delayed payment succeeds later: now the licenses come
    paid = {**unpaid, "payment_status": "paid"}
    await _post(client, clock, tenant, "checkout.session.async_payment_succeeded", paid, "evt_async_paid")
    await jobs.run_due(app.state.services)
    assert len(await _licenses(settings.database_url, tenant.id)) == 1


async def test_corporate_quantity_scales_seats_and_refund_expires(shop, tenant, clock, settings):
    app, client, _ = shop
    session = {**checkout_session("cs_test_team", email="it@corp.example", price_id="price_team_yearly",
                                  quantity=3, payment_intent="pi_team"),
               "metadata": {}, "line_items": {"object": "list", "data": [
                   {"id": "li_1", "object": "item", "quantity": 3,
                    "price": {"id": "price_team_yearly", "object": "price", "product": "prod_team"}}]}}
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_team")
    await jobs.run_due(app.state.services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["kind"] == "corporate" and lic["max_seats"] == 15
    assert lic["expires_at"] == clock.utcnow() + timedelta(days=365)
    charge = {"id": "ch_team", "object": "charge", "amount": 14700, "amount_refunded": 4900, "refunded": False,
              "payment_intent": "pi_team", "status": "succeeded"}
    await _post(client, clock, tenant, "charge.refunded", charge, "evt_partial")
    clock.advance(3600)
    await _post(client, clock, tenant, "charge.refunded", {**charge, "amount_refunded": 14700, "refunded": True},
                "evt_full")
    await jobs.run_due(app.state.services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["revoked_at"] is None and lic["expires_at"] == clock.utcnow()  # onRefund: expire
    assert (await _outcomes(settings.database_url))[1:] == ["partial_refund", "refunded:1"]


async def test_refund_revokes(shop, tenant, clock, settings):
    app, client, _ = shop
    session = checkout_session("cs_test_refund", email="ann@example.com", price_id="price_desktop_perpetual",
                               payment_intent="pi_refund_me")
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_buy")
    await jobs.run_due(app.state.services)
    charge = {"id": "ch_1", "object": "charge", "amount": 4900, "amount_refunded": 4900, "refunded": True,
              "payment_intent": "pi_refund_me", "status": "succeeded"}
    await _post(client, clock, tenant, "charge.refunded", charge, "evt_refund")
    await _post(client, clock, tenant, "charge.refunded", {**charge, "payment_intent": "pi_elsewhere"}, "evt_r2")
    await jobs.run_due(app.state.services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["revoked_at"] == clock.utcnow()
    assert await _outcomes(settings.database_url) == ["fulfilled:1", "refunded:1", "unknown_payment"]


async def test_subscription_renewals_and_cancellation(shop, tenant, clock, settings):
    app, client, _ = shop
    services = app.state.services
    start = clock.utcnow()
    session = checkout_session("cs_test_sub", email="sub@example.com", price_id="price_desktop_monthly",
                               mode="subscription", subscription="sub_1Monthly")
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_sub_start")
    invoice = {"id": "in_first", "object": "invoice", "billing_reason": "subscription_create",
               "customer_email": "sub@example.com", "paid": True, "status": "paid", "subscription": "sub_1Monthly",
               "lines": {"object": "list", "data": [{"id": "il_1", "object": "line_item", "quantity": 1,
                                                     "price": {"id": "price_desktop_monthly"}}]}}
    await _post(client, clock, tenant, "invoice.paid", invoice, "evt_inv_first")
    await jobs.run_due(services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["expires_at"] == start + timedelta(days=30) and lic["features"] == ["Export"]
    # a month later the next invoice extends by the plan's period; announced twice, applied once
    clock.advance(29 * 86400)
    cycle = {**invoice, "id": "in_second", "billing_reason": "subscription_cycle", "subscription": None,
             "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1Monthly"}}}
    await _post(client, clock, tenant, "invoice.paid", cycle, "evt_inv_second")
    await _post(client, clock, tenant, "invoice.paid", cycle, "evt_inv_second_again")
    await jobs.run_due(services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["expires_at"] == start + timedelta(days=60)
    # cancelled (onCancel: expire): the paid period runs out, later invoices extend nothing
    subscription = {"id": "sub_1Monthly", "object": "subscription", "status": "canceled"}
    await _post(client, clock, tenant, "customer.subscription.deleted", subscription, "evt_cancel")
    await jobs.run_due(services)
    await _post(client, clock, tenant, "invoice.paid", {**cycle, "id": "in_third"}, "evt_inv_third")
    await jobs.run_due(services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["expires_at"] == start + timedelta(days=60) and lic["revoked_at"] is None
    assert sorted(await _outcomes(settings.database_url)) == sorted(
        ["fulfilled:1", "first_period", "renewed:1", "already_renewed", "cancelled:1", "ended"])


async def test_renewal_before_its_subscription_is_retried(shop, tenant, clock, settings):
    app, client, _ = shop
    services = app.state.services
    cycle = {"id": "in_early", "object": "invoice", "billing_reason": "subscription_cycle",
             "subscription": "sub_2Early", "paid": True}
    await _post(client, clock, tenant, "invoice.paid", cycle, "evt_early")
    await jobs.run_due(services)
    assert await _outcomes(settings.database_url) == [None]  # failed, not lost: retried on the schedule
    session = checkout_session("cs_test_early", email="e@example.com", price_id="price_desktop_monthly",
                               mode="subscription", subscription="sub_2Early")
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_early_sub")
    await jobs.run_due(services)
    clock.advance(5 * 60)
    await jobs.run_due(services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert lic["expires_at"] == clock.utcnow() - timedelta(minutes=5) + timedelta(days=60)
    assert sorted(await _outcomes(settings.database_url)) == ["fulfilled:1", "renewed:1"]


async def test_cancellation_revokes_when_configured(shop, tenant, clock, settings):
    app, client, _ = shop
    session = {**checkout_session("cs_test_team_sub", email="it@corp.example", price_id="price_team",
                                  mode="subscription", subscription="sub_team"),
               "metadata": {"productId": "prod_team"}}
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_team_sub")
    await _post(client, clock, tenant, "customer.subscription.deleted", {"id": "sub_team", "object": "subscription"},
                "evt_team_cancel")
    await jobs.run_due(app.state.services)  # whichever runs first, the cancellation waits for the purchase
    clock.advance(5 * 60)
    await jobs.run_due(app.state.services)
    [lic] = await _licenses(settings.database_url, tenant.id)
    assert sorted(await _outcomes(settings.database_url)) == ["cancelled:1", "fulfilled:1"]
    assert lic["revoked_at"] is not None
    assert sorted(await _outcomes(settings.database_url)) == ["cancelled:1", "fulfilled:1"]


async def test_payments_of_one_tenant_never_touch_another(shop, tenant, other_tenant, clock, settings):
    app, client, _ = shop
    await client.post("/api/product", json={"name": "Desktop App"}, headers=other_tenant.headers)
    r = await client.put("/api/payments/stripe", headers=other_tenant.headers, json={
        "webhookSecret": "whsec_globex_only_secret", "mappings": [
            {"priceId": "price_desktop_perpetual", "productName": "Desktop App"}]})
    assert r.status_code == 200
    session = checkout_session("cs_test_iso", email="x@example.com", price_id="price_desktop_perpetual",
                               payment_intent="pi_iso")
    # acme's secret does not open globex's receiver, and the reverse
    body = stripe_event("checkout.session.completed", session, event_id="evt_iso", created=int(clock.now()))
    r = await client.post("/hooks/stripe/globex", content=body, headers=stripe_headers(body, SECRET, int(clock.now())))
    assert r.status_code == 400
    await _post(client, clock, tenant, "checkout.session.completed", session, "evt_iso")
    await _post(client, clock, other_tenant, "checkout.session.completed", session, "evt_iso",
                secret="whsec_globex_only_secret")
    await jobs.run_due(app.state.services)
    assert len(await _licenses(settings.database_url, tenant.id)) == 1
    assert len(await _licenses(settings.database_url, other_tenant.id)) == 1
    # a refund at globex leaves acme's license alone
    charge = {"id": "ch_iso", "object": "charge", "refunded": True, "payment_intent": "pi_iso"}
    await _post(client, clock, other_tenant, "charge.refunded", charge, "evt_iso_refund",
                secret="whsec_globex_only_secret")
    await jobs.run_due(app.state.services)
    assert (await _licenses(settings.database_url, tenant.id))[0]["revoked_at"] is None
    assert (await _licenses(settings.database_url, other_tenant.id))[0]["revoked_at"] is not None

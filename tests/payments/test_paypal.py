"""PayPal → licenses through the real receiver: offline verification against a CA and certificate
made here (served from loopback), orders and captures fulfilled exactly once per capture, refunds."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import asyncpg
import orjson
import pytest

from conftest import db_connection, running_app
from payments.payhelpers import CertAuthority, PayPalSigner, cert_server, write_pem
from quota_gateway.events import jobs
from quota_gateway.payments import paypal

WEBHOOK_ID = "8PT597110X687430LKGECATA"
MONTHLY_PLAN = "P-5ML4271244454362WXNWU5NQ"  # PayPal subscription plan ids
TEAM_PLAN = "P-2UF78835G6983425GLSM44MA"


@pytest.fixture
async def paypal_shop(settings, clock, tenant, smtp_server, tmp_path):
    paypal.forget_certificates()
    now = clock.utcnow()
    ca = CertAuthority.make(now)
    key, cert = ca.issue(now)
    with cert_server() as certs:
        url = certs.publish("/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77", cert)
        server = replace(settings, events_worker=False, smtp_host=smtp_server.host, smtp_port=smtp_server.port,
                         smtp_security="none", smtp_from="shop@acme.example", paypal_cert_hosts=certs.origin,
                         paypal_ca_file=write_pem(tmp_path / "ca.pem", ca.cert))
        async with running_app(server, clock) as (app, client):
            r = await client.post("/api/product", json={"name": "Photo Tool"}, headers=tenant.headers)
            assert r.status_code == 201
            r = await client.put("/api/payments/paypal", headers=tenant.headers, json={
                "webhookId": WEBHOOK_ID,
                "mappings": [{"itemId": "PHOTO-PRO", "productName": "Photo Tool", "validityDays": 365},
                             {"itemId": "photo-site", "productName": "Photo Tool", "licenseKind": "corporate",
                              "seats": 10, "onRefund": "expire"},
                             {"itemId": MONTHLY_PLAN, "productName": "Photo Tool", "validityDays": 30},
                             {"itemId": TEAM_PLAN, "productName": "Photo Tool", "licenseKind": "corporate",
                              "seats": 5, "validityDays": 365, "onCancel": "revoke"}]})
            assert r.status_code == 200, r.text
            yield {"app": app, "client": client, "signer": PayPalSigner(key, url, WEBHOOK_ID), "ca": ca,
                   "certs": certs}
    paypal.forget_certificates()


def _order(order_id: str, *, email: str, sku: str, quantity: int = 1, capture_id: str | None = None) -> dict:
    """An Orders v2 order as CHECKOUT.ORDER.* events carry it."""
    unit: dict = {"reference_id": "default", "amount": {"currency_code": "USD", "value": f"{29 * quantity}.00"},
                  "payee": {"email_address": "merchant@acme.example", "merchant_id": "7KNGBPH2U58GQ"},
                  "items": [{"name": "Photo Tool Pro", "sku": sku, "quantity": str(quantity),
                             "unit_amount": {"currency_code": "USD", "value": "29.00"}}]}
    if capture_id:
        unit["payments"] = {"captures": [{"id": capture_id, "status": "COMPLETED", "final_capture": True,
                                          "amount": {"currency_code": "USD", "value": f"{29 * quantity}.00"}}]}
    return {"id": order_id, "intent": "CAPTURE", "status": "COMPLETED" if capture_id else "APPROVED",
            "payer": {"email_address": email, "payer_id": "QYR5Z8XDVJNXQ", "name": {"given_name": "Ada"}},
            "purchase_units": [unit], "create_time": "2027-01-15T07:59:00Z",
            "links": [{"href": f"https://api.sandbox.paypal.com/v2/checkout/orders/{order_id}", "rel": "self",
                       "method": "GET"}]}


def _capture(capture_id: str, order_id: str, value: str = "29.00") -> dict:
    return {"id": capture_id, "status": "COMPLETED", "amount": {"currency_code": "USD", "value": value},
            "final_capture": True, "supplementary_data": {"related_ids": {"order_id": order_id}},
            "create_time": "2027-01-15T08:00:00Z",
            "links": [{"href": f"https://api.sandbox.paypal.com/v2/payments/captures/{capture_id}", "rel": "self",
                       "method": "GET"}]}


def _refund(refund_id: str, capture_id: str, value: str = "29.00", total: str | None = None) -> dict:
    return {"id": refund_id, "status": "COMPLETED", "amount": {"currency_code": "USD", "value": value},
            "seller_payable_breakdown": {"total_refunded_amount": {"currency_code": "USD", "value": total or value}},
            "links": [{"href": f"https://api.sandbox.paypal.com/v2/payments/refunds/{refund_id}", "rel": "self",
                       "method": "GET"},
                      {"href": f"https://api.sandbox.paypal.com/v2/payments/captures/{capture_id}", "rel": "up",
                       "method": "GET"}]}


_RESOURCE_TYPES = {"PAYMENT.CAPTURE": "capture", "CHECKOUT.ORDER": "checkout-order", "PAYMENT.SALE": "sale",
                   "BILLING.SUBSCRIPTION": "subscription"}


async def _post(shop, tenant, event_type: str, resource: dict, event_id: str, *, tamper: bool = False,
                signer: PayPalSigner | None = None):
    body = orjson.dumps({"id": event_id, "event_version": "1.0", "create_time": "2027-01-15T08:00:01.000Z",
                         "resource_type": _RESOURCE_TYPES[event_type.split(".")[0] + "." + event_type.split(".")[1]],
                         "resource_version": "2.0", "event_type": event_type, "summary": event_type,
                         "resource": resource})
    headers = (signer or shop["signer"]).headers(body)
    if tamper:
        body = body.replace(b"29.00", b"0.01")
    return await shop["client"].post(f"/hooks/paypal/{tenant.slug}", content=body, headers=headers)


async def _rows(database_url: str, sql: str, *args) -> list[asyncpg.Record]:
    async with db_connection(database_url) as conn:
        return await conn.fetch(sql, *args)


async def test_paypal_settings_masked(paypal_shop, tenant, other_tenant, settings):
    client = paypal_shop["client"]
    body = (await client.get("/api/payments/paypal", headers=tenant.headers)).json()
    assert body["webhookId"] == "****CATA" and body["receiverUrl"].endswith("/hooks/paypal/acme")
    assert [m["itemId"] for m in body["mappings"]] == ["PHOTO-PRO", "photo-site", MONTHLY_PLAN, TEAM_PLAN]
    [row] = await _rows(settings.database_url, "SELECT secrets_enc FROM payment_settings")
    assert WEBHOOK_ID.encode() not in bytes(row["secrets_enc"])
    assert (await client.get("/api/payments/paypal", headers=other_tenant.headers)).status_code == 404


async def test_order_completed_then_capture_completed_fulfil_once(paypal_shop, tenant, settings, smtp_server, clock):
    order = _order("5O190127TN364715T", email="ada@example.com", sku="PHOTO-PRO", quantity=2,
                   capture_id="3C679366HH908993F")
    answers = await asyncio.gather(*[_post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-ORDER-1")
                                     for _ in range(4)])
    assert sorted(r.json()["duplicate"] for r in answers) == [False, True, True, True]
    r = await _post(paypal_shop, tenant, "PAYMENT.CAPTURE.COMPLETED",
                    _capture("3C679366HH908993F", "5O190127TN364715T", "58.00"), "WH-CAPTURE-1")
    assert r.status_code == 200 and r.json()["handled"] is True
    services = paypal_shop["app"].state.services
    await jobs.run_due(services)
    clock.advance(5 * 60)  # a capture processed before its order is retried on the schedule
    await jobs.run_due(services)
    await jobs.run_due(services)
    licenses = await _rows(settings.database_url, "SELECT email, kind FROM licenses WHERE tenant_id = $1", tenant.id)
    assert [(r["email"], r["kind"]) for r in licenses] == [("ada@example.com", "standard")] * 2
    mails = await smtp_server.wait_for(2)
    assert {m.rcpt_tos[0] for m in mails} == {"ada@example.com"}
    outcomes = sorted(r["outcome"] for r in await _rows(settings.database_url, "SELECT outcome FROM payment_events"))
    assert outcomes == ["already_fulfilled", "fulfilled:2"]


async def test_capture_before_its_order_waits_for_it(paypal_shop, tenant, settings, clock):
    services = paypal_shop["app"].state.services
    await _post(paypal_shop, tenant, "PAYMENT.CAPTURE.COMPLETED", _capture("8MC585209K746392H", "9VU57216Y7264"),
                "WH-CAPTURE-EARLY")
    await jobs.run_due(services)
    assert await _rows(settings.database_url, "SELECT 1 FROM licenses") == []
    await _post(paypal_shop, tenant, "CHECKOUT.ORDER.APPROVED", _order("9VU57216Y7264", email="bo@example.com",
                                                                        sku="photo-site"), "WH-APPROVED")
    await jobs.run_due(services)
    clock.advance(5 * 60)
    await jobs.run_due(services)
    [lic] = await _rows(settings.database_url, "SELECT kind, max_seats, email FROM licenses")
    assert (lic["kind"], lic["max_seats"], lic["email"]) == ("corporate", 10, "bo@example.com")


async def test_refunds_full_and_partial(paypal_shop, tenant, settings, clock):
    services = paypal_shop["app"].state.services
    for order_id, capture_id, sku in (("ORDER-A", "CAPTURE-A", "PHOTO-PRO"), ("ORDER-B", "CAPTURE-B", "photo-site")):
        await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED",
                    _order(order_id, email="r@example.com", sku=sku, capture_id=capture_id), f"WH-{order_id}")
    await jobs.run_due(services)
    await _post(paypal_shop, tenant, "PAYMENT.CAPTURE.REFUNDED", _refund("REFUND-A1", "CAPTURE-A", "10.00"),
                "WH-REFUND-A1")
    await jobs.run_due(services)
    assert [r["revoked_at"] for r in await _rows(settings.database_url, "SELECT revoked_at FROM licenses")] == [
        None, None]
    clock.advance(60)
    await _post(paypal_shop, tenant, "PAYMENT.CAPTURE.REFUNDED",
                _refund("REFUND-A2", "CAPTURE-A", "19.00", total="29.00"), "WH-REFUND-A2")
    await _post(paypal_shop, tenant, "PAYMENT.CAPTURE.REFUNDED", _refund("REFUND-B", "CAPTURE-B"), "WH-REFUND-B")
    await jobs.run_due(services)
    standard, corporate = await _rows(settings.database_url,
                                      "SELECT revoked_at, expires_at FROM licenses ORDER BY kind DESC")
    assert standard["revoked_at"] == clock.utcnow()  # onRefund: revoke (the default)
    assert corporate["revoked_at"] is None and corporate["expires_at"] == clock.utcnow()  # onRefund: expire


async def test_refused_deliveries_leave_no_trace(paypal_shop, tenant, settings, clock):
    order = _order("ORDER-X", email="x@example.com", sku="PHOTO-PRO", capture_id="CAPTURE-X")
    r = await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-TAMPERED", tamper=True)
    assert r.status_code == 400 and r.json()["error"] == "invalid_signature"
    # a certificate of another CA, served from the allowed host
    rogue = CertAuthority.make(clock.utcnow(), name="Rogue Root")
    key, cert = rogue.issue(clock.utcnow())
    url = paypal_shop["certs"].publish("/v1/notifications/certs/CERT-rogue", cert)
    r = await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-ROGUE",
                    signer=PayPalSigner(key, url, WEBHOOK_ID))
    assert r.status_code == 400 and "not trusted" in r.json()["message"]
    # PayPal's own certificate, but signed for another webhook id
    r = await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-OTHER-HOOK",
                    signer=PayPalSigner(paypal_shop["signer"].key, paypal_shop["signer"].cert_url, "OTHERWEBHOOK"))
    assert r.status_code == 400
    # a certificate URL off the allow-list is never fetched
    requests_before = len(paypal_shop["certs"].requests)
    r = await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-OFF-LIST",
                    signer=PayPalSigner(key, "https://certs.example.net/cert.pem", WEBHOOK_ID))
    assert r.status_code == 400 and len(paypal_shop["certs"].requests) == requests_before
    r = await paypal_shop["client"].post(f"/hooks/paypal/{tenant.slug}", content=b"{}")
    assert r.status_code == 400 and r.json()["error"] == "invalid_signature"
    assert await _rows(settings.database_url, "SELECT 1 FROM payment_events") == []
    # and once the certificate has expired, PayPal's own signature is refused too
    clock.advance(400 * 86400)
    r = await _post(paypal_shop, tenant, "CHECKOUT.ORDER.COMPLETED", order, "WH-LATE")
    assert r.status_code == 400
    clock.set(dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC))


# --- subscriptions -------------------------------------------------------------------------------

def _subscription(subscription_id: str, plan_id: str, *, email: str, quantity: int = 1,
                  status: str = "ACTIVE") -> dict:
    """A Subscriptions v1 subscription as BILLING.SUBSCRIPTION.* events carry it."""
    return {"id": subscription_id, "plan_id": plan_id, "start_time": "2027-01-15T07:59:00Z", "quantity": str(quantity),
            "subscriber": {"name": {"given_name": "Ada", "surname": "Buyer"}, "email_address": email,
                           "payer_id": "2J6QB8YJQSJRJ"},
            "billing_info": {"outstanding_balance": {"currency_code": "USD", "value": "0.00"},
                             "last_payment": {"amount": {"currency_code": "USD", "value": "9.00"},
                                              "time": "2027-01-15T08:00:00Z"},
                             "next_billing_time": "2027-02-14T10:00:00Z", "failed_payments_count": 0},
            "create_time": "2027-01-15T07:59:00Z", "update_time": "2027-01-15T08:00:00Z", "status": status,
            "links": [{"href": f"https://api.sandbox.paypal.com/v1/billing/subscriptions/{subscription_id}",
                       "rel": "self", "method": "GET"}]}


def _sale(sale_id: str, subscription_id: str | None, create_time: str) -> dict:
    """A sale as PAYMENT.SALE.COMPLETED carries it: a subscription's payment names it in billing_agreement_id."""
    sale = {"id": sale_id, "state": "completed", "amount": {"total": "9.00", "currency": "USD",
                                                           "details": {"subtotal": "9.00"}},
            "payment_mode": "INSTANT_TRANSFER", "protection_eligibility": "ELIGIBLE",
            "transaction_fee": {"value": "0.56", "currency": "USD"}, "create_time": create_time,
            "update_time": create_time,
            "links": [{"href": f"https://api.sandbox.paypal.com/v1/payments/sale/{sale_id}", "rel": "self",
                       "method": "GET"}]}
    if subscription_id:
        sale["billing_agreement_id"] = subscription_id
    return sale


async def _expiries(database_url: str, tenant_id: str) -> list[tuple[str, dt.datetime | None, bool]]:
    rows = await _rows(database_url, "SELECT kind, expires_at, revoked_at IS NOT NULL AS revoked FROM licenses "
                                     "WHERE tenant_id = $1 ORDER BY id", tenant_id)
    return [(r["kind"], r["expires_at"], r["revoked"]) for r in rows]


async def test_subscription_activation_renewals_and_cancellation(paypal_shop, tenant, settings, smtp_server, clock):
    services = paypal_shop["app"].state.services
    start = clock.utcnow()
    await _post(paypal_shop, tenant, "BILLING.SUBSCRIPTION.ACTIVATED",
                _subscription("I-BW452GLLEP1G", MONTHLY_PLAN, email="ada@example.com"), "WH-SUB-ACT")
    await jobs.run_due(services)
    # The first sale is the activation's own period: nothing changes.
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED",
                _sale("80021663DE681814L", "I-BW452GLLEP1G", "2027-01-15T08:00:00Z"), "WH-SALE-1")
    await jobs.run_due(services)
    assert await _expiries(settings.database_url, tenant.id) == [("standard", start + dt.timedelta(days=30), False)]
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["ada@example.com"]
    # A month later the renewal pays the next period; PayPal sending it twice changes nothing more.
    clock.advance(30 * 86400)
    renewal = _sale("1DK54437RN742530K", "I-BW452GLLEP1G", "2027-02-14T10:00:00Z")
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED", renewal, "WH-SALE-2")
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED", renewal, "WH-SALE-2-AGAIN")
    await jobs.run_due(services)
    paid_until = dt.datetime(2027, 2, 14, 10, tzinfo=dt.UTC) + dt.timedelta(days=30)
    assert await _expiries(settings.database_url, tenant.id) == [("standard", paid_until, False)]
    # Cancelled: onCancel "expire" lets the paid period run out; a later sale extends nothing.
    await _post(paypal_shop, tenant, "BILLING.SUBSCRIPTION.CANCELLED",
                _subscription("I-BW452GLLEP1G", MONTHLY_PLAN, email="ada@example.com", status="CANCELLED"),
                "WH-SUB-CANCEL")
    await jobs.run_due(services)
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED",
                _sale("9TL62815ND3408207", "I-BW452GLLEP1G", "2027-03-16T10:00:00Z"), "WH-SALE-3")
    await jobs.run_due(services)
    assert await _expiries(settings.database_url, tenant.id) == [("standard", paid_until, False)]
    outcomes = [r["outcome"] for r in await _rows(settings.database_url,
                                                  "SELECT outcome FROM payment_events ORDER BY id")]
    assert outcomes == ["fulfilled:1", "renewed:0", "renewed:1", "already_renewed", "cancelled:1", "ended"]


async def test_subscription_events_out_of_order_and_revoke_on_expiry(paypal_shop, tenant, settings, clock):
    services = paypal_shop["app"].state.services
    # The renewal's sale arrives before the activation it belongs to: retried until it is there.
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED",
                _sale("2RV50321AB123456C", "I-TEAM0000001", "2027-01-15T08:00:00Z"), "WH-T-SALE")
    await jobs.run_due(services)
    assert await _expiries(settings.database_url, tenant.id) == []
    await _post(paypal_shop, tenant, "BILLING.SUBSCRIPTION.ACTIVATED",
                _subscription("I-TEAM0000001", TEAM_PLAN, email="it@globex.example", quantity=3), "WH-T-ACT")
    await jobs.run_due(services)
    clock.advance(5 * 60)
    await jobs.run_due(services)
    [(kind, expires, revoked)] = await _expiries(settings.database_url, tenant.id)
    assert kind == "corporate" and expires is not None and not revoked
    seats = await _rows(settings.database_url, "SELECT max_seats FROM licenses WHERE tenant_id = $1", tenant.id)
    assert seats[0]["max_seats"] == 15
    # EXPIRED (the plan's cycles ran out) applies onCancel, "revoke" for this plan.
    await _post(paypal_shop, tenant, "BILLING.SUBSCRIPTION.EXPIRED",
                _subscription("I-TEAM0000001", TEAM_PLAN, email="it@globex.example", status="EXPIRED"), "WH-T-EXP")
    # A one-time sale (no billing agreement) and an unmapped plan deliver nothing.
    await _post(paypal_shop, tenant, "PAYMENT.SALE.COMPLETED", _sale("5AB12345CD678901E", None,
                                                                     "2027-01-15T08:06:00Z"), "WH-ONE-TIME")
    await _post(paypal_shop, tenant, "BILLING.SUBSCRIPTION.ACTIVATED",
                _subscription("I-OTHER000001", "P-UNMAPPED0000000000000000", email="bo@example.com"), "WH-UNMAPPED")
    await jobs.run_due(services)
    assert [r[2] for r in await _expiries(settings.database_url, tenant.id)] == [True]
    outcomes = {r["event_id"]: r["outcome"] for r in await _rows(
        settings.database_url, "SELECT event_id, outcome FROM payment_events")}
    assert outcomes == {"WH-T-SALE": "renewed:0", "WH-T-ACT": "fulfilled:1", "WH-T-EXP": "cancelled:1",
                        "WH-ONE-TIME": "not_subscription", "WH-UNMAPPED": "unmapped"}

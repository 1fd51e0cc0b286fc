"""Webhooks against a real HTTP receiver on loopback: management, signatures (by hand and with the
standardwebhooks package), fan-out by subscription, each retry step on the clock, the disable
rule and its e-mail, manual redeliver, ping, secret rotation, the SSRF guard, one sender at a
time per delivery, and tenant isolation."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from conftest import db_connection, make_product, running_app
from quota_gateway.clock import Clock
from quota_gateway.events import emit, jobs, webhooks
from webhook_receiver import verify_exiso


@pytest.fixture
async def quiet(settings, clock):
    """The app without its background worker: the test runs `jobs.run_due` after moving the clock."""
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def _endpoint(client, tenant, receiver, events=("*",), **extra) -> dict:
    r = await client.post("/api/webhooks", json={"url": receiver.url, "events": list(events), **extra},
                          headers=tenant.headers)
    assert r.status_code == 201, r.text
    receiver.secrets.append(r.json()["secret"])
    return r.json()


async def _emit(app, tenant_id: str, event_type: str = "license.created", data: dict | None = None) -> int:
    async with app.state.services.pool.acquire() as conn:
        return await emit(conn, tenant_id, event_type, data or {"licenseId": 1})


async def _log(client, tenant, endpoint_id: int) -> list[dict]:
    r = await client.get(f"/api/webhooks/{endpoint_id}/deliveries", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


async def test_management_and_secret_shown_once(client, tenant, other_tenant, webhook_receiver, settings):
    made = await _endpoint(client, tenant, webhook_receiver, events=["license.created", "license.revoked"],
                           description="CRM sync")
    assert made["secret"].startswith("whsec_") and made["enabled"] is True
    assert made["events"] == ["license.created", "license.revoked"]
    shown = (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()
    assert "secret" not in shown and shown["secretHints"] == [made["secret"][:10] + "…"]
    listing = (await client.get("/api/webhooks", headers=tenant.headers)).json()["webhooks"]
    assert [w["id"] for w in listing] == [made["id"]] and "secret" not in listing[0]
    async with db_connection(settings.database_url) as conn:
        stored = bytes(await conn.fetchval("SELECT secret_enc FROM webhook_secrets"))
    assert made["secret"].encode() not in stored
    r = await client.patch(f"/api/webhooks/{made['id']}", json={"events": ["*"], "description": "all"},
                           headers=tenant.headers)
    assert r.json()["events"] == ["*"] and r.json()["description"] == "all" and r.json()["url"] == made["url"]
    # Another tenant neither sees nor touches it.
    assert (await client.get("/api/webhooks", headers=other_tenant.headers)).json()["webhooks"] == []
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/api/webhooks/{made['id']}", headers=other_tenant.headers)
        assert r.status_code == 404 and r.json()["error"] == "webhook_not_found"
    r = await client.post(f"/api/webhooks/{made['id']}/ping", headers=other_tenant.headers)
    assert r.status_code == 404
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    assert (await client.get("/api/webhooks", headers=verify_only)).status_code == 403
    assert (await client.delete(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json() == {"deleted": True}
    assert (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).status_code == 404


@pytest.mark.parametrize("body,code", [
    ({"url": "ftp://example.com/x", "events": ["*"]}, "invalid_url"),
    ({"url": "https://user:pw@example.com/x", "events": ["*"]}, "invalid_url"),
    # urlsplit drops line breaks and tabs before parsing: the check passed, the stored URL kept them
    ({"url": "https://example.com/x\r\nX-Injected: 1", "events": ["*"]}, "invalid_url"),
    ({"url": "https://example.com/\tx", "events": ["*"]}, "invalid_url"),
    ({"url": "https://example.com/x", "events": ["license.exploded"]}, "unknown_event_type"),
    ({"url": "https://example.com/x", "events": []}, "unknown_event_type"),
    ({"url": "https://example.com/x"}, "missing_field"),
])
async def test_bad_endpoints(client, tenant, body, code):
    r = await client.post("/api/webhooks", json=body, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == code, r.text


async def test_ssrf_guard(settings, clock, tenant):
    strict = replace(settings, webhook_allow_private=False)
    async with running_app(strict, clock) as (_, client):
        for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://10.0.0.8/x",
                    "http://[::1]/x", "http://localhost:8080/x", "http://192.168.1.1/x", "http://[::ffff:127.0.0.1]/"):
            r = await client.post("/api/webhooks", json={"url": url, "events": ["*"]}, headers=tenant.headers)
            assert r.status_code == 400 and r.json()["error"] == "url_not_allowed", url
    # A name is checked at send time, every address it resolves to.
    with pytest.raises(webhooks.DestinationRefused):
        await webhooks.resolve("localhost", 80, allow_private=False)
    assert await webhooks.resolve("localhost", 80, allow_private=True) in ("127.0.0.1", "::1")


async def test_delivery_arrives_signed_within_a_second(settings, tenant, webhook_receiver):
    """Real clock, background worker: a license created through the API arrives at the receiver,
    verified by hand and by the standardwebhooks package."""
    webhook_receiver.check_standard = True
    async with running_app(settings, Clock()) as (_, client):
        made = await _endpoint(client, tenant, webhook_receiver, events=["license.created"])
        product = await make_product(client, tenant.headers, name="Desk")
        started = time.monotonic()
        r = await client.post("/api/licenses", json={"productId": product, "email": "buyer@example.com"},
                              headers=tenant.headers)
        assert r.status_code == 201, r.text
        [arrival] = await webhook_receiver.wait_for(1, timeout=1.0)
        assert arrival.at - time.time() < 1.0 and time.monotonic() - started < 1.0
        assert arrival.exiso_ok and arrival.standard_ok
        event = arrival.json
        assert event["type"] == "license.created" and event["tenantId"] == tenant.id
        assert event["id"].startswith("evt_") and event["timestamp"].endswith("Z")
        assert event["data"]["licenseId"] == r.json()["id"] and event["data"]["email"] == "buyer@example.com"
        assert arrival.headers["x-webhook-event"] == "license.created"
        assert arrival.headers["webhook-id"] == event["id"]
        assert arrival.headers["x-webhook-timestamp"] == arrival.headers["webhook-timestamp"]
        assert arrival.headers["x-webhook-signature"].startswith("sha256=")
        assert arrival.headers["webhook-signature"].startswith("v1,")
        # A replayed body under a new timestamp fails; so does an old timestamp past the tolerance.
        replayed = {**arrival.headers, "x-webhook-timestamp": str(int(time.time()) + 5)}
        assert not verify_exiso(made["secret"], replayed, arrival.body)
        assert not verify_exiso(made["secret"], arrival.headers, arrival.body, now=time.time() + 600)
        for _ in range(100):  # the receiver answered; the gateway records the outcome right after
            [delivery] = await _log(client, tenant, made["id"])
            if delivery["state"] != "pending":
                break
            await asyncio.sleep(0.01)
        assert delivery["state"] == "succeeded" and delivery["eventType"] == "license.created"
        [attempt] = delivery["log"]
        assert attempt["statusCode"] == 200 and attempt["outcome"] == "succeeded"
        assert attempt["responseExcerpt"] == "receiver says 200" and attempt["latencyMs"] >= 0


async def test_subscriptions_filter_events(quiet, tenant, webhook_receiver):
    app, client = quiet
    await _endpoint(client, tenant, webhook_receiver, events=["license.revoked"])
    await _emit(app, tenant.id, "license.created")
    await _emit(app, tenant.id, "license.revoked", {"licenseId": 7})
    await jobs.run_due(app.state.services)
    assert [a.event_type for a in webhook_receiver.arrivals] == ["license.revoked"]


async def test_retry_steps_on_the_clock(quiet, tenant, webhook_receiver, clock):
    app, client = quiet
    services = app.state.services
    made = await _endpoint(client, tenant, webhook_receiver)
    webhook_receiver.fail_next(3, status=503)
    await _emit(app, tenant.id)
    await jobs.run_due(services)
    assert len(webhook_receiver.arrivals) == 1  # attempt 1 at once
    for delay, expected in ((300, 2), (1800, 3), (7200, 4)):
        clock.advance(delay - 1)
        await jobs.run_due(services)
        assert len(webhook_receiver.arrivals) == expected - 1, f"retry {expected} came early"
        clock.advance(1)
        await jobs.run_due(services)
        assert len(webhook_receiver.arrivals) == expected, f"retry {expected} not on time"
    assert [a.status for a in webhook_receiver.arrivals] == [503, 503, 503, 200]
    ids = {a.headers["webhook-id"] for a in webhook_receiver.arrivals}
    assert len(ids) == 1  # the same event id on every retry, for the receiver's dedupe
    [delivery] = await _log(client, tenant, made["id"])
    assert delivery["state"] == "succeeded" and delivery["attempts"] == 4
    assert [(a["attempt"], a["statusCode"], a["outcome"]) for a in delivery["log"]] == [
        (1, 503, "failed"), (2, 503, "failed"), (3, 503, "failed"), (4, 200, "succeeded")]
    assert delivery["log"][0]["responseExcerpt"] == "receiver says 503"
    shown = (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()
    assert shown["consecutiveFailures"] == 0 and shown["enabled"]


async def test_refused_connection_is_a_failure_too(quiet, tenant, webhook_receiver, clock):
    app, client = quiet
    made = await _endpoint(client, tenant, webhook_receiver)
    webhook_receiver.stop()  # nothing listens on the port any more
    await _emit(app, tenant.id)
    await jobs.run_due(app.state.services)
    [delivery] = await _log(client, tenant, made["id"])
    [attempt] = delivery["log"]
    assert attempt["outcome"] == "failed" and attempt["statusCode"] is None and "Connect" in attempt["error"]
    assert delivery["state"] == "pending"  # retried in 5 minutes


async def test_five_failed_attempts_in_a_row_disable_and_mail_the_tenant(quiet, tenant, webhook_receiver, clock,
                                                                          smtp_server):
    app, client = quiet
    services = app.state.services
    await client.put("/api/smtp", json={"host": smtp_server.host, "port": smtp_server.port, "security": "none",
                                        "from": "gateway@acme.example"}, headers=tenant.headers)
    await client.put("/api/email/settings", json={"contactEmail": "ops@acme.example"}, headers=tenant.headers)
    made = await _endpoint(client, tenant, webhook_receiver)
    webhook_receiver.status = 500
    await _emit(app, tenant.id)
    await jobs.run_due(services)
    for delay in (300, 1800, 7200):
        clock.advance(delay)
        await jobs.run_due(services)
    shown = (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()
    assert shown["enabled"] and shown["consecutiveFailures"] == 4
    clock.advance(86400)
    await jobs.run_due(services)  # the 5th failed attempt in a row
    shown = (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()
    assert not shown["enabled"] and shown["consecutiveFailures"] == 5
    assert "5 failed delivery attempts in a row" in shown["disabledReason"]
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["ops@acme.example"] and webhook_receiver.url in mail.subject
    assert "HTTP 500" in mail.text and str(made["id"]) in mail.text
    [delivery] = await _log(client, tenant, made["id"])
    assert delivery["state"] == "failed" and delivery["attempts"] == 5
    # A disabled endpoint gets no new deliveries.
    await _emit(app, tenant.id)
    await jobs.run_due(services)
    assert len(webhook_receiver.arrivals) == 5
    # Manual redeliver works on the disabled endpoint (fix, replay one, re-enable), once, no streak change.
    webhook_receiver.status = 200
    r = await client.post(f"/api/webhooks/{made['id']}/deliveries/{delivery['id']}/redeliver", headers=tenant.headers)
    assert r.status_code == 202, r.text
    await jobs.run_due(services)
    assert len(webhook_receiver.arrivals) == 6 and webhook_receiver.arrivals[-1].status == 200
    [delivery] = await _log(client, tenant, made["id"])
    assert delivery["state"] == "succeeded" and delivery["log"][-1]["manual"] is True
    r = await client.patch(f"/api/webhooks/{made['id']}", json={"enabled": True}, headers=tenant.headers)
    assert r.json()["enabled"] and r.json()["consecutiveFailures"] == 0 and r.json()["disabledReason"] is None
    await _emit(app, tenant.id, "license.revoked")
    await jobs.run_due(services)
    assert webhook_receiver.arrivals[-1].event_type == "license.revoked"


async def test_a_success_resets_the_streak(quiet, tenant, webhook_receiver, clock):
    app, client = quiet
    made = await _endpoint(client, tenant, webhook_receiver)
    webhook_receiver.fail_next(4)
    for _ in range(4):
        await _emit(app, tenant.id)
    await jobs.run_due(app.state.services)  # four events, four failed first attempts
    assert (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()["consecutiveFailures"] == 4
    await _emit(app, tenant.id)
    await jobs.run_due(app.state.services)
    shown = (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()
    assert shown["consecutiveFailures"] == 0 and shown["enabled"]


async def test_410_gone_disables_at_once(quiet, tenant, webhook_receiver):
    app, client = quiet
    r = await client.post("/api/webhooks", json={"url": webhook_receiver.url.replace("/hook", "/gone"),
                                                 "events": ["*"]}, headers=tenant.headers)
    await _emit(app, tenant.id)
    await jobs.run_due(app.state.services)
    shown = (await client.get(f"/api/webhooks/{r.json()['id']}", headers=tenant.headers)).json()
    assert not shown["enabled"] and "410" in shown["disabledReason"]


async def test_ping(quiet, tenant, webhook_receiver):
    _, client = quiet
    made = await _endpoint(client, tenant, webhook_receiver, events=["license.created"])
    r = await client.post(f"/api/webhooks/{made['id']}/ping", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["delivered"] is True and r.json()["statusCode"] == 200
    [arrival] = webhook_receiver.arrivals
    assert arrival.event_type == "webhook.ping" and arrival.exiso_ok
    webhook_receiver.status = 502
    r = await client.post(f"/api/webhooks/{made['id']}/ping", headers=tenant.headers)
    assert r.json()["delivered"] is False and r.json()["error"] == "HTTP 502"
    assert (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()["consecutiveFailures"] == 0
    assert [(d["eventType"], d["state"]) for d in await _log(client, tenant, made["id"])] == [
        ("webhook.ping", "failed"), ("webhook.ping", "succeeded")]   # a ping is one try: nothing retries it


async def test_secret_rotation_overlap(quiet, tenant, webhook_receiver, clock):
    _, client = quiet
    made = await _endpoint(client, tenant, webhook_receiver)
    old = made["secret"]
    r = await client.post(f"/api/webhooks/{made['id']}/rotate-secret", json={"overlapSeconds": 3600},
                          headers=tenant.headers)
    new = r.json()["secret"]
    assert new != old and len(r.json()["secretHints"]) == 2
    await client.post(f"/api/webhooks/{made['id']}/ping", headers=tenant.headers)
    arrival = webhook_receiver.arrivals[-1]
    assert len(arrival.headers["x-webhook-signature"].split(",")) == 2
    assert len(arrival.headers["webhook-signature"].split(" ")) == 2
    assert verify_exiso(old, arrival.headers, arrival.body, tolerance=None)
    assert verify_exiso(new, arrival.headers, arrival.body, tolerance=None)
    clock.advance(3600)
    await client.post(f"/api/webhooks/{made['id']}/ping", headers=tenant.headers)
    arrival = webhook_receiver.arrivals[-1]
    assert verify_exiso(new, arrival.headers, arrival.body, tolerance=None)
    assert not verify_exiso(old, arrival.headers, arrival.body, tolerance=None)
    assert (await client.get(f"/api/webhooks/{made['id']}", headers=tenant.headers)).json()["secretHints"] == [
        new[:10] + "…"]


async def test_one_sender_at_a_time_per_delivery(quiet, tenant, webhook_receiver):
    """A retry and a manual redeliver of the same delivery racing: one sends, the other waits."""
    app, client = quiet
    services = app.state.services
    made = await _endpoint(client, tenant, webhook_receiver)
    await _emit(app, tenant.id)
    await jobs.dispatch_events(services)
    [delivery] = await _log(client, tenant, made["id"])
    webhook_receiver.delay = 0.3
    results = await asyncio.gather(webhooks.attempt_delivery(services, delivery["id"]),
                                   webhooks.attempt_delivery(services, delivery["id"], manual=True),
                                   return_exceptions=True)
    assert sum(isinstance(r, jobs.Defer) for r in results) == 1
    assert webhook_receiver.max_in_flight_per_event == 1 and len(webhook_receiver.arrivals) == 1


async def test_events_and_deliveries_are_tenant_scoped(quiet, tenant, other_tenant, webhook_receiver):
    app, client = quiet
    mine = await _endpoint(client, tenant, webhook_receiver)
    await _emit(app, other_tenant.id, "license.created")
    await jobs.run_due(app.state.services)
    assert webhook_receiver.arrivals == []
    await _emit(app, tenant.id, "license.created")
    await jobs.run_due(app.state.services)
    [delivery] = await _log(client, tenant, mine["id"])
    r = await client.get(f"/api/webhooks/{mine['id']}/deliveries", headers=other_tenant.headers)
    assert r.status_code == 404
    r = await client.post(f"/api/webhooks/{mine['id']}/deliveries/{delivery['id']}/redeliver",
                          headers=other_tenant.headers)
    assert r.status_code == 404


async def test_api_license_events(quiet, tenant, webhook_receiver):
    app, client = quiet
    await _endpoint(client, tenant, webhook_receiver, events=["api.license.created", "api.license.revoked"])
    product = await make_product(client, tenant.headers, name="Weather")
    r = await client.post("/api/apilicense", json={"productId": product, "email": "dev@example.com"},
                          headers=tenant.headers)
    key = r.json()["apiKey"]
    for _ in range(2):  # a repeated revocation raises no second event
        assert (await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)).status_code == 200
    await jobs.run_due(app.state.services)
    # Deliveries of different events run side by side: no order between them is promised.
    created, revoked = sorted(webhook_receiver.arrivals, key=lambda arrival: arrival.event_type)
    assert created.event_type == "api.license.created" and revoked.event_type == "api.license.revoked"
    assert created.json["data"]["apiLicenseId"] == r.json()["id"] and key not in created.body.decode()
    assert revoked.json["data"]["apiLicenseId"] == r.json()["id"] and len(webhook_receiver.arrivals) == 2

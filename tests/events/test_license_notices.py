"""License e-mail and time-driven notices on the clock: delivery of a new key, renewal reminders
(7 and 1 days by default, per product, each once), and `license.expired` once per license even
with several schedulers running."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from conftest import make_product, running_app
from quota_gateway import db
from quota_gateway.events import jobs, scheduler

DAY = 86400


@pytest.fixture
async def quiet(settings, clock):
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def _mail_setup(client, tenant, smtp_server, **mail_settings) -> None:
    r = await client.put("/api/smtp", json={"host": smtp_server.host, "port": smtp_server.port, "security": "none",
                                            "from": "licenses@acme.example"}, headers=tenant.headers)
    assert r.status_code == 200
    await client.put("/api/email/settings", json=mail_settings, headers=tenant.headers)


async def _license(client, tenant, product: int, days: int | None = 30, email: str = "buyer@example.com") -> dict:
    body = {"productId": product, "email": email, **({"validityDays": days} if days else {})}
    r = await client.post("/api/licenses", json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def _events(app, event_type: str) -> list[dict]:
    async with app.state.services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT data FROM events WHERE type = $1 ORDER BY id", event_type)
    return [r["data"] for r in rows]


async def test_license_delivery_when_enabled(quiet, tenant, smtp_server):
    app, client = quiet
    await _mail_setup(client, tenant, smtp_server, deliverLicenses=True, customerPortalUrl="https://p.acme.example")
    product = await make_product(client, tenant.headers, name="Desk Pro")
    made = await _license(client, tenant, product, days=365)
    await jobs.run_due(app.state.services)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["buyer@example.com"] and mail.subject == "Your Desk Pro license key"
    assert made["activationKey"] in mail.text and made["activationKey"] in mail.html
    assert made["expirationDate"][:10] in mail.text and "https://p.acme.example" in mail.html


async def test_no_delivery_unless_enabled_or_without_email(quiet, tenant, smtp_server):
    app, client = quiet
    await _mail_setup(client, tenant, smtp_server)
    product = await make_product(client, tenant.headers)
    await _license(client, tenant, product)
    await client.put("/api/email/settings", json={"deliverLicenses": True}, headers=tenant.headers)
    r = await client.post("/api/licenses", json={"productId": product}, headers=tenant.headers)
    assert r.status_code == 201
    await jobs.run_due(app.state.services)
    assert smtp_server.messages == []


async def test_reminders_7_and_1_days_before_each_once(quiet, tenant, smtp_server, clock):
    app, client = quiet
    services = app.state.services
    await _mail_setup(client, tenant, smtp_server)
    product = await make_product(client, tenant.headers, name="Desk")
    made = await _license(client, tenant, product, days=30)
    clock.advance(23 * DAY - 60)
    await jobs.run_due(services)
    assert smtp_server.messages == []
    clock.advance(60)
    await jobs.run_due(services)
    await jobs.run_due(services)
    [week] = await smtp_server.wait_for(1)
    assert week.subject == "Your Desk license expires in 7 days" and "buyer@example.com" in week.rcpt_tos
    assert made["expirationDate"][:10] in week.text
    clock.advance(6 * DAY)
    await jobs.run_due(services)
    clock.advance(3600)
    await jobs.run_due(services)
    _, day = await smtp_server.wait_for(2)
    assert day.subject == "Your Desk license expires in 1 day"
    assert [e["daysLeft"] for e in await _events(app, "license.expiring")] == [7, 1]
    clock.advance(2 * DAY)
    await jobs.run_due(services)
    assert len(smtp_server.messages) == 2


async def test_a_late_scheduler_sends_one_reminder_and_short_licenses_get_no_week_notice(quiet, tenant, smtp_server,
                                                                                          clock):
    app, client = quiet
    await _mail_setup(client, tenant, smtp_server)
    product = await make_product(client, tenant.headers)
    await _license(client, tenant, product, days=30)
    clock.advance(26.6 * DAY)
    await _license(client, tenant, product, days=3, email="trial@example.com")
    clock.advance(2.9 * DAY)  # the scheduler missed the 7-day point of the first license
    await jobs.run_due(app.state.services)
    mails = await smtp_server.wait_for(2)
    assert sorted((m.rcpt_tos[0], m.subject.rsplit(" ", 2)[-2]) for m in mails) == [
        ("buyer@example.com", "1"), ("trial@example.com", "1")]


async def test_reminder_days_per_product(quiet, tenant, other_tenant, smtp_server, clock):
    app, client = quiet
    await _mail_setup(client, tenant, smtp_server)
    quiet_product = await make_product(client, tenant.headers, name="Quiet")
    custom = await make_product(client, tenant.headers, name="Custom")
    r = await client.get(f"/api/email/reminders/{custom}", headers=tenant.headers)
    assert r.json() == {"productId": custom, "days": [7, 1], "isDefault": True}
    assert (await client.put(f"/api/email/reminders/{quiet_product}", json={"days": []},
                             headers=tenant.headers)).json()["days"] == []
    r = await client.put(f"/api/email/reminders/{custom}", json={"days": [14, 3]}, headers=tenant.headers)
    assert r.json() == {"productId": custom, "days": [14, 3], "isDefault": False}
    r = await client.get(f"/api/email/reminders/{custom}", headers=other_tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "product_not_found"
    await _license(client, tenant, quiet_product, days=30)
    await _license(client, tenant, custom, days=30)
    clock.advance(16 * DAY)
    await jobs.run_due(app.state.services)
    [mail] = await smtp_server.wait_for(1)
    assert "14 days" in mail.subject
    clock.advance(11 * DAY)
    await jobs.run_due(app.state.services)
    _, three = await smtp_server.wait_for(2)
    assert "3 days" in three.subject
    clock.advance(2.9 * DAY)
    await jobs.run_due(app.state.services)
    assert len(smtp_server.messages) == 2  # Custom: no 1-day reminder; Quiet: none at all


async def test_license_expired_once_across_schedulers(quiet, tenant, clock, settings):
    app, client = quiet
    services = app.state.services
    product = await make_product(client, tenant.headers, name="Desk")
    expiring = [await _license(client, tenant, product, days=10) for _ in range(5)]
    revoked = await _license(client, tenant, product, days=10)
    await _license(client, tenant, product, days=None)  # perpetual
    r = await client.delete(f"/api/licenses/{revoked['activationKey']}", headers=tenant.headers)
    assert r.status_code == 200
    clock.advance(10 * DAY - 1)
    await jobs.run_due(services)
    assert await _events(app, "license.expired") == []
    clock.advance(1)
    other_pool = await db.create_pool(settings.database_url, min_size=2, max_size=4)
    try:
        other = replace(services, pool=other_pool)
        await asyncio.gather(*(scheduler.run(s) for s in (services, other, services, other)))
    finally:
        await other_pool.close()
    await jobs.run_due(services)
    expired = await _events(app, "license.expired")
    assert sorted(e["licenseId"] for e in expired) == sorted(m["id"] for m in expiring)
    assert expired[0]["productName"] == "Desk" and expired[0]["expirationDate"].endswith("Z")
    clock.advance(DAY)
    await jobs.run_due(services)
    assert len(await _events(app, "license.expired")) == 5

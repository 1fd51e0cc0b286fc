"""E-mail through a real SMTP server on loopback: SMTP settings (encrypted, masked, per tenant),
the server-wide default, the test message, templates (sandboxed, both parts, placeholders), and
sending through the job queue with retries and a stable Message-ID."""

from __future__ import annotations

from dataclasses import replace

import pytest

from conftest import db_connection, running_app
from quota_gateway.events import jobs, mailer


def _smtp_body(smtp_server, **extra) -> dict:
    return {"host": smtp_server.host, "port": smtp_server.port, "security": "none", "from": "shop@acme.example",
            **extra}


@pytest.fixture
async def quiet(settings, clock):
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        yield app, client


async def test_smtp_settings_encrypted_masked_and_isolated(client, tenant, other_tenant, smtp_server, settings):
    r = await client.put("/api/smtp", json=_smtp_body(smtp_server, username="mailer", password="s3cret-pw"),
                         headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "tenant", "host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                        "username": "mailer", "password": "********", "from": "shop@acme.example"}
    assert (await client.get("/api/smtp", headers=tenant.headers)).json()["password"] == "********"
    async with db_connection(settings.database_url) as conn:
        stored = bytes(await conn.fetchval("SELECT password_enc FROM smtp_settings"))
    assert b"s3cret-pw" not in stored
    # Another tenant sees nothing of it.
    assert (await client.get("/api/smtp", headers=other_tenant.headers)).json()["source"] is None
    # Leaving out the password keeps it; the test message authenticates with it.
    smtp_server.passwords["mailer"] = "s3cret-pw"
    r = await client.put("/api/smtp", json=_smtp_body(smtp_server, username="mailer"), headers=tenant.headers)
    assert r.json()["password"] == "********"
    r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    [mail] = await smtp_server.wait_for(1)
    assert mail.login == "mailer" and mail.rcpt_tos == ["ops@acme.example"]
    assert mail.message_id == r.json()["messageId"]
    r = await client.delete("/api/smtp", headers=tenant.headers)
    assert r.json()["deleted"] is True and r.json()["source"] is None


async def test_smtp_errors(client, tenant, smtp_server):
    r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
    assert r.status_code == 409 and r.json()["error"] == "smtp_not_configured"
    r = await client.put("/api/smtp", json=_smtp_body(smtp_server, security="ssl3"), headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_field"
    r = await client.put("/api/smtp", json={"host": "x"}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "missing_field"
    smtp_server.fail_next(1, "554 5.7.1 rejected by the test")
    await client.put("/api/smtp", json=_smtp_body(smtp_server), headers=tenant.headers)
    r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
    assert r.status_code == 502 and r.json()["error"] == "smtp_failed"
    verify_only = await tenant.token_with(client._transport.app.state.services.settings.database_url, ["verify"])
    assert (await client.get("/api/smtp", headers=verify_only)).status_code == 403


async def test_server_wide_default(settings, clock, tenant, smtp_server):
    server = replace(settings, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                     smtp_from="noreply@gateway.example")
    async with running_app(server, clock) as (_, client):
        r = await client.get("/api/smtp", headers=tenant.headers)
        assert r.json()["source"] == "server" and r.json()["from"] == "noreply@gateway.example"
        r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
        assert r.status_code == 200 and r.json()["source"] == "server"
        [mail] = await smtp_server.wait_for(1)
        assert str(mail.message["From"]) == "noreply@gateway.example"


async def test_templates_crud(client, tenant, other_tenant, clock):
    listing = (await client.get("/api/email/templates", headers=tenant.headers)).json()["templates"]
    assert [t["name"] for t in listing] == ["license_delivery", "renewal_reminder", "ticket_reply",
                                            "portal_login_code", "endpoint_disabled", "payment_unfulfilled"]
    assert all(t["isDefault"] for t in listing)
    default = (await client.get("/api/email/templates/license_delivery", headers=tenant.headers)).json()
    assert "{{LicenseKey}}" in default["text"] and "CustomerPortalUrl" in default["placeholders"]
    r = await client.put("/api/email/templates/license_delivery", headers=tenant.headers,
                         json={"subject": "Key for {{ProductName}}", "text": "Key: {{LicenseKey}}",
                               "html": "<p>{{LicenseKey}}</p>"})
    assert r.status_code == 200 and r.json()["isDefault"] is False
    listing = (await client.get("/api/email/templates", headers=tenant.headers)).json()["templates"]
    assert listing[0]["updatedAt"] == "2027-01-15T08:00:00Z"   # the injectable clock, not the database's
    assert (await client.get("/api/email/templates/license_delivery",
                             headers=other_tenant.headers)).json()["isDefault"] is True
    r = await client.put("/api/email/templates/license_delivery", headers=tenant.headers,
                         json={"subject": "x", "text": "{% if %}"})
    assert r.status_code == 400 and r.json()["error"] == "template_syntax" and r.json()["field"] == "text"
    r = await client.get("/api/email/templates/nope", headers=tenant.headers)
    assert r.status_code == 404 and r.json()["error"] == "unknown_template"
    r = await client.delete("/api/email/templates/license_delivery", headers=tenant.headers)
    assert r.json()["isDefault"] is True and r.json()["subject"] == default["subject"]


# Each could run unbounded: a loop (nested range()s: 10^10 turns), a repetition or a power, a width
# from the template, a variable doubled by every {% set %}.
UNBOUNDED = [
    ("text", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
    ("text", "{{ 'x' * 1000000000 }}"),
    ("text", "{{ 9 ** 9 ** 9 }}"),
    ("text", "{{ '%s' % LicenseKey }}"),
    ("html", "<p>{{ LicenseKey|center(1000000000) }}</p>"),
    ("subject", "{% set a = LicenseKey ~ LicenseKey %}{% set b = a ~ a %}{{ b }}"),
    ("text", "{{ LicenseKey.center(1000000000) }}"),
    ("text", "{% macro m() %}x{% endmacro %}{{ m() }}"),
]


@pytest.mark.parametrize("part, source", UNBOUNDED)
async def test_a_template_that_could_run_unbounded_is_refused(client, tenant, part, source):
    """Templates render inside requests (a portal sign-in renders portal_login_code for anyone who
    asks), on the event loop every tenant shares: a template that stalls stalls them all."""
    body = {"subject": "Key", "text": "Key: {{LicenseKey}}", part: source}
    r = await client.put("/api/email/templates/license_delivery", headers=tenant.headers, json=body)
    assert r.status_code == 400 and r.json()["error"] == "template_syntax" and r.json()["field"] == part, r.text


async def test_what_templates_may_use_still_renders(client, tenant):
    source = ("{% if DaysLeft != 1 and ExpirationDate is defined %}{{ ProductName|upper }} {{ LicenseKey|e }} "
              "{{ DaysLeft + 1 }} {{ CustomerEmail|default('you') }} {{ 'a' if TicketId else 'b' }}{% endif %}"
              "{# a comment #}{% raw %}{{ kept }}{% endraw %}")
    r = await client.put("/api/email/templates/renewal_reminder", headers=tenant.headers,
                         json={"subject": "{{ProductName}} in {{DaysLeft}} days", "text": source, "html": source})
    assert r.status_code == 200, r.text


async def test_queue_mail_renders_both_parts_and_survives_a_refusal(quiet, tenant, smtp_server, clock):
    app, client = quiet
    services = app.state.services
    await client.put("/api/smtp", json=_smtp_body(smtp_server), headers=tenant.headers)
    await client.put("/api/email/settings", json={"customerPortalUrl": "https://portal.acme.example/"},
                     headers=tenant.headers)
    smtp_server.fail_next(1)
    async with services.pool.acquire() as conn:
        job_id = await mailer.queue_mail(conn, services.settings, tenant.id, "license_delivery",
                                         "buyer@example.com", {"LicenseKey": "ABCD-EFGH", "ProductName": "Widget <Pro>",
                                          "ExpirationDate": "2027-12-31"}, dedupe_key="license:1")
        assert await mailer.queue_mail(conn, services.settings, tenant.id, "license_delivery", "buyer@example.com", {},
                                       dedupe_key="license:1") is None
    await jobs.run_due(services)
    assert smtp_server.messages == []  # refused with a 451: retried after 5 minutes
    clock.advance(300)
    await jobs.run_due(services)
    [mail] = await smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["buyer@example.com"] and mail.mail_from == "shop@acme.example"
    assert mail.subject == "Your Widget <Pro> license key"
    assert "ABCD-EFGH" in mail.text and "2027-12-31" in mail.text and "https://portal.acme.example/" in mail.text
    assert "Widget &lt;Pro&gt;" in mail.html and "ABCD-EFGH" in mail.html  # the HTML part is escaped
    async with services.pool.acquire() as conn:
        payload = await conn.fetchval("SELECT payload FROM jobs WHERE id = $1", job_id)
    assert mail.message_id == payload["messageId"]


async def test_a_crash_after_sending_resends_with_the_same_message_id(quiet, tenant, smtp_server, clock):
    app, client = quiet
    services = app.state.services
    await client.put("/api/smtp", json=_smtp_body(smtp_server), headers=tenant.headers)
    async with services.pool.acquire() as conn:
        await mailer.queue_mail(conn, services.settings, tenant.id, "portal_login_code", "buyer@example.com",
                                {"LoginCode": "123456", "ValidMinutes": 10})
    [job] = await jobs.claim(services, 10)
    await mailer._send_job(services, job)  # sent; the process dies before recording the outcome
    clock.advance(services.settings.job_lease_seconds)
    await jobs.run_due(services)
    first, second = await smtp_server.wait_for(2)
    assert first.message_id == second.message_id  # receivers deduplicate on it
    assert "123456" in first.subject
    assert (first.subject, first.text, first.html) == (second.subject, second.text, second.html)


@pytest.mark.parametrize("source", ["{{ ReplyText.__class__.__mro__[1].__subclasses__() }}",
                                    "{% for i in range(3) %}{{ ReplyText }}{% endfor %}"])
async def test_sandbox_refuses_internals(quiet, tenant, smtp_server, source):
    app, client = quiet
    await client.put("/api/smtp", json=_smtp_body(smtp_server), headers=tenant.headers)
    r = await client.put("/api/email/templates/ticket_reply", headers=tenant.headers,
                         json={"subject": "x", "text": source})
    assert r.status_code == 400 and r.json()["error"] == "template_syntax"  # refused when saved
    # One stored before the rule (straight into the table): rendering refuses it too, the mail's job
    # records why, and the change that queued it goes through.
    async with app.state.services.pool.acquire() as conn:
        await conn.execute("INSERT INTO email_templates (tenant_id, name, subject, text_body, html_body, updated_at) "
                           "VALUES ($1, 'ticket_reply', 'x', $2, '', now())", tenant.id, source)
        job_id = await mailer.queue_mail(conn, app.state.services.settings, tenant.id, "ticket_reply",
                                         "buyer@example.com", {"ReplyText": "hi"})
        await jobs.run_due(app.state.services)
        row = await conn.fetchrow("SELECT state, last_error FROM jobs WHERE id = $1", job_id)
    assert row["state"] == "failed" and "not allowed in e-mail templates" in row["last_error"]
    assert smtp_server.messages == []


async def test_mail_settings(client, tenant, other_tenant):
    r = await client.put("/api/email/settings", json={"contactEmail": "ops@acme.example", "deliverLicenses": True},
                         headers=tenant.headers)
    assert r.json() == {"contactEmail": "ops@acme.example", "deliverLicenses": True, "customerPortalUrl": "",
                        "effectiveCustomerPortalUrl": f"http://127.0.0.1:8080/portal/{tenant.slug}/"}
    assert (await client.get("/api/email/settings", headers=other_tenant.headers)).json()["deliverLicenses"] is False
    r = await client.put("/api/email/settings", json={"contactEmail": "nope"}, headers=tenant.headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_field"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost.", "10.0.0.5", "169.254.169.254", "::1"])
async def test_a_tenants_smtp_server_at_a_private_address_is_refused(settings, clock, tenant, host):
    """As for webhooks (QG_WEBHOOK_ALLOW_PRIVATE): the test message told open ports of the gateway's
    loopback and internal networks from closed ones."""
    async with running_app(replace(settings, webhook_allow_private=False), clock) as (_, client):
        r = await client.put("/api/smtp", json={"host": host, "port": 25, "security": "none",
                                                "from": "shop@acme.example"}, headers=tenant.headers)
    assert (r.status_code, r.json()["error"], r.json()["field"]) == (400, "url_not_allowed", "host"), r.text


async def test_a_tenants_smtp_host_resolving_to_loopback_is_refused_when_sending(settings, clock, tenant,
                                                                                 smtp_server):
    async with running_app(replace(settings, webhook_allow_private=False), clock) as (_, client):
        # '127.1' is no address literal, but the resolver reads it as 127.0.0.1
        r = await client.put("/api/smtp", json={"host": "127.1", "port": smtp_server.port, "security": "none",
                                                "from": "shop@acme.example"}, headers=tenant.headers)
        assert r.status_code == 200, r.text  # a name: what it resolves to is checked at each connection
        r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
    assert (r.status_code, r.json()["error"]) == (400, "url_not_allowed"), r.text
    assert smtp_server.messages == []

"""SMTP over implicit TLS and STARTTLS against a real aiosmtpd server whose self-signed
certificate is made by the test: the mailer trusts it only through QG_SMTP_CA_FILE (added to the
system's trust store, hostname still checked); without it, or for another name, sending fails."""

from __future__ import annotations

import ssl
from dataclasses import replace

import pytest

from conftest import running_app
from quota_gateway.devtls import ensure_dev_certificate
from quota_gateway.events import jobs, mailer
from smtp_capture import SmtpCapture


@pytest.fixture
def certificate(tmp_path):
    """(cert, key): self-signed for localhost, 127.0.0.1 and ::1, made for this test."""
    return ensure_dev_certificate(tmp_path / "smtp-tls")


def _server_context(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


@pytest.fixture(params=["tls", "starttls"])
def tls_server(request, certificate):
    """An SMTP server speaking implicit TLS, or insisting on STARTTLS with AUTH only after it.
    (aiosmtpd's auth_require_tls looks at STARTTLS only; under implicit TLS all of it is TLS.)"""
    context = _server_context(certificate)
    if request.param == "tls":
        server = SmtpCapture(ssl_context=context)
    else:
        server = SmtpCapture(tls_context=context, require_starttls=True, auth_require_tls=True)
    server.security = request.param  # type: ignore[attr-defined]
    server.passwords["mailer"] = "s3cret-pw"
    server.start()
    yield server
    server.stop()


def _smtp_body(server, host: str = "127.0.0.1") -> dict:
    return {"host": host, "port": server.port, "security": server.security, "username": "mailer",
            "password": "s3cret-pw", "from": "shop@acme.example"}


async def test_sends_over_tls_trusting_the_configured_ca(settings, clock, tenant, tls_server, certificate):
    trusting = replace(settings, smtp_ca_file=str(certificate[0]), events_worker=False)
    async with running_app(trusting, clock) as (app, client):
        r = await client.put("/api/smtp", json=_smtp_body(tls_server), headers=tenant.headers)
        assert r.status_code == 200, r.text
        r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
        assert r.status_code == 200, r.text
        # And through the job queue, as every other mail goes.
        async with app.state.services.pool.acquire() as conn:
            await mailer.queue_mail(conn, app.state.services.settings, tenant.id, "license_delivery", "buyer@example.com",
                                    {"LicenseKey": "ABCD-1234", "ProductName": "Desk"})
        await jobs.run_due(app.state.services)
        test_mail, delivery = await tls_server.wait_for(2)
    assert test_mail.tls and delivery.tls and test_mail.login == "mailer" == delivery.login
    assert delivery.rcpt_tos == ["buyer@example.com"] and "ABCD-1234" in delivery.text


async def test_an_untrusted_certificate_fails(settings, clock, tenant, tls_server, certificate):
    """Production verification is unchanged: without the CA the self-signed certificate is
    refused, and with it a name the certificate does not cover still is."""
    async with running_app(replace(settings, events_worker=False), clock) as (app, client):
        await client.put("/api/smtp", json=_smtp_body(tls_server), headers=tenant.headers)
        r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
        assert r.status_code == 502 and r.json()["error"] == "smtp_failed", r.text
        assert "CERTIFICATE_VERIFY_FAILED" in r.json()["message"] or "certificate" in r.json()["message"].lower()
        # The queued mail fails its attempt and waits for a retry: never sent insecurely.
        async with app.state.services.pool.acquire() as conn:
            job_id = await mailer.queue_mail(conn, app.state.services.settings, tenant.id, "license_delivery", "buyer@example.com",
                                             {"LicenseKey": "ABCD-1234"})
            await jobs.run_due(app.state.services)
            row = await conn.fetchrow("SELECT state, attempts, last_error FROM jobs WHERE id = $1", job_id)
        assert row["state"] == "pending" and row["attempts"] == 1 and "certificate" in row["last_error"].lower()

    assert tls_server.messages == []


async def test_a_certificate_for_another_name_fails_even_when_trusted(settings, clock, tenant, tmp_path):
    cert, key = ensure_dev_certificate(tmp_path / "other-name", hosts=("mail.example.test",))
    server = SmtpCapture(ssl_context=_server_context((cert, key))).start()
    try:
        trusting = replace(settings, smtp_ca_file=str(cert), events_worker=False)
        async with running_app(trusting, clock) as (_, client):
            body = {"host": "127.0.0.1", "port": server.port, "security": "tls", "from": "shop@acme.example"}
            await client.put("/api/smtp", json=body, headers=tenant.headers)
            r = await client.post("/api/smtp/test", json={"to": "ops@acme.example"}, headers=tenant.headers)
            assert r.status_code == 502 and r.json()["error"] == "smtp_failed", r.text
        assert server.messages == []
    finally:
        server.stop()


def test_the_ca_file_adds_to_the_system_trust_store(certificate):
    plain = mailer.tls_context(None)
    extended = mailer.tls_context(str(certificate[0]))
    assert extended.verify_mode == ssl.CERT_REQUIRED and extended.check_hostname
    assert len(extended.get_ca_certs()) == len(plain.get_ca_certs()) + 1

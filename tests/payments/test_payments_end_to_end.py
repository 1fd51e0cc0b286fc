"""A Stripe payment to a working installation: the gateway under uvicorn with TLS and its job
worker, the license e-mail at a real SMTP server, and the mailed key activated by the published
ExisOne SDK (exisone-client), unchanged."""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import replace

import httpx
import pytest

from conftest import make_tenant
from licensing.test_interop_exisone import _sdk, https_server  # noqa: F401  (https_server is the fixture used here)
from payments.payhelpers import checkout_session, stripe_event, stripe_headers

pytestmark = pytest.mark.slow
SECRET = "whsec_e2e_Pm5dS3cYlX0wQ9rT2vB8nA4k"


@pytest.fixture
def settings(settings, smtp_server):
    """The conftest's settings, plus the test SMTP server as the server-wide mail default."""
    return replace(settings, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
                   smtp_from="licenses@acme.example")


async def test_stripe_payment_to_mailed_key_to_sdk_activation(https_server, settings, smtp_server):  # noqa: F811
    base, cert = https_server
    tenant = await make_tenant(settings.database_url, "e2e")
    tls = ssl.create_default_context(cafile=cert)
    admin = httpx.Client(base_url=base, verify=tls, headers=tenant.headers)
    product = admin.post("/api/product", json={"name": "PixelForge"}).json()
    admin.post(f"/api/product/{product['id']}/features", json={"name": "Pro"})
    r = admin.put("/api/payments/stripe", json={"webhookSecret": SECRET, "mappings": [
        {"priceId": "price_1PixelForgeYearly", "productName": "PixelForge", "validityDays": 365}]})
    assert r.status_code == 200, r.text
    receiver = r.json()["receiverUrl"]
    assert receiver == f"{base}/hooks/stripe/e2e"

    # Stripe's delivery: no access token, only the signature (the server's clock is the real one here)
    session = checkout_session("cs_live_e2e", email="buyer@example.com", price_id="price_1PixelForgeYearly")
    now = int(time.time())
    body = stripe_event("checkout.session.completed", session, event_id="evt_1E2E", created=now)
    r = httpx.post(receiver, content=body, headers=stripe_headers(body, SECRET, now), verify=tls)
    assert r.status_code == 200 and r.json()["handled"] is True, r.text

    [mail] = await smtp_server.wait_for(1, timeout=20)
    assert mail.rcpt_tos == ["buyer@example.com"] and "PixelForge" in mail.subject
    match = re.search(r"\b([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})\b", mail.text)
    assert match, mail.text
    key = match.group(1)
    assert key in mail.html
    # {{CustomerPortalUrl}}: the tenant set none, so this gateway's portal (https, its host and port).
    assert f"Manage your licenses at {base}/portal/e2e/\r\n" in mail.text and f'href="{base}/portal/e2e/"' in mail.html

    sdk = _sdk(base, cert, tenant.token)
    hardware = sdk.generate_hardware_id()
    activated = sdk.activate(key, "buyer@example.com", hardware, "PixelForge")
    assert activated.success, activated.error_message
    result = sdk.validate(key, hardware, "PixelForge")
    assert result.is_valid and result.status == "licensed" and result.features == ["Pro"]
    assert result.expiration_date is not None

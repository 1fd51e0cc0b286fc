"""Signature checks of both providers, on their own: Stripe's HMAC header (signed by the stripe
library itself) and PayPal's certificate-based signature with a CA and certificate made here."""

from __future__ import annotations

import datetime as dt

import pytest
import stripe as stripe_lib

from payments.payhelpers import CertAuthority, PayPalSigner, cert_server, stripe_headers, write_pem
from quota_gateway.payments import paypal, stripe

NOW = 1_800_000_000
BODY = b'{"id":"evt_1","object":"event","type":"checkout.session.completed"}'


# --- Stripe ----------------------------------------------------------------------------------------

def test_stripe_signature_made_by_the_stripe_library_verifies():
    header = stripe_headers(BODY, "whsec_one", NOW)["Stripe-Signature"]
    stripe.verify(BODY, header, ["whsec_one"], NOW)
    # and the library agrees with us about a header it verifies itself
    stripe_lib.WebhookSignature.verify_header(BODY.decode(), header, "whsec_one", tolerance=None)


def test_stripe_rotation_any_secret_any_signature():
    old = stripe_headers(BODY, "whsec_old", NOW)["Stripe-Signature"]
    new = stripe_headers(BODY, "whsec_new", NOW)["Stripe-Signature"]
    both = old + "," + new.split(",", 1)[1]  # Stripe sends one v1 per active secret while rolling
    stripe.verify(BODY, both, ["whsec_new"], NOW)
    stripe.verify(BODY, old, ["whsec_new", "whsec_old"], NOW)


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "old", "future", "missing", "no_v1", "no_t", "garbage",
                                  "v0_only"])
def test_stripe_refusals(case):
    header = stripe_headers(BODY, "whsec_one", NOW)["Stripe-Signature"]
    body, secrets, now = BODY, ["whsec_one"], NOW
    if case == "tampered":
        body = BODY.replace(b"evt_1", b"evt_2")
    elif case == "wrong_secret":
        secrets = ["whsec_two"]
    elif case == "old":
        now = NOW + 301
    elif case == "future":
        now = NOW - 301
    elif case == "missing":
        header = ""
    elif case == "no_v1":
        header = f"t={NOW}"
    elif case == "no_t":
        header = header.split(",", 1)[1]
    elif case == "garbage":
        header = "t=abc,v1=zz"
    elif case == "v0_only":
        header = header.replace("v1=", "v0=")
    with pytest.raises(stripe.SignatureError):
        stripe.verify(body, header, secrets, now)


def test_stripe_tolerance_edge():
    header = stripe_headers(BODY, "whsec_one", NOW)["Stripe-Signature"]
    stripe.verify(BODY, header, ["whsec_one"], NOW + 300)


def test_stripe_session_items_from_metadata_and_line_items():
    assert stripe.session_items({"metadata": {"price_id": "price_1", "quantity": "3"}}) == [("price_1", None, 3)]
    assert stripe.session_items({"metadata": {}}) is None  # the payload does not say: ask Stripe
    expanded = {"line_items": {"object": "list", "data": [
        {"id": "li_1", "object": "item", "quantity": 2, "price": {"id": "price_2", "product": "prod_2"}}]}}
    assert stripe.session_items(expanded) == [("price_2", "prod_2", 2)]
    assert stripe.subscription({"parent": {"subscription_details": {"subscription": "sub_9"}}}) == "sub_9"
    assert stripe.subscription({"subscription": {"id": "sub_8", "object": "subscription"}}) == "sub_8"


# --- PayPal ----------------------------------------------------------------------------------------

CLOCK = dt.datetime.fromtimestamp(NOW, tz=dt.UTC)
PAYPAL_BODY = b'{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED","resource":{"id":"5O190127TN364715T"}}'


@pytest.fixture
def paypal_setup(tmp_path):
    paypal.forget_certificates()
    ca = CertAuthority.make(CLOCK)
    key, cert = ca.issue(CLOCK)
    with cert_server() as server:
        url = server.publish("/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270", cert)
        yield {"ca": ca, "ca_file": write_pem(tmp_path / "ca.pem", ca.cert), "server": server,
               "signer": PayPalSigner(key, url, "8PT597110X687430LKGECATA"), "hosts": server.origin}
    paypal.forget_certificates()


async def _verify(setup, body, headers, *, webhook_id="8PT597110X687430LKGECATA", now=CLOCK, hosts=None):
    lowered = {k.lower(): v for k, v in headers.items()}
    await paypal.verify(body, lowered, webhook_id, now=now, allowed_hosts=hosts or setup["hosts"],
                        ca_file=setup["ca_file"])


async def test_paypal_signature_verifies_and_certificate_is_cached(paypal_setup):
    signer = paypal_setup["signer"]
    await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY))
    await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY))
    assert len(paypal_setup["server"].requests) == 1


@pytest.mark.parametrize("case", ["tampered", "wrong_webhook_id", "sha1", "bad_base64", "missing_header",
                                  "other_key"])
async def test_paypal_refusals(paypal_setup, case):
    signer = paypal_setup["signer"]
    headers, body, webhook_id = signer.headers(PAYPAL_BODY), PAYPAL_BODY, "8PT597110X687430LKGECATA"
    if case == "tampered":
        body = PAYPAL_BODY.replace(b"5O19", b"5O18")
    elif case == "wrong_webhook_id":
        webhook_id = "0000000000000000000000000"
    elif case == "sha1":
        headers["PAYPAL-AUTH-ALGO"] = "SHA1withRSA"
    elif case == "bad_base64":
        headers["PAYPAL-TRANSMISSION-SIG"] = "not base64!"
    elif case == "missing_header":
        del headers["PAYPAL-TRANSMISSION-TIME"]
    elif case == "other_key":  # signed by a key that is not the certificate's
        stranger_key, _ = paypal_setup["ca"].issue(CLOCK)
        headers = PayPalSigner(stranger_key, signer.cert_url, signer.webhook_id).headers(PAYPAL_BODY)
    with pytest.raises(paypal.SignatureError):
        await _verify(paypal_setup, body, headers, webhook_id=webhook_id)


async def test_paypal_certificate_from_a_host_not_allowed_is_never_fetched(paypal_setup):
    signer = paypal_setup["signer"]
    with pytest.raises(paypal.SignatureError, match="allowed"):
        await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY), hosts=".paypal.com")
    assert paypal_setup["server"].requests == []


async def test_paypal_certificate_of_an_untrusted_ca_is_refused(paypal_setup):
    rogue_ca = CertAuthority.make(CLOCK, name="Rogue Root")
    key, cert = rogue_ca.issue(CLOCK)
    url = paypal_setup["server"].publish("/v1/notifications/certs/CERT-rogue", cert)
    signer = PayPalSigner(key, url, "8PT597110X687430LKGECATA")
    with pytest.raises(paypal.SignatureError, match="not trusted"):
        await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY))


async def test_paypal_expired_certificate_is_refused(paypal_setup):
    signer = paypal_setup["signer"]
    with pytest.raises(paypal.SignatureError, match="not trusted"):
        await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY), now=CLOCK + dt.timedelta(days=400))


async def test_paypal_certificate_not_named_for_paypal_is_refused(paypal_setup):
    key, cert = paypal_setup["ca"].issue(CLOCK, common_name="payments.example.com")
    url = paypal_setup["server"].publish("/v1/notifications/certs/CERT-other-name", cert)
    signer = PayPalSigner(key, url, "8PT597110X687430LKGECATA")
    with pytest.raises(paypal.SignatureError, match=r"paypal\.com"):
        await _verify(paypal_setup, PAYPAL_BODY, signer.headers(PAYPAL_BODY))


async def test_paypal_unreachable_or_missing_certificate_is_refused(paypal_setup):
    signer = paypal_setup["signer"]
    missing = PayPalSigner(signer.key, paypal_setup["server"].origin + "/v1/notifications/certs/none",
                           signer.webhook_id)
    with pytest.raises(paypal.SignatureError, match="404"):
        await _verify(paypal_setup, PAYPAL_BODY, missing.headers(PAYPAL_BODY))


@pytest.mark.parametrize("url,allowed", [
    ("https://api.paypal.com/v1/notifications/certs/CERT-1", True),
    ("https://api.sandbox.paypal.com/v1/notifications/certs/CERT-1", True),
    ("http://api.paypal.com/v1/notifications/certs/CERT-1", False),
    ("https://api.paypal.com:8443/v1/notifications/certs/CERT-1", False),
    ("https://paypal.com.evil.example/cert", False),
    ("https://evilpaypal.com/cert", False),
    ("https://user@api.paypal.com/cert", False),
    ("https://api.paypal.com@evil.example/cert", False),
    ("file:///etc/passwd", False),
    ("not a url", False),
])
def test_paypal_cert_url_allow_list(url, allowed):
    assert paypal.url_allowed(url, ".paypal.com") is allowed


def test_paypal_cert_url_allow_list_explicit_http_origin():
    assert paypal.url_allowed("http://127.0.0.1:8123/c", "http://127.0.0.1:8123")
    assert not paypal.url_allowed("http://127.0.0.1:8124/c", "http://127.0.0.1:8123")
    assert not paypal.url_allowed("https://127.0.0.1:8123/c", "http://127.0.0.1:8123")

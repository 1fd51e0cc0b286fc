"""Shared parts of the payments tests: a test CA and PayPal-like certificate, a loopback server
that serves certificates, Stripe-shaped events and signing the way each provider signs."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import stripe
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from quota_gateway.payments.paypal import signed_message

PAYPAL_NAME = "messageverificationcerts.paypal.com"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class CertAuthority:
    """A root CA made for one test run, and leaf certificates it issues."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, now: dt.datetime, name: str = "Payments Test Root") -> CertAuthority:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, now: dt.datetime, common_name: str = PAYPAL_NAME, days: int = 365,
              ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return key, cert

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


class CertServer:
    """A loopback HTTP server that serves PEM files by path (PayPal's PAYPAL-CERT-URL stand-in)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        files, requests = self.files, self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/x-pem-file")
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish(self, path: str, *certs: x509.Certificate) -> str:
        self.files[path] = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
        return self.origin + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def cert_server() -> Iterator[CertServer]:
    server = CertServer()
    try:
        yield server
    finally:
        server.close()


@dataclass
class PayPalSigner:
    key: rsa.RSAPrivateKey
    cert_url: str
    webhook_id: str
    counter: list[int] = field(default_factory=lambda: [0])

    def headers(self, body: bytes, *, transmission_time: str = "2027-01-15T08:00:00Z",
                webhook_id: str | None = None, algorithm: str = "SHA256withRSA") -> dict[str, str]:
        self.counter[0] += 1
        transmission_id = f"b2384410-{self.counter[0]:04d}-11ee-8e1b-5b7fd9d8f0a2"
        message = signed_message(transmission_id, transmission_time, webhook_id or self.webhook_id, body)
        signature = self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {"PAYPAL-TRANSMISSION-ID": transmission_id, "PAYPAL-TRANSMISSION-TIME": transmission_time,
                "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(), "PAYPAL-CERT-URL": self.cert_url,
                "PAYPAL-AUTH-ALGO": algorithm, "Content-Type": "application/json"}


def write_pem(path: Path, *certs: x509.Certificate) -> str:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return str(path)


# --- Stripe ------------------------------------------------------------------------------------------

def stripe_headers(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """`Stripe-Signature` made by the stripe library's own signing helper."""
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def stripe_event(event_type: str, obj: dict, *, event_id: str, created: int) -> bytes:
    """An event envelope as Stripe's API reference shows it."""
    return orjson.dumps({"id": event_id, "object": "event", "api_version": "2024-06-20", "created": created,
                         "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
                         "request": {"id": None, "idempotency_key": None}, "type": event_type})


def checkout_session(session_id: str, *, email: str, price_id: str, quantity: int = 1, mode: str = "payment",
                     payment_status: str = "paid", subscription: str | None = None,
                     payment_intent: str | None = "pi_3PaymentIntent0001") -> dict:
    """A Checkout Session as a webhook carries it (no line_items: the metadata names the price)."""
    return {"id": session_id, "object": "checkout.session", "amount_subtotal": 4900 * quantity,
            "amount_total": 4900 * quantity, "cancel_url": "https://example.com/cancel",
            "client_reference_id": None, "created": 1_799_999_000, "currency": "usd",
            "customer": "cus_Q1w2e3r4t5y6u7", "customer_creation": "if_required",
            "customer_details": {"address": None, "email": email, "name": "Ada Buyer", "phone": None,
                                 "tax_exempt": "none", "tax_ids": []},
            "customer_email": None, "expires_at": 1_800_086_400, "livemode": False, "locale": None,
            "metadata": {"priceId": price_id, "quantity": str(quantity)}, "mode": mode,
            "payment_intent": payment_intent if mode == "payment" else None,
            "payment_method_types": ["card"], "payment_status": payment_status, "status": "complete",
            "subscription": subscription, "success_url": "https://example.com/success",
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}, "url": None}

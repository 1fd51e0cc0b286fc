"""PayPal webhooks, verified offline as PayPal documents it (no call to PayPal's verify API).

PayPal signs `"{PAYPAL-TRANSMISSION-ID}|{PAYPAL-TRANSMISSION-TIME}|{webhook id}|{crc32(raw body)}"`
(the CRC as an unsigned decimal) with the private key of the certificate at PAYPAL-CERT-URL;
the signature is base64 in PAYPAL-TRANSMISSION-SIG, the algorithm in PAYPAL-AUTH-ALGO.

The certificate is fetched only from allow-listed hosts (QG_PAYPAL_CERT_HOSTS), cached per URL,
and every time it is used its chain is validated against the trust store (system CAs, or
QG_PAYPAL_CA_FILE) at the injectable clock's time, and its name must be a paypal.com name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import certifi
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

CERT_NAME_SUFFIX = ".paypal.com"
_ALGORITHMS = {"SHA256withRSA": hashes.SHA256}  # SHA1withRSA is refused: a forgeable digest
_CACHE_SECONDS = 24 * 3600.0
_CACHE_LIMIT = 64
_FETCH_TIMEOUT = 10.0
_MAX_CERT_BYTES = 64 * 1024

_cert_cache: dict[str, tuple[float, list[x509.Certificate]]] = {}
_fetch_locks: dict[str, asyncio.Lock] = {}
_trust_cache: dict[str, verification.Store] = {}


class SignatureError(Exception):
    """The delivery is not provably from PayPal: refused with 400, nothing else happens."""


@dataclass(frozen=True)
class Transmission:
    transmission_id: str
    transmission_time: str
    signature: bytes
    cert_url: str
    algorithm: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Transmission:
        values = {}
        for name in ("paypal-transmission-id", "paypal-transmission-time", "paypal-transmission-sig",
                     "paypal-cert-url", "paypal-auth-algo"):
            value = headers.get(name)
            if not value:
                raise SignatureError(f"missing {name.upper()} header")
            values[name] = value.strip()
        try:
            signature = base64.b64decode(values["paypal-transmission-sig"], validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("PAYPAL-TRANSMISSION-SIG is not base64") from None
        return cls(values["paypal-transmission-id"], values["paypal-transmission-time"], signature,
                   values["paypal-cert-url"], values["paypal-auth-algo"])


def signed_message(transmission_id: str, transmission_time: str, webhook_id: str, raw_body: bytes) -> bytes:
    crc = binascii.crc32(raw_body) & 0xFFFFFFFF
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


# --- where certificates may come from ---------------------------------------------------------

def url_allowed(url: str, allowed_hosts: str) -> bool:
    """Allow-list entries: `host` or `.suffix` (HTTPS only), or `http://host[:port]` spelled out."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        return False
    for entry in (e.strip().lower() for e in allowed_hosts.split(",")):
        if not entry:
            continue
        if "://" in entry:
            allowed = urlsplit(entry)
            if parts.scheme == allowed.scheme and host == allowed.hostname and port == allowed.port:
                return True
            continue
        if parts.scheme != "https" or port not in (None, 443):
            continue
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def _trust_store(ca_file: str | None) -> verification.Store:
    path = ca_file or ssl.get_default_verify_paths().cafile or certifi.where()
    store = _trust_cache.get(path)
    if store is None:
        with open(path, "rb") as handle:
            store = _trust_cache[path] = verification.Store(x509.load_pem_x509_certificates(handle.read()))
    return store


async def _certificates(url: str, ca_file: str | None) -> list[x509.Certificate]:
    """The PEM certificates at `url` (leaf first), from the process cache or fetched once."""
    cached = _cert_cache.get(url)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    lock = _fetch_locks.setdefault(url, asyncio.Lock())
    async with lock:  # concurrent deliveries signed with one new certificate fetch it once
        cached = _cert_cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        tls = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
        try:
            async with httpx.AsyncClient(timeout=_FETCH_TIMEOUT, verify=tls, follow_redirects=False,
                                         trust_env=False) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            raise SignatureError(f"could not fetch PAYPAL-CERT-URL: {exc.__class__.__name__}") from None
        if response.status_code != 200 or len(response.content) > _MAX_CERT_BYTES:
            raise SignatureError(f"PAYPAL-CERT-URL answered {response.status_code}")
        try:
            certs = x509.load_pem_x509_certificates(response.content)
        except ValueError:
            raise SignatureError("PAYPAL-CERT-URL did not serve PEM certificates") from None
        if len(_cert_cache) >= _CACHE_LIMIT:
            _cert_cache.clear()
        _cert_cache[url] = (time.monotonic() + _CACHE_SECONDS, certs)
        _fetch_locks.pop(url, None)
        return certs


def _names(cert: x509.Certificate) -> list[str]:
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    with contextlib.suppress(x509.ExtensionNotFound):
        names += cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    return [n.lower() for n in names]


def check_certificate(certs: list[x509.Certificate], now: datetime, ca_file: str | None) -> rsa.RSAPublicKey:
    """The leaf's RSA key, once its chain leads to a trust anchor and it is valid at `now`."""
    if not certs:
        raise SignatureError("PAYPAL-CERT-URL served no certificate")
    leaf, intermediates = certs[0], certs[1:]
    policy = (verification.PolicyBuilder().store(_trust_store(ca_file)).time(now)
              .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                                  ee_policy=verification.ExtensionPolicy.permit_all()))
    try:
        # A client verifier checks chain, validity periods and CA constraints without tying the
        # leaf to a server name; the name rule follows.
        policy.build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as exc:
        raise SignatureError(f"the PayPal certificate is not trusted: {exc}") from None
    if not any(name.endswith(CERT_NAME_SUFFIX) for name in _names(leaf)):
        raise SignatureError("the certificate is not a paypal.com certificate")
    key = leaf.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the PayPal certificate's key is not RSA")
    return key


async def verify(raw_body: bytes, headers: Mapping[str, str], webhook_id: str, *, now: datetime,
                 allowed_hosts: str, ca_file: str | None) -> None:
    """Raise SignatureError unless the delivery is signed by a trusted PayPal certificate."""
    transmission = Transmission.from_headers(headers)
    digest = _ALGORITHMS.get(transmission.algorithm)
    if digest is None:
        raise SignatureError(f"unsupported PAYPAL-AUTH-ALGO {transmission.algorithm!r}")
    if not url_allowed(transmission.cert_url, allowed_hosts):
        raise SignatureError("PAYPAL-CERT-URL is not on an allowed PayPal host")
    key = check_certificate(await _certificates(transmission.cert_url, ca_file), now, ca_file)
    message = signed_message(transmission.transmission_id, transmission.transmission_time, webhook_id, raw_body)
    try:
        key.verify(transmission.signature, message, padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise SignatureError("the signature does not match this body and webhook id") from None


def forget_certificates() -> None:
    """Empty the process's certificate cache (tests; after a trust-store change)."""
    _cert_cache.clear()
    _trust_cache.clear()


# --- reading PayPal objects --------------------------------------------------------------------------

def order_email(order: dict) -> str:
    payer = order.get("payer") or {}
    source = ((order.get("payment_source") or {}).get("paypal") or {})
    return str(payer.get("email_address") or source.get("email_address") or "")


def order_items(order: dict, unit: dict) -> list[tuple[list[str], int]]:
    """([candidate mapping keys], quantity) per item of one purchase unit: the item's sku, else
    the unit's reference_id / custom_id (a unit with no items counts once)."""
    unit_keys = [str(unit[k]) for k in ("reference_id", "custom_id") if unit.get(k)]
    items = unit.get("items") or []
    if not items:
        return [(unit_keys, 1)] if unit_keys else []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        keys = [str(item["sku"])] if item.get("sku") else []
        try:
            quantity = min(max(int(item.get("quantity") or 1), 1), 1000)
        except (TypeError, ValueError):
            quantity = 1
        out.append((keys + unit_keys, quantity))
    return out


def unit_captures(unit: dict) -> list[dict]:
    payments = unit.get("payments") or {}
    return [c for c in payments.get("captures") or [] if isinstance(c, dict) and c.get("id")]


def capture_order_id(capture: dict) -> str | None:
    related = ((capture.get("supplementary_data") or {}).get("related_ids") or {})
    order_id = related.get("order_id")
    return str(order_id) if order_id else None


def refund_capture_id(refund: dict) -> str | None:
    """The capture a refund belongs to: its `up` link ends in /v2/payments/captures/{id}."""
    for link in refund.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "up" and "/captures/" in str(link.get("href", "")):
            return str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
    return None


def subscription_email(subscription: dict) -> str:
    subscriber = subscription.get("subscriber") or {}
    return str(subscriber.get("email_address") or "") if isinstance(subscriber, dict) else ""


def subscription_items(subscription: dict) -> list[tuple[list[str], int]]:
    """([candidate mapping keys], quantity) of a subscription: its plan id (`P-...`), else its
    custom_id; the quantity PayPal bills (a string, "1" when the plan has none)."""
    keys = [str(subscription[k]) for k in ("plan_id", "custom_id") if subscription.get(k)]
    try:
        quantity = min(max(int(subscription.get("quantity") or 1), 1), 1000)
    except (TypeError, ValueError):
        quantity = 1
    return [(keys, quantity)] if keys else []


def parse_time(value: object) -> datetime | None:
    """PayPal's RFC 3339 times (`2027-01-15T08:00:00Z`), None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None

"""Stripe webhooks: the `Stripe-Signature` check and the few facts read from Stripe's objects.

`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`, where each v1 is
HMAC-SHA256(endpoint secret, "{t}.{raw body}"). Several v1 values (and several configured
secrets) exist while a secret is being rolled; any pair that matches is enough. The timestamp
must be within `TOLERANCE_SECONDS` of our clock, which stops replays of old deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

TOLERANCE_SECONDS = 300  # Stripe's libraries use the same default


class SignatureError(Exception):
    """The delivery is not provably from Stripe: refused with 400, nothing else happens."""


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if not value.isdigit() or len(value) > 12:
                raise SignatureError("Stripe-Signature has a malformed timestamp")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.strip())
    if timestamp is None:
        raise SignatureError("Stripe-Signature has no timestamp")
    if not signatures:
        raise SignatureError("Stripe-Signature has no v1 signature")
    return timestamp, signatures


def verify(raw_body: bytes, header: str | None, secrets: Iterable[str], now: float,
           tolerance: int = TOLERANCE_SECONDS) -> None:
    """Raise SignatureError unless one v1 signature matches one secret, within the tolerance."""
    if not header:
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    signed = str(timestamp).encode() + b"." + raw_body
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        for candidate in signatures:
            # compare_digest on every pair (no early exit) keeps the timing independent of which one matched
            matched |= hmac.compare_digest(expected, candidate.encode("ascii", "replace"))
    if not matched:
        raise SignatureError("no signature matches a configured webhook secret")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("the signature's timestamp is outside the tolerance (a replay, or a wrong clock)")


# --- reading Stripe objects -------------------------------------------------------------------------

def _id(value: Any) -> str | None:
    """An expandable field: an id string, or the expanded object with its id."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def session_email(session: dict) -> str:
    details = session.get("customer_details") or {}
    return str(details.get("email") or session.get("customer_email") or "")


def session_items(session: dict) -> list[tuple[str | None, str | None, int]]:
    """(price id, Stripe product id, quantity) of what a Checkout Session sold.

    Webhook payloads carry no line items unless expanded, so the session's metadata
    (`priceId`/`price_id`, `productId`/`product_id`, `quantity`) names the purchase then; the
    README shows how a publisher sets it on the Checkout Session or Payment Link.
    """
    line_items = session.get("line_items")
    if isinstance(line_items, dict) and isinstance(line_items.get("data"), list):
        items = []
        for line in line_items["data"]:
            if not isinstance(line, dict):
                continue
            price = line.get("price") or {}
            items.append((_id(price), _id(price.get("product")) if isinstance(price, dict) else None,
                          _quantity(line.get("quantity"))))
        return items
    metadata = session.get("metadata") or {}
    price_id = metadata.get("priceId") or metadata.get("price_id")
    product_id = metadata.get("productId") or metadata.get("product_id")
    if not price_id and not product_id:
        return []
    return [(str(price_id) if price_id else None, str(product_id) if product_id else None,
             _quantity(metadata.get("quantity")))]


def _quantity(value: Any) -> int:
    try:
        quantity = int(value) if value is not None else 1
    except (TypeError, ValueError):
        return 1
    return min(max(quantity, 1), 1000)


def subscription(obj: dict) -> str | None:
    """The subscription of a Checkout Session or an invoice: `subscription` (invoices before API
    version 2025-03-31, and sessions) or `parent.subscription_details.subscription` (later invoices)."""
    found = _id(obj.get("subscription"))
    if found:
        return found
    parent = obj.get("parent") or {}
    details = parent.get("subscription_details") or {} if isinstance(parent, dict) else {}
    return _id(details.get("subscription")) if isinstance(details, dict) else None


def payment_intent(obj: dict) -> str | None:
    """The PaymentIntent of a Checkout Session or a charge: what a refund names."""
    return _id(obj.get("payment_intent"))


def object_id(obj: dict) -> str | None:
    return _id(obj)

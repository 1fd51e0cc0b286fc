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
from urllib.parse import quote

import httpx

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


Item = tuple[str | None, str | None, int]  # (price id, Stripe product id, quantity)


def _line_items(lines: list) -> list[Item]:
    items = []
    for line in lines:
        if not isinstance(line, dict):
            continue
        price = line.get("price") or {}
        items.append((_id(price), _id(price.get("product")) if isinstance(price, dict) else None,
                      _quantity(line.get("quantity"))))
    return items


def session_items(session: dict) -> list[Item] | None:
    """What a Checkout Session sold, read from the webhook payload; None when the payload does not
    say (then the line items are asked of Stripe's API: `fetch_line_items`).

    Webhook payloads carry no line items unless expanded; a publisher may also name the purchase
    in the session's metadata (`priceId`/`price_id`, `productId`/`product_id`, `quantity`).
    """
    line_items = session.get("line_items")
    if isinstance(line_items, dict) and isinstance(line_items.get("data"), list) \
            and not line_items.get("has_more"):
        return _line_items(line_items["data"])
    metadata = session.get("metadata") or {}
    price_id = metadata.get("priceId") or metadata.get("price_id")
    product_id = metadata.get("productId") or metadata.get("product_id")
    if not price_id and not product_id:
        return None
    return [(str(price_id) if price_id else None, str(product_id) if product_id else None,
             _quantity(metadata.get("quantity")))]


# --- Stripe's API: a Checkout Session's line items ------------------------------------------------------

API_BASE = "https://api.stripe.com"
API_TIMEOUT_SECONDS = 10.0
_PAGE = 100  # Stripe's largest page
_MAX_PAGES = 10  # a session has at most a few hundred line items; this only bounds a runaway answer


class ApiError(Exception):
    """Stripe's API did not give the line items. `lasting` (bad or too weak a key, no such
    session: 401, 403, 404, 400) will not change on a retry; anything else (timeouts, 429, 5xx)
    may."""

    def __init__(self, message: str, *, status: int | None = None, lasting: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.lasting = lasting


def _refusal(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    detail = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {response.status_code}" + (f": {str(detail)[:200]}" if detail else "")


async def fetch_line_items(session_id: str, api_key: str, *, api_base: str = API_BASE,
                           timeout: float = API_TIMEOUT_SECONDS) -> list[Item]:
    """`GET /v1/checkout/sessions/{id}/line_items`, every page, with the tenant's secret or
    restricted key (a restricted key needs read access to Checkout Sessions)."""
    items: list[Item] = []
    url = f"{api_base.rstrip('/')}/v1/checkout/sessions/{quote(session_id, safe='')}/line_items"
    params: dict[str, Any] = {"limit": _PAGE}
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for _ in range(_MAX_PAGES):
            try:
                response = await client.get(url, params=params, headers={"Authorization": f"Bearer {api_key}"})
            except httpx.HTTPError as exc:
                raise ApiError(f"Stripe's API unreachable: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise ApiError(f"Stripe refused the line items: {_refusal(response)}", status=response.status_code,
                               lasting=response.status_code in (400, 401, 403, 404))
            try:
                page = response.json()
                lines = page["data"]
            except (ValueError, KeyError, TypeError):
                raise ApiError("Stripe answered the line items with something other than a list") from None
            if not isinstance(lines, list):
                raise ApiError("Stripe answered the line items with something other than a list")
            items.extend(_line_items(lines))
            last = lines[-1].get("id") if lines and isinstance(lines[-1], dict) else None
            if not page.get("has_more") or not isinstance(last, str):
                return items
            params = {"limit": _PAGE, "starting_after": last}
    raise ApiError(f"more than {_PAGE * _MAX_PAGES} line items", lasting=True)


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

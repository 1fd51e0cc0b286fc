"""A loopback stand-in for the one call of Stripe's API the gateway makes: a contract fake, not Stripe.

`GET /v1/checkout/sessions/{id}/line_items` as Stripe's API reference documents it:
- authentication by `Authorization: Bearer <secret or restricted key>`; a missing or unknown key
  is `401` with `{"error": {"message": "Invalid API Key provided: sk_test_****…", "type":
  "invalid_request_error"}}`; a restricted key without read access to Checkout Sessions is `403`
  (`"type": "invalid_request_error"`, the message naming the permission);
- an unknown session is `404` with `{"error": {"code": "resource_missing", "param": "id",
  "message": "No such checkout.session: 'cs_…'", "type": "invalid_request_error"}}`;
- the answer is a list object: `{"object": "list", "data": [item…], "has_more", "url"}`, each
  item `{"id": "li_…", "object": "item", "price": {price object, "product": "prod_…"},
  "quantity", "amount_total", "currency", "description"}`; `limit` (1–100, default 10) and
  `starting_after` page through it.
Faults on command: a status (with Stripe's `api_error` body) for the next N calls. Every request is
recorded. The `stripe` library itself reads these answers in the tests, as a check of the shapes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopback import LoopbackServer


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"Request-Id": f"req_{time.monotonic_ns():x}", "Stripe-Version": "2024-06-20"})


def _error(status: int, message: str, kind: str = "invalid_request_error", **extra: str) -> Response:
    return _json({"error": {"message": message, "type": kind, **extra}}, status)


def line_item(number: int, price_id: str, product_id: str, quantity: int = 1, unit_amount: int = 4900) -> dict:
    return {"id": f"li_1Pq{number:020d}", "object": "item", "amount_discount": 0, "amount_subtotal": unit_amount * quantity,
            "amount_tax": 0, "amount_total": unit_amount * quantity, "currency": "usd", "description": "Desktop App",
            "price": {"id": price_id, "object": "price", "active": True, "billing_scheme": "per_unit",
                      "created": 1_799_000_000, "currency": "usd", "livemode": False, "lookup_key": None,
                      "metadata": {}, "nickname": None, "product": product_id, "recurring": None,
                      "tax_behavior": "unspecified", "type": "one_time", "unit_amount": unit_amount,
                      "unit_amount_decimal": str(unit_amount)},
            "quantity": quantity}


@dataclass
class StripeApi:
    keys: set[str] = field(default_factory=lambda: {"sk_test_51StandinSecretKey0000", "rk_test_51StandinReadKey0000"})
    keys_without_checkout_read: set[str] = field(default_factory=lambda: {"rk_test_51StandinNoCheckout00"})
    sessions: dict[str, list[dict]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)  # path, query, headers
    faults: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, status: int = 500, times: int = 1) -> None:
        with self.lock:
            self.faults.extend([status] * times)

    async def line_items(self, request: Request) -> Response:
        self.requests.append((request.url.path, dict(request.query_params), dict(request.headers)))
        with self.lock:
            fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            return _error(fault, "An unknown error occurred", "api_error")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            return _error(401, "You did not provide an API key.")
        if key in self.keys_without_checkout_read:
            return _error(403, f"The provided key '{key[:8]}****{key[-4:]}' does not have the required permissions "
                               "for this endpoint on account 'acct_1Standin'. Having the 'rak_checkout_session_read' "
                               "permission would allow this request to continue.")
        if key not in self.keys:
            return _error(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}")
        session_id = request.path_params["session_id"]
        lines = self.sessions.get(session_id)
        if lines is None:
            return _error(404, f"No such checkout.session: '{session_id}'", code="resource_missing", param="id")
        try:
            limit = int(request.query_params.get("limit", "10"))
        except ValueError:
            return _error(400, "Invalid integer: limit", param="limit")
        if not 1 <= limit <= 100:
            return _error(400, "This value must be between 1 and 100.", param="limit")
        start = 0
        after = request.query_params.get("starting_after")
        if after is not None:
            ids = [line["id"] for line in lines]
            if after not in ids:
                return _error(400, f"Invalid starting_after: {after}", param="starting_after")
            start = ids.index(after) + 1
        page = lines[start:start + limit]
        return _json({"object": "list", "data": page, "has_more": start + limit < len(lines),
                      "url": f"/v1/checkout/sessions/{session_id}/line_items"})


class StripeApiServer:
    """The stand-in on loopback (tests/loopback.py); `reset()` gives it an empty account."""

    def __init__(self) -> None:
        self.api = StripeApi()
        app = Starlette(routes=[Route("/v1/checkout/sessions/{session_id}/line_items", self._line_items)])
        self.loopback = LoopbackServer(app, "Stripe API stand-in")
        self.url = self.loopback.url

    async def _line_items(self, request: Request) -> Response:
        return await self.api.line_items(request)  # the current state, replaced by reset()

    def start(self) -> StripeApiServer:
        self.loopback.start()
        return self

    def reset(self) -> StripeApi:
        self.api = StripeApi()
        return self.api

    def stop(self) -> None:
        self.loopback.stop()

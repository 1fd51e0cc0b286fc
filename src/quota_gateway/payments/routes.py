"""Endpoints of payments: provider settings (admin) and the providers' webhook receivers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import crypto, tenants
from ..answers import BOOLEAN, INTEGER, STRING, TIMESTAMP, answer, array, nullable, one_of, optional, page
from ..errors import ApiError
from ..jsonio import read_body
from ..listing import PAGE_FIELDS
from ..routing import ApiRoute, Call, Handler, endpoint
from ..schema import Field, Int, List, Object, Query, Str, obj
from . import service


@dataclass
class OneOrMany(Field):
    """A string, or a list of them (several secrets while one is being rolled)."""

    item: Str = field(default_factory=lambda: Str(min_len=1, max_len=255))
    max_items: int = 5

    def parse(self, value: Any, path: str) -> list[str]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ApiError(400, "invalid_field", f"{path}: must not be empty", field=path)
        return List(item=self.item, max_items=self.max_items).parse(values, path)

    def json_schema(self) -> dict:
        return self._doc({"anyOf": [self.item.json_schema(),
                                    {"type": "array", "items": self.item.json_schema(), "maxItems": self.max_items}]})


_RULE = ("revoke", "expire")
_MAPPING_FIELDS: dict[str, Field] = dict(
    productId=Int(minimum=1, description="our product (or productName)"),
    productName=Str(min_len=1, max_len=100),
    planId=Int(minimum=1, description="our plan: its duration is the validity and the renewal period"),
    validityDays=Int(minimum=1, maximum=36500, description="validity and renewal period (overrides the plan's)"),
    licenseKind=Str(choices=("standard", "corporate"), default="standard"),
    seats=Int(minimum=1, maximum=1_000_000, description="corporate: seats per unit bought; omit for unlimited"),
    features=List(item=Str(min_len=1, max_len=100), max_items=500, description="omit for every product feature"),
    onRefund=Str(choices=_RULE, default="revoke", description="a full refund revokes the licenses or ends them now"),
    onCancel=Str(choices=_RULE, default="expire",
                 description="a cancelled subscription revokes the licenses or lets them run out"),
)
_STRIPE_MAPPING = obj(priceId=Str(min_len=1, max_len=255, description="Stripe price id (price_...)"),
                      stripeProductId=Str(min_len=1, max_len=255, description="Stripe product id (prod_...)"),
                      **_MAPPING_FIELDS)
_PAYPAL_MAPPING = obj(itemId=Str(required=True, min_len=1, max_len=255,
                                 description="item sku, or purchase unit reference_id / custom_id"),
                      **_MAPPING_FIELDS)
_STRIPE = obj(webhookSecret=OneOrMany(description="endpoint signing secret(s), whsec_...; omit to keep the stored ones"),
              apiKey=Str(max_len=255, pattern=r"^((sk|rk)_[A-Za-z0-9_]+)?$",
                         description="secret (sk_...) or restricted (rk_..., Checkout Sessions: read) key, used only to "
                                     "read a session's line items when its payload names none; omit to keep, \"\" to remove"),
              mappings=List(required=True, item=_STRIPE_MAPPING, max_items=200))
_PAYPAL = obj(webhookId=Str(min_len=1, max_len=100, description="the PayPal webhook's id; omit to keep the stored one"),
              mappings=List(required=True, item=_PAYPAL_MAPPING, max_items=200))
_KEY_FIELDS = {"stripe": ("priceId", "stripeProductId"), "paypal": ("itemId",)}

# Answers: the settings as stored (service.resolve_mappings), secrets masked; the receivers' receipt.
_MAPPING_SHOWN = dict(productId=INTEGER, productName=STRING, planId=nullable(INTEGER), validityDays=nullable(INTEGER),
                      periodDays=nullable(INTEGER), licenseKind=one_of("standard", "corporate"), seats=nullable(INTEGER),
                      features=nullable(array(STRING)), onRefund=one_of(*_RULE), onCancel=one_of(*_RULE))
_SETTINGS_SHOWN = dict(receiverUrl=STRING, updatedAt=TIMESTAMP)
_SHOWN = {
    "stripe": answer(provider={"const": "stripe"}, webhookSecret=array(STRING), apiKey=nullable(STRING),
                     **_SETTINGS_SHOWN, mappings=array(answer(
        priceId=nullable(STRING), stripeProductId=nullable(STRING), **_MAPPING_SHOWN))),
    "paypal": answer(provider={"const": "paypal"}, webhookId=STRING, **_SETTINGS_SHOWN, mappings=array(answer(
        itemId=STRING, **_MAPPING_SHOWN))),
}
_RECEIVED = answer(received={"const": True}, handled=BOOLEAN, duplicate=optional(BOOLEAN))
_TITLES = {"stripe": "Stripe", "paypal": "PayPal"}


def _receiver_url(call: Call, provider: str, slug: str) -> str:
    return f"{str(call.request.base_url).rstrip('/')}/hooks/{provider}/{slug}"


async def _show(call: Call, provider: str) -> dict:
    async with call.services.pool.acquire() as conn:
        found = await service.read_settings(conn, call.tenant_id, provider, call.services.settings.master_key)
        slug = await tenants.slug_of(conn, call.tenant_id)
    if found is None:
        raise ApiError(404, "not_configured", f"{provider} is not configured")
    settings, secrets, updated_at = found
    masked: dict[str, Any]
    if provider == "stripe":
        masked = {"webhookSecret": [crypto.mask_secret(s) for s in secrets.get("webhookSecrets", [])],
                  "apiKey": crypto.mask_secret(secrets["apiKey"]) if secrets.get("apiKey") else None}
    else:
        masked = {"webhookId": crypto.mask_secret(secrets.get("webhookId", ""))}
    return {"provider": provider, **masked, "mappings": settings["mappings"],
            "receiverUrl": _receiver_url(call, provider, slug), "updatedAt": updated_at}


async def _save(call: Call, provider: str) -> dict:
    body = call.body
    # Omitted: kept as stored. A Stripe apiKey of "" removes the stored one.
    changes: dict[str, Any] = {}
    if provider == "stripe":
        if body["webhookSecret"] is not None:
            changes["webhookSecrets"] = body["webhookSecret"]
        if body["apiKey"] is not None:
            changes["apiKey"] = body["apiKey"] or None
    elif body["webhookId"] is not None:
        changes["webhookId"] = body["webhookId"]
    async with call.services.pool.acquire() as conn:
        mappings = await service.resolve_mappings(conn, call.tenant_id, body["mappings"], _KEY_FIELDS[provider])
        await service.save_settings(conn, call.services.redis, call.tenant_id, provider,
                                    call.services.settings.master_key, {"mappings": mappings}, changes,
                                    call.services.clock.utcnow())
    return await _show(call, provider)


async def _delete(call: Call, provider: str) -> dict:
    async with call.services.pool.acquire() as conn:
        if not await service.delete_settings(conn, call.tenant_id, provider):
            raise ApiError(404, "not_configured", f"{provider} is not configured")
    return {"deleted": True}


def _settings_routes(provider: str, body: Object, shown: str, changed: str) -> list[ApiRoute]:
    """GET, PUT and DELETE /api/payments/<provider>: one provider's settings (admin)."""
    async def show(call: Call) -> dict:
        return await _show(call, provider)

    async def save(call: Call) -> dict:
        return await _save(call, provider)

    async def delete(call: Call) -> dict:
        return await _delete(call, provider)

    name, path = _TITLES[provider], f"/api/payments/{provider}"
    return [
        endpoint("GET", path, show, scope="admin", tag="payments", errors=("not_configured",),
                 responses={404: "not configured"}, returns=_SHOWN[provider],
                 summary=f"{name} settings: {shown} masked, mappings, this tenant's receiver URL."),
        endpoint("PUT", path, save, scope="admin", tag="payments", body=body, errors=_SETTINGS_ERRORS,
                 returns=_SHOWN[provider], summary=f"Set the {name} {changed} → license mappings."),
        endpoint("DELETE", path, delete, scope="admin", tag="payments", errors=("not_configured",),
                 responses={404: "not configured"}, returns=answer(deleted=BOOLEAN),
                 summary=f"Remove the {name} settings; the receiver then answers 404."),
    ]


def _hook_route(provider: str, handler: Handler) -> ApiRoute:
    """POST /hooks/<provider>/{slug}: the provider's webhook receiver, reading the raw body itself."""
    route = endpoint("POST", f"/hooks/{provider}/{{slug}}", handler, scope=None, tag="payments", errors=_HOOK_ERRORS,
                     responses={200: "received (also for duplicates and event types not acted on)",
                                400: "invalid signature or event", 404: f"no {_TITLES[provider]} receiver for this tenant"},
                     returns=_RECEIVED)
    route.spec.raw_body = True
    return route


async def stripe_hook(call: Call) -> dict:
    """Stripe webhook receiver: the Stripe-Signature is the credential (no access token)."""
    raw = await read_body(call.request, service.MAX_HOOK_BYTES)
    s = call.services
    return await service.receive_stripe(s.pool, s.redis, s.settings.master_key, call.path["slug"], raw, call.request.headers,
                                        s.clock.now())


async def paypal_hook(call: Call) -> dict:
    """PayPal webhook receiver: verified offline with PayPal's certificate (no access token)."""
    raw = await read_body(call.request, service.MAX_HOOK_BYTES)
    s = call.services
    return await service.receive_paypal(s.pool, s.redis, s.settings.master_key, call.path["slug"], raw, call.request.headers,
                                        s.clock.now(), allowed_hosts=s.settings.paypal_cert_hosts,
                                        ca_file=s.settings.paypal_ca_file)


async def list_events(call: Call) -> dict:
    """The provider events received for this tenant, newest first, with what came of each."""
    q = call.query
    async with call.services.pool.acquire() as conn:
        return await service.list_events(conn, call.tenant_id, page=q["page"], page_size=q["pageSize"],
                                         provider=q["provider"], outcome=q["outcome"])


async def reprocess_event(call: Call) -> dict:
    """Process again an event that delivered nothing, once its mapping or API key is fixed."""
    async with call.services.pool.acquire() as conn:
        return await service.reprocess_event(conn, call.tenant_id, call.int_path("event_id"),
                                             call.services.clock.utcnow())


_EVENTS_QUERY = Query({**PAGE_FIELDS, "provider": Str(choices=service.PROVIDERS),
                       "outcome": Str(max_len=40, description="an outcome's first word (fulfilled, unmapped, "
                                                              "no_line_items, ...), or pending")})
_EVENT_SHOWN = answer(id=INTEGER, provider=one_of(*service.PROVIDERS), eventId=STRING, eventType=STRING,
                      receivedAt=TIMESTAMP, processedAt=nullable(TIMESTAMP), outcome=nullable(STRING),
                      reprocessable=BOOLEAN)

_SETTINGS_ERRORS = ("not_configured", "product_not_found", "plan_not_found", "unknown_feature", "duplicate_mapping")
_HOOK_ERRORS = ("invalid_signature", "invalid_event", "not_configured", "body_too_large")

routes = [
    *_settings_routes("stripe", _STRIPE, "secrets", "webhook secret(s) and the price/product"),
    *_settings_routes("paypal", _PAYPAL, "webhook id", "webhook id and the item"),
    endpoint("GET", "/api/payments/events", list_events, scope="admin", tag="payments", query=_EVENTS_QUERY,
             returns=page(_EVENT_SHOWN)),
    endpoint("POST", "/api/payments/events/{event_id}/reprocess", reprocess_event, scope="admin", tag="payments",
             errors=("event_not_found", "not_reprocessable", "invalid_field"),
             responses={200: "queued again; the event", 404: "no such event", 409: "it delivered something, or "
                        "is still pending"}, returns=_EVENT_SHOWN),
    _hook_route("stripe", stripe_hook),
    _hook_route("paypal", paypal_hook),
]

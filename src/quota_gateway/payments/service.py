"""Payments → licenses: provider settings, verified receipt of webhooks, and fulfilment.

Receipt (the request path) verifies the signature over the raw body, records the event once per
provider event id (`INSERT ... ON CONFLICT DO NOTHING`) and enqueues one `payments.process` job
in the same transaction; it answers at once. The job does the work: licenses are created and
the delivery e-mail queued in one transaction with the purchase row, whose unique key
(tenant, provider, Checkout Session / PayPal capture) makes fulfilment exactly once however
many events, deliveries or workers carry the same payment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg
import orjson

from .. import catalogue, crypto, listing, tenants
from ..abuse import negative
from ..clock import iso_utc
from ..config import Settings
from ..errors import ApiError
from ..events import jobs, mailer
from ..jsonio import json_object
from ..licensing import service as licensing
from . import paypal, stripe

log = logging.getLogger("quota_gateway.payments")

PROVIDERS = ("stripe", "paypal")
JOB_KIND = "payments.process"
MAX_HOOK_BYTES = 1024 * 1024  # providers' payloads are far smaller; this only bounds abuse

STRIPE_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded",
                           "invoice.paid", "charge.refunded", "customer.subscription.deleted"})
PAYPAL_EVENTS = frozenset({"CHECKOUT.ORDER.APPROVED", "CHECKOUT.ORDER.COMPLETED", "PAYMENT.CAPTURE.COMPLETED",
                           "PAYMENT.CAPTURE.REFUNDED", "BILLING.SUBSCRIPTION.ACTIVATED", "PAYMENT.SALE.COMPLETED",
                           "BILLING.SUBSCRIPTION.CANCELLED", "BILLING.SUBSCRIPTION.EXPIRED"})


class NotYet(Exception):
    """An event that depends on one not processed yet (providers do not keep order): the job
    fails and the job queue's schedule retries it."""


# --- settings -------------------------------------------------------------------------------------

async def _load(conn: asyncpg.Connection, tenant_id: str, provider: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT settings, secrets_enc, updated_at FROM payment_settings "
                               "WHERE tenant_id = $1 AND provider = $2", tenant_id, provider)


def _secrets(master_key: str | None, tenant_id: str, provider: str, row: asyncpg.Record) -> dict:
    blob = row["secrets_enc"]
    if blob is None:
        return {}
    return orjson.loads(crypto.unseal(master_key or "", tenant_id, f"payments:{provider}", bytes(blob)))


async def resolve_mappings(conn: asyncpg.Connection, tenant_id: str, mappings: list[dict],
                           key_fields: tuple[str, ...]) -> list[dict]:
    """Check every mapping against this tenant's catalogue; store products by id and name."""
    seen: set[tuple[str, str]] = set()
    resolved = []
    for index, mapping in enumerate(mappings):
        path = f"mappings[{index}]"
        keys = [(name, mapping[name]) for name in key_fields if mapping.get(name)]
        if not keys:
            raise ApiError(400, "missing_field", f"{path}: needs one of {', '.join(key_fields)}", field=path)
        for key in keys:
            if key in seen:
                raise ApiError(400, "duplicate_mapping", f"{path}: {key[0]} {key[1]!r} is mapped twice", field=path)
            seen.add(key)
        if mapping.get("productId") is not None:
            product = await conn.fetchrow("SELECT id, name FROM products WHERE tenant_id = $1 AND id = $2",
                                          tenant_id, mapping["productId"])
        elif mapping.get("productName"):
            product = await conn.fetchrow("SELECT id, name FROM products WHERE tenant_id = $1 AND lower(name) = lower($2)",
                                          tenant_id, mapping["productName"])
        else:
            raise ApiError(400, "missing_field", f"{path}: productId or productName is required", field=path)
        if product is None:
            raise ApiError(400, "product_not_found", f"{path}: no such product", field=path)
        period_days = mapping.get("validityDays")
        if mapping.get("planId") is not None:
            plan = await conn.fetchrow("SELECT duration_days, is_active FROM plans WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, mapping["planId"])
            if plan is None or not plan["is_active"]:
                raise ApiError(400, "plan_not_found", f"{path}: no active plan {mapping['planId']}", field=path)
            period_days = period_days or plan["duration_days"]
        kind = mapping.get("licenseKind") or "standard"
        if kind == "standard" and mapping.get("seats") not in (None, 1):
            raise ApiError(400, "invalid_field", f"{path}.seats: a standard license has exactly one seat",
                           field=f"{path}.seats")
        if mapping.get("features") is not None:
            known = {f["name"] for f in await catalogue.product_features(conn, tenant_id, product["id"])}
            unknown = sorted(set(mapping["features"]) - known)
            if unknown:
                raise ApiError(400, "unknown_feature", f"{path}: not features of this product: {', '.join(unknown)}",
                               field=f"{path}.features")
        resolved.append({**{name: mapping.get(name) for name in key_fields},
                         "productId": product["id"], "productName": product["name"],
                         "planId": mapping.get("planId"), "validityDays": mapping.get("validityDays"),
                         "periodDays": period_days, "licenseKind": kind,
                         "seats": mapping.get("seats") if kind == "corporate" else None,
                         "features": mapping.get("features"),
                         "onRefund": mapping.get("onRefund") or "revoke",
                         "onCancel": mapping.get("onCancel") or "expire"})
    return resolved


# The secret each provider cannot work without, and the request field that carries it.
_REQUIRED_SECRET = {"stripe": ("webhookSecrets", "webhookSecret"), "paypal": ("webhookId", "webhookId")}


async def save_settings(conn: asyncpg.Connection, redis: Any, tenant_id: str, provider: str, master_key: str | None,
                        settings: dict, secret_changes: dict, now: datetime) -> None:
    """Replace a provider's settings. `secret_changes` edits the stored secrets: a name absent keeps
    its value (a PUT that omits it), None removes it. The receiver's "not configured" entry is
    dropped first, so it answers the new settings at once."""
    await negative.forget(redis, negative.payment_receiver(tenant_id, provider))
    async with conn.transaction():
        existing = await conn.fetchrow("SELECT secrets_enc FROM payment_settings WHERE tenant_id = $1 AND provider = $2 "
                                       "FOR UPDATE", tenant_id, provider)
        secrets = _secrets(master_key, tenant_id, provider, existing) if existing is not None else {}
        for name, value in secret_changes.items():
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = value
        required, field = _REQUIRED_SECRET[provider]
        if not secrets.get(required):
            raise ApiError(400, "missing_field", "the provider's secret is required the first time", field=field)
        blob = crypto.seal(master_key or "", tenant_id, f"payments:{provider}", orjson.dumps(secrets))
        await conn.execute(
            """INSERT INTO payment_settings (tenant_id, provider, settings, secrets_enc, updated_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (tenant_id, provider) DO UPDATE
               SET settings = EXCLUDED.settings, secrets_enc = EXCLUDED.secrets_enc, updated_at = EXCLUDED.updated_at""",
            tenant_id, provider, settings, blob, now)


async def read_settings(conn: asyncpg.Connection, tenant_id: str, provider: str,
                        master_key: str | None) -> tuple[dict, dict, datetime] | None:
    """(settings, secrets, updatedAt) or None when the provider is not configured."""
    row = await _load(conn, tenant_id, provider)
    if row is None:
        return None
    return row["settings"], _secrets(master_key, tenant_id, provider, row), row["updated_at"]


async def delete_settings(conn: asyncpg.Connection, tenant_id: str, provider: str) -> bool:
    deleted = await conn.fetchval("DELETE FROM payment_settings WHERE tenant_id = $1 AND provider = $2 RETURNING 1",
                                  tenant_id, provider)
    return deleted is not None


# --- receipt ----------------------------------------------------------------------------------------

async def _receiving_tenant(pool: asyncpg.Pool, redis: Any, slug: str, provider: str, master_key: str | None,
                            ) -> tuple[str, dict, dict]:
    tenant = await tenants.find(pool, redis, slug)  # an unknown slug is negative-cached
    # An unknown tenant and an unconfigured provider answer alike: the URL reveals nothing.
    row = None
    if tenant is not None and tenant["slug"] == slug:
        unconfigured = negative.payment_receiver(tenant["id"], provider)  # negative-cached too
        if not await negative.is_missing(redis, unconfigured):
            async with pool.acquire() as conn:
                row = await _load(conn, tenant["id"], provider)
            if row is None:
                await negative.remember_missing(redis, unconfigured)
    if tenant is None or row is None:
        raise ApiError(404, "not_configured", f"no {provider} receiver at this address")
    return tenant["id"], row["settings"], _secrets(master_key, tenant["id"], provider, row)


def _without_nul(value: Any) -> Any:
    """`value` with every NUL in its strings (member names too) made U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _parse_event(raw: bytes, type_field: str, lacking: str) -> tuple[dict, str, str]:
    """The event, its id and its type (read from `type_field`); 400 `invalid_event` (message
    `lacking`) without them."""
    event = json_object(raw, "invalid_event", "the body")
    if b"\\u0000" in raw:  # JSON carries NUL only escaped; jsonb and text refuse it, the event must still be kept
        event = _without_nul(event)
    event_id, event_type = event.get("id"), event.get(type_field)
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
        raise ApiError(400, "invalid_event", lacking)
    return event, event_id, event_type


async def _record(conn: asyncpg.Connection, tenant_id: str, provider: str, event_id: str, event_type: str,
                  event: dict, now: datetime) -> bool:
    """Store the event and enqueue its processing, once per event id; False for a duplicate."""
    async with conn.transaction():
        row_id = await conn.fetchval(
            """INSERT INTO payment_events (tenant_id, provider, event_id, event_type, payload, received_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, provider, event_id) DO NOTHING RETURNING id""",
            tenant_id, provider, event_id, event_type, event, now)
        if row_id is None:
            return False
        await jobs.enqueue(conn, tenant_id, JOB_KIND, {"paymentEventId": row_id},
                           dedupe_key=f"payments:{provider}:{event_id}")
    return True


async def receive_stripe(pool: asyncpg.Pool, redis: Any, master_key: str | None, slug: str, raw: bytes,
                         headers: Mapping[str, str], now: float) -> dict:
    tenant_id, _, secrets = await _receiving_tenant(pool, redis, slug, "stripe", master_key)
    try:
        stripe.verify(raw, headers.get("stripe-signature"), secrets.get("webhookSecrets", []), now)
    except stripe.SignatureError as exc:
        raise ApiError(400, "invalid_signature", str(exc)) from None
    event, event_id, event_type = _parse_event(raw, "type", "a Stripe event needs an id and a type")
    if event_type not in STRIPE_EVENTS:
        return {"received": True, "handled": False}
    async with pool.acquire() as conn:
        recorded = await _record(conn, tenant_id, "stripe", event_id, event_type, event, _utc(now))
    return {"received": True, "handled": True, "duplicate": not recorded}


async def receive_paypal(pool: asyncpg.Pool, redis: Any, master_key: str | None, slug: str, raw: bytes,
                         headers: Mapping[str, str], now: float, *, allowed_hosts: str, ca_file: str | None) -> dict:
    tenant_id, _, secrets = await _receiving_tenant(pool, redis, slug, "paypal", master_key)
    try:
        await paypal.verify(raw, headers, secrets.get("webhookId", ""), now=_utc(now), allowed_hosts=allowed_hosts,
                            ca_file=ca_file)
    except paypal.SignatureError as exc:
        raise ApiError(400, "invalid_signature", str(exc)) from None
    event, event_id, event_type = _parse_event(raw, "event_type", "a PayPal event needs an id and an event_type")
    if event_type not in PAYPAL_EVENTS:
        return {"received": True, "handled": False}
    async with pool.acquire() as conn:
        recorded = await _record(conn, tenant_id, "paypal", event_id, event_type, event, _utc(now))
    return {"received": True, "handled": True, "duplicate": not recorded}


# --- the events as the tenant sees them --------------------------------------------------------------

# Outcomes after which nothing was delivered and a change of settings (a mapping, the Stripe API
# key) can make a second run deliver: those events may be processed again on request.
REPROCESSABLE = ("unmapped", "no_line_items", "line_items_refused")


def _event_json(row: Any) -> dict:
    outcome = row["outcome"]
    return {"id": row["id"], "provider": row["provider"], "eventId": row["event_id"], "eventType": row["event_type"],
            "receivedAt": row["received_at"], "processedAt": row["processed_at"], "outcome": outcome,
            "reprocessable": _reprocessable(outcome)}


def _reprocessable(outcome: str | None) -> bool:
    return outcome is not None and outcome.split(":", 1)[0] in REPROCESSABLE


async def list_events(conn: asyncpg.Connection, tenant_id: str, *, page: int, page_size: int, provider: str | None,
                      outcome: str | None) -> dict:
    """The provider events received for this tenant, newest first, each with what came of it."""
    where = listing.Where("tenant_id", tenant_id)
    where.equals("provider", provider)
    if outcome == "pending":
        where.add("processed_at IS NULL")
    elif outcome is not None:
        where.add(f"split_part(outcome, ':', 1) = {where.param(outcome)}")
    return await listing.fetch_page(
        conn, count_from="SELECT count(*) FROM payment_events",
        select_from="SELECT id, provider, event_id, event_type, received_at, processed_at, outcome FROM payment_events",
        where=where, order_by="id DESC", page=page, page_size=page_size, item=_event_json)


async def reprocess_event(conn: asyncpg.Connection, tenant_id: str, row_id: int, now: datetime) -> dict:
    """Run an event that delivered nothing (REPROCESSABLE) again, after its settings were fixed;
    the purchase's unique key still makes fulfilment happen at most once."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT id, provider, event_id, event_type, received_at, processed_at, outcome "
                                  "FROM payment_events WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant_id, row_id)
        if row is None:
            raise ApiError(404, "event_not_found", f"no payment event {row_id}")
        if not _reprocessable(row["outcome"]):
            raise ApiError(409, "not_reprocessable", "only an event that delivered nothing (outcome "
                           f"{', '.join(REPROCESSABLE)}) can be processed again", outcome=row["outcome"])
        row = await conn.fetchrow("UPDATE payment_events SET processed_at = NULL, outcome = NULL WHERE id = $1 "
                                  "RETURNING id, provider, event_id, event_type, received_at, processed_at, outcome",
                                  row_id)
        await jobs.enqueue(conn, tenant_id, JOB_KIND, {"paymentEventId": row_id},
                           dedupe_key=f"payments:{row['provider']}:{row['event_id']}:again:{now.timestamp():.6f}")
    return _event_json(row)


def _utc(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


# --- processing (a job) -------------------------------------------------------------------------------

async def process_event(pool: asyncpg.Pool, settings: Settings, redis: Any, event_row_id: int, now: datetime) -> str:
    """Act on one recorded event; returns the outcome stored with it. Raising rolls everything back
    (licenses, mail, purchase row) and leaves the retry to the job queue."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT tenant_id, provider, event_id, event_type, payload, processed_at "
                                  "FROM payment_events WHERE id = $1 FOR UPDATE", event_row_id)
        if row is None or row["processed_at"] is not None:
            return "already_processed"
        tenant_id = str(row["tenant_id"])
        provider_settings = await read_settings(conn, tenant_id, row["provider"], settings.master_key)
        mappings = provider_settings[0]["mappings"] if provider_settings is not None else []
        secrets = provider_settings[1] if provider_settings is not None else {}
        handler = _STRIPE_HANDLERS if row["provider"] == "stripe" else _PAYPAL_HANDLERS
        ctx = _Context(conn, settings, redis, tenant_id, row["provider"], row["event_id"], mappings, secrets, now)
        outcome = await handler[row["event_type"]](ctx, row["payload"])
        await conn.execute("UPDATE payment_events SET processed_at = $2, outcome = $3 WHERE id = $1",
                           event_row_id, now, outcome)
    log.info("payment event %s %s: %s", row["provider"], row["event_id"], outcome)
    return outcome


class _Context:
    def __init__(self, conn: asyncpg.Connection, settings: Settings, redis: Any, tenant_id: str, provider: str, event_id: str,
                 mappings: list[dict], secrets: dict, now: datetime) -> None:
        self.conn = conn
        self.settings = settings
        self.redis = redis
        self.tenant_id = tenant_id
        self.provider = provider
        self.event_id = event_id
        self.mappings = mappings
        self.secrets = secrets
        self.now = now


def _data_object(event: dict) -> dict:
    obj = (event.get("data") or {}).get("object")
    return obj if isinstance(obj, dict) else {}


async def _fulfil(ctx: _Context, purchase_ref: str, *, email: str, matches: list[tuple[dict, int]],
                  payment_ref: str | None = None, subscription_ref: str | None = None,
                  amount: str | None = None) -> str:
    if not matches:
        return "unmapped"  # no purchase row: a later event for this payment may still fulfil it
    purchase_id = await ctx.conn.fetchval(
        """INSERT INTO payment_purchases (tenant_id, provider, purchase_ref, payment_ref, subscription_ref, email,
                                          event_id, amount, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (tenant_id, provider, purchase_ref) DO NOTHING RETURNING id""",
        ctx.tenant_id, ctx.provider, purchase_ref, payment_ref, subscription_ref, email, ctx.event_id, amount, ctx.now)
    if purchase_id is None:
        return "already_fulfilled"
    delivered = []
    for mapping, quantity in matches:
        corporate = mapping["licenseKind"] == "corporate"
        # Corporate: one key whose seats scale with the quantity; standard: one key per unit.
        seats = mapping["seats"] * quantity if corporate and mapping["seats"] else None
        for _ in range(1 if corporate else quantity):
            key, made = await licensing.create_license(
                ctx.conn, ctx.settings, ctx.redis, ctx.tenant_id, ctx.now, product_id=mapping["productId"], email=email,
                kind=mapping["licenseKind"], max_seats=seats, plan_id=mapping["planId"],
                validity_days=mapping["validityDays"], features=mapping["features"])
            await ctx.conn.execute("INSERT INTO payment_licenses (purchase_id, license_id, period_days, on_refund, "
                                   "on_cancel) VALUES ($1, $2, $3, $4, $5)", purchase_id, made["id"],
                                   mapping["periodDays"], mapping["onRefund"], mapping["onCancel"])
            delivered.append({"activationKey": key, "productName": made["productName"],
                              "licenseType": made["licenseType"], "maxSeats": made["maxSeats"],
                              "features": made["features"], "expirationDate": iso_utc(made["expirationDate"])})
    if email:
        # One message per key: the delivery template presents one key, and a buyer of several
        # forwards each to the person who will use it.
        for number, lic in enumerate(delivered):
            await mailer.queue_mail(ctx.conn, ctx.settings, ctx.tenant_id, "license_delivery", email,
                                    {"LicenseKey": lic["activationKey"], "ProductName": lic["productName"],
                                     "ExpirationDate": lic["expirationDate"] or "", "CustomerEmail": email,
                                     "Quantity": len(delivered)},
                                    dedupe_key=f"payments:{ctx.provider}:{purchase_ref}:{number}")
    return f"fulfilled:{len(delivered)}"


async def _purchase_licenses(ctx: _Context, purchase_id: int) -> list[asyncpg.Record]:
    return await ctx.conn.fetch("SELECT license_id, period_days, on_refund, on_cancel FROM payment_licenses "
                                "WHERE purchase_id = $1 ORDER BY license_id", purchase_id)


async def _end_licenses(ctx: _Context, purchase_id: int, rule: str) -> int:
    """Apply a purchase's refund or cancellation rule to its licenses; returns how many changed."""
    count = 0
    for lic in await _purchase_licenses(ctx, purchase_id):
        action = lic[rule]
        if action == "revoke":
            await licensing.revoke_by_id(ctx.conn, ctx.tenant_id, lic["license_id"], ctx.now)
        elif rule == "on_refund":
            await licensing.expire_by_id(ctx.conn, ctx.tenant_id, lic["license_id"], ctx.now)
        # on_cancel "expire": the paid period runs out; renewals stop because the purchase is cancelled
        count += 1
    return count


# --- Stripe -------------------------------------------------------------------------------------------

def _stripe_matches(mappings: list[dict], items: list[tuple[str | None, str | None, int]]) -> list[tuple[dict, int]]:
    matches = []
    for price_id, product_id, quantity in items:
        mapping = next((m for m in mappings if price_id and m.get("priceId") == price_id), None) or \
            next((m for m in mappings if product_id and m.get("stripeProductId") == product_id), None)
        if mapping is not None:
            matches.append((mapping, quantity))
    return matches


async def _stripe_checkout(ctx: _Context, event: dict) -> str:
    session = _data_object(event)
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return "not_paid"  # delayed methods: checkout.session.async_payment_succeeded follows
    session_id = stripe.object_id(session)
    if not session_id:
        return "invalid"
    items = stripe.session_items(session)
    if items is None:
        items_or_outcome = await _stripe_line_items(ctx, session_id)
        if isinstance(items_or_outcome, str):
            return items_or_outcome
        items = items_or_outcome
    return await _fulfil(ctx, session_id, email=stripe.session_email(session),
                         matches=_stripe_matches(ctx.mappings, items),
                         payment_ref=stripe.payment_intent(session), subscription_ref=stripe.subscription(session))


async def _stripe_line_items(ctx: _Context, session_id: str) -> list[stripe.Item] | str:
    """A session's line items from Stripe's API (webhook payloads leave them out), or the outcome
    recorded when they cannot be had: `no_line_items` (no API key configured to ask with),
    `line_items_refused` (the key is wrong or lacks the right, or Stripe knows no such session:
    a retry will not help). A passing failure (timeout, 429, 5xx) raises NotYet: retried."""
    api_key = ctx.secrets.get("apiKey")
    if not api_key:
        return "no_line_items"
    try:
        return await stripe.fetch_line_items(session_id, api_key, api_base=ctx.settings.stripe_api_base)
    except stripe.ApiError as exc:
        if exc.lasting:
            log.warning("Stripe line items of %s for tenant %s: %s", session_id, ctx.tenant_id, exc)
            return f"line_items_refused:{exc.status}" if exc.status else "line_items_refused"
        raise NotYet(str(exc)) from None


async def _stripe_invoice_paid(ctx: _Context, event: dict) -> str:
    invoice = _data_object(event)
    subscription = stripe.subscription(invoice)
    if not subscription:
        return "not_subscription"
    if invoice.get("billing_reason") == "subscription_create":
        return "first_period"  # the Checkout Session's licenses already cover the first period
    purchase = await ctx.conn.fetchrow("SELECT id, cancelled_at, refunded_at FROM payment_purchases WHERE tenant_id = $1 "
                                       "AND provider = 'stripe' AND subscription_ref = $2 ORDER BY id LIMIT 1",
                                       ctx.tenant_id, subscription)
    if purchase is None:
        raise NotYet(f"no purchase for subscription {subscription} yet")
    if purchase["cancelled_at"] is not None or purchase["refunded_at"] is not None:
        return "ended"
    invoice_id = stripe.object_id(invoice) or ctx.event_id
    applied = await ctx.conn.fetchval(
        "INSERT INTO payment_renewals (tenant_id, provider, invoice_ref, purchase_id, created_at) "
        "VALUES ($1, 'stripe', $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
        ctx.tenant_id, invoice_id, purchase["id"], ctx.now)
    if applied is None:
        return "already_renewed"
    renewed = 0
    for lic in await _purchase_licenses(ctx, purchase["id"]):
        if lic["period_days"] and await licensing.extend_by_id(ctx.conn, ctx.tenant_id, lic["license_id"], ctx.now,
                                                               lic["period_days"]):
            renewed += 1
    return f"renewed:{renewed}"


async def _stripe_refunded(ctx: _Context, event: dict) -> str:
    charge = _data_object(event)
    if charge.get("refunded") is not True:
        return "partial_refund"  # only a full refund takes the licenses back
    return await _end_stripe_purchases(ctx, "on_refund", stripe.payment_intent(charge))


async def _stripe_subscription_deleted(ctx: _Context, event: dict) -> str:
    return await _end_stripe_purchases(ctx, "on_cancel", stripe.object_id(_data_object(event)))


# rule -> (the Checkout Session field naming the reference, the purchase column holding it, the
# column set when the purchase ends, the outcome's word, the outcome when no purchase has it)
_ENDINGS = {
    "on_refund": ("payment_intent", "payment_ref", "refunded_at", "refunded", "unknown_payment"),
    "on_cancel": ("subscription", "subscription_ref", "cancelled_at", "cancelled", "unknown_subscription"),
}


async def _end_stripe_purchases(ctx: _Context, rule: str, ref: str | None) -> str:
    """End the live purchases a refunded PaymentIntent or a deleted subscription paid for and apply
    `rule` to their licenses; NotYet while the checkout naming `ref` is received but not processed."""
    session_field = _ENDINGS[rule][0]
    # Asked before looking for the purchase: a fulfilment committing in between is then seen.
    pending = bool(ref) and await _purchase_pending(ctx, session_field, ref or "")
    return await _end_purchases(ctx, rule, ref, pending)


async def _end_purchases(ctx: _Context, rule: str, ref: str | None, pending: bool) -> str:
    """End this provider's live purchases that `ref` (a payment or a subscription, per `rule`)
    names and apply `rule` to their licenses; NotYet when none is found but the purchase is
    `pending` (received, not processed yet)."""
    _, ref_column, ended_column, done, unknown = _ENDINGS[rule]
    purchases = await ctx.conn.fetch(f"SELECT id FROM payment_purchases WHERE tenant_id = $1 AND provider = $3 "
                                     f"AND {ref_column} = $2 AND {ended_column} IS NULL", ctx.tenant_id, ref,
                                     ctx.provider) if ref else []
    ended = 0
    for purchase in purchases:
        await ctx.conn.execute(f"UPDATE payment_purchases SET {ended_column} = $2 WHERE id = $1", purchase["id"],
                               ctx.now)
        ended += await _end_licenses(ctx, purchase["id"], rule)
    if not purchases and pending:
        raise NotYet(f"the purchase of {ref} is not fulfilled yet")
    return f"{done}:{ended}" if purchases else unknown


async def _purchase_pending(ctx: _Context, field: str, value: str) -> bool:
    """Whether a Checkout Session naming `value` (its payment_intent or subscription) was received
    but not processed yet: a refund or cancellation must wait for it, not be dropped."""
    return bool(await ctx.conn.fetchval(
        "SELECT 1 FROM payment_events WHERE tenant_id = $1 AND provider = 'stripe' AND processed_at IS NULL "
        "AND event_type LIKE 'checkout.session.%' AND payload->'data'->'object'->>$2 = $3 LIMIT 1",
        ctx.tenant_id, field, value))


_STRIPE_HANDLERS = {"checkout.session.completed": _stripe_checkout,
                    "checkout.session.async_payment_succeeded": _stripe_checkout,
                    "invoice.paid": _stripe_invoice_paid,
                    "charge.refunded": _stripe_refunded,
                    "customer.subscription.deleted": _stripe_subscription_deleted}


# --- PayPal -------------------------------------------------------------------------------------------

def _paypal_matches(mappings: list[dict], order: dict, unit: dict) -> list[tuple[dict, int]]:
    matches = []
    for keys, quantity in paypal.order_items(order, unit):
        mapping = next((m for key in keys for m in mappings if m.get("itemId") == key), None)
        if mapping is not None:
            matches.append((mapping, quantity))
    return matches


async def _remember_order(ctx: _Context, order: dict) -> None:
    await ctx.conn.execute(
        "INSERT INTO payment_orders (tenant_id, provider, order_ref, payload) VALUES ($1, 'paypal', $2, $3) "
        "ON CONFLICT (tenant_id, provider, order_ref) DO UPDATE SET payload = EXCLUDED.payload",
        ctx.tenant_id, str(order["id"]), order)


async def _paypal_order(ctx: _Context, event: dict) -> str:
    order = event.get("resource") or {}
    if not isinstance(order, dict) or not order.get("id"):
        return "invalid"
    await _remember_order(ctx, order)
    outcomes = []
    for unit in order.get("purchase_units") or []:
        for capture in paypal.unit_captures(unit):
            if capture.get("status") == "COMPLETED":
                outcomes.append(await _paypal_fulfil_capture(ctx, order, unit, capture))
    return ",".join(outcomes) if outcomes else "order_recorded"


async def _paypal_fulfil_capture(ctx: _Context, order: dict, unit: dict, capture: dict) -> str:
    amount = (capture.get("amount") or {}).get("value")
    return await _fulfil(ctx, str(capture["id"]), email=paypal.order_email(order),
                         matches=_paypal_matches(ctx.mappings, order, unit), payment_ref=str(capture["id"]),
                         amount=str(amount) if amount is not None else None)


async def _paypal_capture_completed(ctx: _Context, event: dict) -> str:
    capture = event.get("resource") or {}
    if not isinstance(capture, dict) or not capture.get("id") or capture.get("status") != "COMPLETED":
        return "not_completed"
    order_id = paypal.capture_order_id(capture)
    payload = await ctx.conn.fetchval("SELECT payload FROM payment_orders WHERE tenant_id = $1 AND provider = 'paypal' "
                                      "AND order_ref = $2", ctx.tenant_id, order_id) if order_id else None
    if payload is None:
        already = await ctx.conn.fetchval("SELECT 1 FROM payment_purchases WHERE tenant_id = $1 AND provider = 'paypal' "
                                          "AND purchase_ref = $2", ctx.tenant_id, str(capture["id"]))
        if already:
            return "already_fulfilled"
        raise NotYet(f"PayPal order {order_id} not seen yet (the capture names only its order)")
    units = [u for u in payload.get("purchase_units") or [] if isinstance(u, dict)]
    unit = next((u for u in units if any(c["id"] == capture["id"] for c in paypal.unit_captures(u))), None) or \
        next((u for u in units if capture.get("custom_id") and u.get("custom_id") == capture.get("custom_id")), None) or \
        (units[0] if len(units) == 1 else None)
    if unit is None:
        return "unmapped"
    return await _paypal_fulfil_capture(ctx, payload, unit, capture)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


async def _paypal_refunded(ctx: _Context, event: dict) -> str:
    refund = event.get("resource") or {}
    capture_id = paypal.refund_capture_id(refund) if isinstance(refund, dict) else None
    if capture_id is None:
        return "unknown_payment"
    purchase = await ctx.conn.fetchrow("SELECT id, amount FROM payment_purchases WHERE tenant_id = $1 "
                                       "AND provider = 'paypal' AND purchase_ref = $2 AND refunded_at IS NULL",
                                       ctx.tenant_id, capture_id)
    if purchase is None:
        return "unknown_payment"
    breakdown = refund.get("seller_payable_breakdown") or {}
    refunded = _decimal((breakdown.get("total_refunded_amount") or refund.get("amount") or {}).get("value"))
    paid = _decimal(purchase["amount"])
    if refunded is not None and paid is not None and refunded < paid:
        return "partial_refund"  # only a full refund takes the licenses back
    await ctx.conn.execute("UPDATE payment_purchases SET refunded_at = $2 WHERE id = $1", purchase["id"], ctx.now)
    return f"refunded:{await _end_licenses(ctx, purchase['id'], 'on_refund')}"


# --- PayPal subscriptions -----------------------------------------------------------------------------
# BILLING.SUBSCRIPTION.ACTIVATED fulfils (mapped by the plan id), each PAYMENT.SALE.COMPLETED of the
# subscription (its billing_agreement_id) pays one more period, CANCELLED / EXPIRED apply onCancel.

async def _paypal_subscription_activated(ctx: _Context, event: dict) -> str:
    subscription = event.get("resource") or {}
    if not isinstance(subscription, dict) or not subscription.get("id"):
        return "invalid"
    matches = []
    for keys, quantity in paypal.subscription_items(subscription):
        mapping = next((m for key in keys for m in ctx.mappings if m.get("itemId") == key), None)
        if mapping is not None:
            matches.append((mapping, quantity))
    last_payment = ((subscription.get("billing_info") or {}).get("last_payment") or {}).get("amount") or {}
    amount = last_payment.get("value") if isinstance(last_payment, dict) else None
    ref = str(subscription["id"])
    return await _fulfil(ctx, ref, email=paypal.subscription_email(subscription), matches=matches,
                         subscription_ref=ref, amount=str(amount) if amount is not None else None)


async def _paypal_sale_completed(ctx: _Context, event: dict) -> str:
    sale = event.get("resource") or {}
    if not isinstance(sale, dict) or not sale.get("id"):
        return "invalid"
    subscription = sale.get("billing_agreement_id")
    if not subscription:
        return "not_subscription"  # a one-time sale of the older APIs: not a renewal
    if sale.get("state") not in (None, "completed"):
        return "not_completed"
    purchase = await ctx.conn.fetchrow("SELECT id, cancelled_at, refunded_at FROM payment_purchases WHERE tenant_id = $1 "
                                       "AND provider = 'paypal' AND subscription_ref = $2 ORDER BY id LIMIT 1",
                                       ctx.tenant_id, str(subscription))
    if purchase is None:  # PayPal does not keep order: the activation may still come
        raise NotYet(f"no purchase for subscription {subscription} yet")
    if purchase["cancelled_at"] is not None or purchase["refunded_at"] is not None:
        return "ended"
    applied = await ctx.conn.fetchval(
        "INSERT INTO payment_renewals (tenant_id, provider, invoice_ref, purchase_id, created_at) "
        "VALUES ($1, 'paypal', $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
        ctx.tenant_id, str(sale["id"]), purchase["id"], ctx.now)
    if applied is None:
        return "already_renewed"
    # The sale pays the period that starts with it: the license runs at least to sale time +
    # period. The first sale (at activation) is the period the activation already granted.
    paid_at = paypal.parse_time(sale.get("create_time")) or ctx.now
    renewed = 0
    for lic in await _purchase_licenses(ctx, purchase["id"]):
        if lic["period_days"]:
            before = await ctx.conn.fetchval("SELECT expires_at FROM licenses WHERE id = $1", lic["license_id"])
            after = await licensing.cover_until(ctx.conn, ctx.tenant_id, lic["license_id"],
                                                paid_at + timedelta(days=lic["period_days"]))
            renewed += after is not None and after != before
    return f"renewed:{renewed}"


async def _paypal_activation_pending(ctx: _Context, subscription: str) -> bool:
    return bool(await ctx.conn.fetchval(
        "SELECT 1 FROM payment_events WHERE tenant_id = $1 AND provider = 'paypal' AND processed_at IS NULL "
        "AND event_type = 'BILLING.SUBSCRIPTION.ACTIVATED' AND payload->'resource'->>'id' = $2 LIMIT 1",
        ctx.tenant_id, subscription))


async def _paypal_subscription_ended(ctx: _Context, event: dict) -> str:
    subscription = event.get("resource") or {}
    ref = str(subscription["id"]) if isinstance(subscription, dict) and subscription.get("id") else None
    # Asked before looking for the purchase: an activation committing in between is then seen.
    pending = bool(ref) and await _paypal_activation_pending(ctx, ref or "")
    return await _end_purchases(ctx, "on_cancel", ref, pending)


_PAYPAL_HANDLERS = {"CHECKOUT.ORDER.APPROVED": _paypal_order,
                    "CHECKOUT.ORDER.COMPLETED": _paypal_order,
                    "PAYMENT.CAPTURE.COMPLETED": _paypal_capture_completed,
                    "PAYMENT.CAPTURE.REFUNDED": _paypal_refunded,
                    "BILLING.SUBSCRIPTION.ACTIVATED": _paypal_subscription_activated,
                    "PAYMENT.SALE.COMPLETED": _paypal_sale_completed,
                    "BILLING.SUBSCRIPTION.CANCELLED": _paypal_subscription_ended,
                    "BILLING.SUBSCRIPTION.EXPIRED": _paypal_subscription_ended}

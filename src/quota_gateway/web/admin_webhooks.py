"""Admin pages for outbound webhooks under /admin/{tenant}/webhooks: endpoints (create, edit,
enable / disable, delete, rotate the signing secret, send a ping), the delivery log (of one
endpoint or of all, filtered by status), one delivery's request and responses, and redeliver.

Every read and write is a call to the events domain (events.webhooks), always with the
session's tenant, so another tenant's endpoint or delivery answers 404. A signing secret appears
once, in the page answering the POST that made it.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from ..events import types, webhooks
from .pages import PageContext, action, form_int, form_text, int_param, page, show_secret, whole_number

LOG_PAGE = 50
# How long a rotated-away secret keeps signing, offered on the endpoint page (seconds, label).
OVERLAPS = ((0, "stop at once"), (3600, "1 hour"), (86400, "24 hours"), (7 * 86400, "7 days"))
_SECRET_STORED = "kept encrypted, only to sign deliveries"


def _state_filter(ctx: PageContext) -> str | None:
    state = ctx.request.query_params.get("status", "")
    return state if state in webhooks.DELIVERY_STATES else None


def _before(ctx: PageContext) -> int | None:
    return whole_number(ctx.request.query_params.get("before", "")) or None


def _endpoint_form(ctx: PageContext) -> dict[str, Any]:
    """URL, subscribed events and description from the create / edit form."""
    assert ctx.form is not None
    url = form_text(ctx, "url", max_len=2000, label="URL", required=True)
    description = form_text(ctx, "description", max_len=500)
    events = [e for e in ctx.form.getlist("events") if isinstance(e, str)][:100]
    return {"url": url, "events": ["*"] if "*" in events else events, "description": description}


def _log_view(ctx: PageContext, found: dict[str, Any], state: str | None) -> dict[str, Any]:
    """What the delivery-log macro needs: the rows, the filter, and the next page's address."""
    more = None
    if found["nextBefore"] is not None:
        more = f"?status={state or ''}&before={found['nextBefore']}"
    return {"deliveries": found["deliveries"], "status": state or "", "states": webhooks.DELIVERY_STATES,
            "more": more, "paged": _before(ctx) is not None}


# --- endpoints -------------------------------------------------------------------------------------

@page("admin")
async def endpoints(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        listed = await webhooks.endpoints_overview(conn, ctx.tenant_id)
    return ctx.render("admin/webhooks.html", nav="webhooks", endpoints=listed, event_types=types.ALL,
                      disable_after=webhooks.DISABLE_AFTER)


@action("admin", back="/webhooks")
async def create_endpoint(ctx: PageContext) -> Response:
    fields = _endpoint_form(ctx)
    async with ctx.pool.acquire() as conn:
        made = await webhooks.create_endpoint(conn, ctx.services.settings, ctx.tenant_id, ctx.now, enabled=True,
                                              **fields)
    return show_secret(ctx, "webhooks", "Webhook endpoint created", "Signing secret", made["secret"],
                       f"{ctx.base}/webhooks/{made['id']}", f"Deliveries to {made['url']} are signed with this secret.",
                       stored=_SECRET_STORED)


@page("admin")
async def endpoint(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    state = _state_filter(ctx)
    async with ctx.pool.acquire() as conn:
        shown = await webhooks.show_endpoint(conn, ctx.tenant_id, endpoint_id, ctx.now)
        found = await webhooks.delivery_log(conn, ctx.tenant_id, endpoint_id=endpoint_id, limit=LOG_PAGE,
                                            before=_before(ctx), state=state)
    return ctx.render("admin/webhook.html", nav="webhooks", endpoint=shown, event_types=types.ALL,
                      overlaps=OVERLAPS, log=_log_view(ctx, found, state))


@action("admin", back="/webhooks/{endpoint_id}")
async def update_endpoint(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    fields = _endpoint_form(ctx)
    async with ctx.pool.acquire() as conn:
        await webhooks.update_endpoint(conn, ctx.services.settings, ctx.tenant_id, endpoint_id, ctx.now, fields)
    return ctx.redirect(f"{ctx.base}/webhooks/{endpoint_id}", "Endpoint saved.")


@action("admin", back="/webhooks/{endpoint_id}")
async def set_enabled(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    enabled = ctx.value("enabled") == "1"
    async with ctx.pool.acquire() as conn:
        await webhooks.update_endpoint(conn, ctx.services.settings, ctx.tenant_id, endpoint_id, ctx.now,
                                       {"enabled": enabled})
    message = ("Endpoint enabled: new events are delivered to it again." if enabled
               else "Endpoint disabled: no new deliveries until it is enabled.")
    return ctx.redirect(f"{ctx.base}/webhooks/{endpoint_id}", message)


@action("admin", back="/webhooks/{endpoint_id}")
async def delete_endpoint(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    async with ctx.pool.acquire() as conn:
        await webhooks.delete_endpoint(conn, ctx.tenant_id, endpoint_id)
    return ctx.redirect(f"{ctx.base}/webhooks", "Endpoint deleted, with its delivery log.")


@action("admin", back="/webhooks/{endpoint_id}")
async def rotate_secret(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    overlap = form_int(ctx, "overlap_seconds", maximum=7 * 86400, label="old secret keeps signing")
    overlap = 86400 if overlap is None else overlap
    async with ctx.pool.acquire() as conn:
        rotated = await webhooks.rotate_secret(conn, ctx.services.settings, ctx.tenant_id, endpoint_id, ctx.now,
                                               overlap)
    label = dict(OVERLAPS).get(overlap, f"{overlap} seconds")
    note = ("The previous secret no longer signs." if overlap == 0 else
            f"The previous secret keeps signing too for {label} (both signatures are sent), so receivers can switch.")
    return show_secret(ctx, "webhooks", "New signing secret", "Signing secret", rotated["secret"],
                       f"{ctx.base}/webhooks/{endpoint_id}", note, stored=_SECRET_STORED)


@action("admin", back="/webhooks/{endpoint_id}")
async def ping(ctx: PageContext) -> Response:
    endpoint_id = int_param(ctx, "endpoint_id")
    result = await webhooks.ping(ctx.services, ctx.tenant_id, endpoint_id)
    target = f"{ctx.base}/webhooks/deliveries/{result['deliveryId']}"
    if result["delivered"]:
        return ctx.redirect(target, f"Ping delivered: HTTP {result['statusCode']} in {result['latencyMs']} ms.")
    return ctx.redirect(target, f"Ping failed: {result['error']}", error=True)


# --- the delivery log --------------------------------------------------------------------------------

@page("admin")
async def deliveries(ctx: PageContext) -> Response:
    state = _state_filter(ctx)
    async with ctx.pool.acquire() as conn:
        found = await webhooks.delivery_log(conn, ctx.tenant_id, endpoint_id=None, limit=LOG_PAGE,
                                            before=_before(ctx), state=state)
    return ctx.render("admin/webhook_deliveries.html", nav="webhooks", log=_log_view(ctx, found, state))


@page("admin")
async def delivery(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        shown = await webhooks.delivery_detail(conn, ctx.tenant_id, int_param(ctx, "delivery_id"))
    return ctx.render("admin/webhook_delivery.html", nav="webhooks", delivery=shown)


@action("admin", back="/webhooks/deliveries/{delivery_id}")
async def redeliver(ctx: PageContext) -> Response:
    delivery_id = int_param(ctx, "delivery_id")
    async with ctx.pool.acquire() as conn:
        shown = await webhooks.delivery_detail(conn, ctx.tenant_id, delivery_id)
        await webhooks.redeliver(conn, ctx.tenant_id, shown["endpointId"], delivery_id)
    return ctx.redirect(f"{ctx.base}/webhooks/deliveries/{delivery_id}",
                        "Redelivery queued: the event is sent once more (one try), even to a disabled endpoint.")

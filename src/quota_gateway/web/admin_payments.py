"""Admin page for payments under /admin/{tenant}/payments: each provider's receiver URL, secrets
(masked) and mappings, and the events received with what came of each; an event that delivered
nothing (no mapping, no line items) can be processed again once the settings are fixed.

Reads and writes are calls to the payments domain's service; the Stripe API key can be set here,
the rest of the settings through `PUT /api/payments/{provider}` (the README's worked example).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .. import crypto
from ..config import public_base
from ..payments import service as payments
from .pages import PageContext, action, form_text, int_param, page, page_number

EVENTS_PAGE = 50
OUTCOMES = ("pending", "fulfilled", "renewed", "unmapped", "no_line_items", "line_items_refused", "already_fulfilled",
            "not_paid", "refunded", "cancelled")


def _provider_view(ctx: PageContext, provider: str, found: tuple[dict, dict, Any] | None) -> dict[str, Any]:
    view: dict[str, Any] = {"provider": provider, "configured": found is not None,
                            "receiverUrl": f"{public_base(ctx.services.settings)}/hooks/{provider}/{ctx.tenant['slug']}"}
    if found is not None:
        settings, secrets, updated_at = found
        view.update(mappings=settings["mappings"], updatedAt=updated_at,
                    secrets=[crypto.mask_secret(s) for s in secrets.get("webhookSecrets", [])]
                    if provider == "stripe" else [crypto.mask_secret(secrets.get("webhookId", ""))],
                    apiKey=crypto.mask_secret(secrets["apiKey"]) if secrets.get("apiKey") else None)
    return view


@page("admin")
async def payments_page(ctx: PageContext) -> Response:
    outcome = ctx.request.query_params.get("outcome", "")
    outcome_filter = outcome if outcome in OUTCOMES else None
    master_key = ctx.services.settings.master_key
    async with ctx.pool.acquire() as conn:
        providers = [_provider_view(ctx, p, await payments.read_settings(conn, ctx.tenant_id, p, master_key))
                     for p in payments.PROVIDERS]
        events = await payments.list_events(conn, ctx.tenant_id, page=page_number(ctx), page_size=EVENTS_PAGE,
                                            provider=None, outcome=outcome_filter)
    return ctx.render("admin/payments.html", nav="payments", providers=providers, events=events,
                      outcome=outcome_filter or "", outcomes=OUTCOMES)


@action("admin", back="/payments")
async def reprocess_event(ctx: PageContext) -> Response:
    event_id = int_param(ctx, "event_id")
    async with ctx.pool.acquire() as conn:
        shown = await payments.reprocess_event(conn, ctx.tenant_id, event_id, ctx.now)
    return ctx.redirect(f"{ctx.base}/payments", f"Event {shown['eventId']} is queued to be processed again.")


@action("admin", back="/payments")
async def set_stripe_api_key(ctx: PageContext) -> Response:
    remove = bool(ctx.value("remove"))
    api_key = "" if remove else form_text(ctx, "api_key", max_len=255, label="API key", required=True)
    async with ctx.pool.acquire() as conn:
        await payments.set_stripe_api_key(conn, ctx.services.redis, ctx.tenant_id, ctx.services.settings.master_key,
                                          api_key, ctx.now)
    return ctx.redirect(f"{ctx.base}/payments", "Stripe API key removed." if remove else
                        "Stripe API key saved: sessions whose payload names no price are read from Stripe.")

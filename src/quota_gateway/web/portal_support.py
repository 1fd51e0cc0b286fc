"""Support tickets in the customer portal under /portal/{tenant}/tickets: a customer submits a
ticket, reads the staff's replies and answers them.

A customer sees only tickets opened for their own address; another ticket answers exactly like a
missing one. Writes go through the support domain: a reply uses its customer-reply function (which
reopens a resolved ticket), and creation counts against the per-address limit of the API's tickets.
"""

from __future__ import annotations

import dataclasses

from starlette.responses import Response

from ..errors import ApiError
from ..support import ratelimit, sync
from ..support import service as support
from . import service
from .pages import PageContext, action, form_message, int_param, page
from .portal import brand_into


async def _own_ticket(ctx: PageContext, ticket_id: int) -> dict:
    assert ctx.session is not None
    async with ctx.pool.acquire() as conn:
        found = await support.get_ticket(conn, ctx.tenant_id, ticket_id)
    if found["email"].lower() != ctx.session.email.lower():
        raise ApiError(404, "not_found", "There is no such ticket.")
    return found


@page("portal")
async def tickets(ctx: PageContext) -> Response:
    assert ctx.session is not None
    await brand_into(ctx)
    async with ctx.pool.acquire() as conn:
        found = await support.list_tickets(conn, ctx.tenant_id, page=1, page_size=100, email=ctx.session.email)
        licenses = await service.customer_licenses(conn, ctx.tenant_id, ctx.session.email, ctx.now)
    products = sorted({lic["product_name"] for lic in licenses})
    return ctx.render("portal/tickets.html", nav="tickets", tickets=found["items"], products=products,
                      priorities=support.PRIORITIES)


@action("portal", back="/tickets")
async def create_ticket(ctx: PageContext) -> Response:
    assert ctx.session is not None
    product = ctx.value("product")
    if not product or len(product) > 100:
        raise ApiError(400, "missing_field", "choose the product the question is about", field="product")
    subject = form_message(ctx, "subject", max_len=support.SUBJECT_MAX).strip()
    message = form_message(ctx, "message", max_len=support.MESSAGE_MAX)
    priority = support.canonical_priority(ctx.value("priority") or "Medium")
    # The portal has no access token: the customer's address is what the limit counts.
    limits = sync.state(ctx.services).limits
    await ratelimit.take(ctx.services.runner, dataclasses.replace(limits, per_token=2**31 - 1), ctx.tenant_id, 0,
                         ctx.session.email, ctx.services.clock.now())
    async with ctx.pool.acquire() as conn:
        made = await support.create_ticket(conn, ctx.tenant_id, ctx.now,
                                           {"productName": product, "email": ctx.session.email, "subject": subject,
                                            "message": message, "priority": priority})
    return ctx.redirect(f"{ctx.base}/tickets/{made['id']}", "Your request is sent. We answer here and by e-mail.")


@page("portal")
async def ticket(ctx: PageContext) -> Response:
    await brand_into(ctx)
    found = await _own_ticket(ctx, int_param(ctx, "ticket_id"))
    return ctx.render("portal/ticket.html", nav="tickets", ticket=found)


@action("portal", back="/tickets/{ticket_id}")
async def reply(ctx: PageContext) -> Response:
    assert ctx.session is not None
    ticket_id = int_param(ctx, "ticket_id")
    message = form_message(ctx, "message", max_len=support.MESSAGE_MAX)
    async with ctx.pool.acquire() as conn:
        try:
            await support.add_customer_reply(conn, ctx.tenant_id, ticket_id, ctx.session.email, message, now=ctx.now)
        except ApiError as exc:
            if exc.code == "ticket_not_found":
                raise ApiError(404, "not_found", "There is no such ticket.") from None
            raise
    return ctx.redirect(f"{ctx.base}/tickets/{ticket_id}", "Reply sent.")

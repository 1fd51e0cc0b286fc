"""Admin pages for support under /admin/{tenant}: tickets (stats, list, thread, reply, priority,
status, ServiceNow resync) and the ServiceNow connection (with the token ServiceNow posts
incident changes back with).

Every write is a call to the support domain (support.service, support.sync). Messages are shown
as text: Jinja2 autoescapes them, so HTML a customer typed is displayed, never run.
"""

from __future__ import annotations

from starlette.responses import Response

from ..config import public_base
from ..errors import ApiError
from ..support import inbound, sync
from ..support import service as support
from .pages import PageContext, action, form_message, int_param, page, page_number, show_secret

PAGE_SIZE = 25


def _master_key(ctx: PageContext) -> str:
    return str(ctx.services.settings.master_key or "")


@page("admin")
async def tickets(ctx: PageContext) -> Response:
    q = ctx.request.query_params
    status = q.get("status", "open")
    status = status if status in support.STATUSES else ""
    priority = q.get("priority", "")
    priority = priority if priority in support.PRIORITIES else ""
    number = page_number(ctx)
    async with ctx.pool.acquire() as conn:
        counts = await support.stats(conn, ctx.tenant_id)
        found = await support.list_tickets(conn, ctx.tenant_id, page=number, page_size=PAGE_SIZE,
                                           status=status or None, priority=priority or None)
    pages = max(1, found["totalPages"])
    return ctx.render("admin/tickets.html", nav="tickets", stats=counts, found=found, status=status,
                      priority=priority, priorities=support.PRIORITIES, page=number, pages=pages)


@page("admin")
async def ticket(ctx: PageContext) -> Response:
    ticket_id = int_param(ctx, "ticket_id")
    async with ctx.pool.acquire() as conn:
        found = await support.get_ticket(conn, ctx.tenant_id, ticket_id)
        snow = await sync.load_instance(conn, ctx.tenant_id, _master_key(ctx))
    return ctx.render("admin/ticket.html", nav="tickets", ticket=found, priorities=support.PRIORITIES,
                      servicenow_enabled=snow is not None)


@action("admin", back="/tickets/{ticket_id}")
async def reply(ctx: PageContext) -> Response:
    ticket_id = int_param(ctx, "ticket_id")
    message = form_message(ctx, "message", max_len=support.MESSAGE_MAX)
    async with ctx.pool.acquire() as conn:
        await support.add_staff_reply(conn, ctx.services.settings, ctx.tenant_id, ticket_id, message, ctx.now)
    return ctx.redirect(f"{ctx.base}/tickets/{ticket_id}", "Reply sent; the customer gets it by e-mail.")


@action("admin", back="/tickets/{ticket_id}")
async def set_status(ctx: PageContext) -> Response:
    ticket_id = int_param(ctx, "ticket_id")
    status = ctx.value("status")
    if status not in support.STATUSES:
        raise ApiError(400, "invalid_field", "status: open or resolved", field="status")
    async with ctx.pool.acquire() as conn:
        await support.set_status(conn, ctx.tenant_id, ticket_id, status, ctx.now)
    return ctx.redirect(f"{ctx.base}/tickets/{ticket_id}", "Ticket resolved." if status == "resolved"
                        else "Ticket reopened.")


@action("admin", back="/tickets/{ticket_id}")
async def set_priority(ctx: PageContext) -> Response:
    ticket_id = int_param(ctx, "ticket_id")
    async with ctx.pool.acquire() as conn:
        changed = await support.set_priority(conn, ctx.tenant_id, ticket_id, ctx.value("priority"), ctx.now)
    return ctx.redirect(f"{ctx.base}/tickets/{ticket_id}", f"Priority set to {changed['priority']}.")


@action("admin", back="/tickets/{ticket_id}")
async def resync(ctx: PageContext) -> Response:
    ticket_id = int_param(ctx, "ticket_id")
    async with ctx.pool.acquire() as conn:
        await support.request_sync(conn, ctx.tenant_id, ticket_id, ctx.now)
    return ctx.redirect(f"{ctx.base}/tickets/{ticket_id}", "The ticket is queued for ServiceNow.")


# --- ServiceNow ----------------------------------------------------------------------------------

@page("admin")
async def servicenow_page(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        try:
            current = await sync.get_settings(conn, ctx.tenant_id, _master_key(ctx))
        except ApiError as exc:
            if exc.code != "servicenow_not_configured":
                raise
            current = None
    return ctx.render("admin/servicenow.html", nav="tickets", snow=current, inbound_url=_inbound_url(ctx))


def _inbound_url(ctx: PageContext) -> str:
    return f"{public_base(ctx.services.settings)}/hooks/servicenow/{ctx.tenant['slug']}"


@action("admin", back="/servicenow")
async def issue_servicenow_token(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        token = await inbound.issue_token(conn, ctx.tenant_id)
    return show_secret(ctx, "tickets", "ServiceNow inbound token", "Inbound token", token, f"{ctx.base}/servicenow",
                       f"ServiceNow's business rule posts to {_inbound_url(ctx)} with the header "
                       "Authorization: Bearer and this token. Issuing another one replaces it.")


@action("admin", back="/servicenow")
async def save_servicenow(ctx: PageContext) -> Response:
    assert ctx.form is not None
    fields = {"instanceUrl": (ctx.value("instance_url"), 300), "username": (ctx.value("username"), 200),
              "clientId": (ctx.value("client_id"), 200), "table": (ctx.value("table"), 80)}
    for name, (value, limit) in fields.items():
        if len(value) > limit:
            raise ApiError(400, "invalid_field", f"{name}: at most {limit} characters", field=name)
    secrets: dict[str, str] = {}
    for name, form_name in (("password", "password"), ("clientSecret", "client_secret")):
        raw = ctx.form.get(form_name)
        value = raw if isinstance(raw, str) else ""
        if len(value) > 500:
            raise ApiError(400, "invalid_field", f"{name}: at most 500 characters", field=name)
        secrets[name] = value
    auth = ctx.value("auth_type", "basic")
    if auth not in ("basic", "oauth"):
        raise ApiError(400, "invalid_field", "authentication: basic or oauth", field="authType")
    if not fields["instanceUrl"][0]:
        raise ApiError(400, "missing_field", "the instance address is required", field="instanceUrl")
    # A blank secret keeps the stored one (secrets are never sent back to the page).
    body = {"instanceUrl": fields["instanceUrl"][0], "authType": auth, "username": fields["username"][0] or None,
            "password": secrets["password"] or None, "clientId": fields["clientId"][0] or None,
            "clientSecret": secrets["clientSecret"] or None, "table": fields["table"][0] or "incident",
            "enabled": bool(ctx.value("enabled"))}
    async with ctx.pool.acquire() as conn:
        await sync.save_settings(conn, ctx.tenant_id, _master_key(ctx), ctx.now, body,
                                 allow_private=ctx.services.settings.webhook_allow_private)
    return ctx.redirect(f"{ctx.base}/servicenow", "ServiceNow settings saved.")


@action("admin", back="/servicenow")
async def delete_servicenow(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        await sync.delete_settings(conn, ctx.tenant_id)
    return ctx.redirect(f"{ctx.base}/servicenow", "ServiceNow connection removed; tickets stop syncing.")


@action("admin", back="/servicenow")
async def test_servicenow(ctx: PageContext) -> Response:
    result = await sync.test_connection(ctx.services, ctx.tenant_id)
    if result["ok"]:
        return ctx.redirect(f"{ctx.base}/servicenow", f"Connected to {result['instanceUrl']}: the "
                                                      f"{result['table']} table is reachable.")
    return ctx.redirect(f"{ctx.base}/servicenow", f"The connection failed ({result['failure']}): {result['message']}",
                        error=True)

"""Sign-in pages, the same for the admin UI and the customer portal (audience 'admin' / 'portal').

  GET  {base}/login              ask for an e-mail address
  POST {base}/login              mail a code (when the address has access; the answer never says)
  GET  {base}/login/code         the code form; the e-mailed link lands here prefilled (confirm page)
  POST {base}/login/code         redeem the code: session cookie, then the dashboard
  GET  {base}/login/link         admin only: confirm page for a one-time sign-in link
  POST {base}/login/link         redeem the link
  POST {base}/logout             end the session
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.responses import Response

from ..abuse import negative
from ..abuse.clientlimit import note_failed_lookup
from ..config import public_base
from . import mail, service, sessions, signin
from .pages import Endpoint, PageContext, action, page


async def _signed_in(ctx: PageContext, email: str, admin_user_id: int | None) -> Response:
    async with ctx.pool.acquire() as conn:
        cookie = await sessions.start(conn, ctx.keys, ctx.now, tenant_id=ctx.tenant_id, audience=ctx.audience,
                                      email=email, admin_user_id=admin_user_id)
        if admin_user_id is not None:
            await signin.note_admin_login(conn, admin_user_id, ctx.now)
    response = ctx.redirect(f"{ctx.base}/")
    sessions.set_cookie(response, ctx.audience, ctx.tenant["slug"], cookie, ctx.secure)
    return response


async def _branding(ctx: PageContext) -> None:
    async with ctx.pool.acquire() as conn:
        ctx.extra["brand"] = await service.branding(conn, ctx.tenant)


def login_form(audience: str) -> Endpoint:
    @page(audience, signed_in=False)
    async def login_page(ctx: PageContext) -> Response:
        await _branding(ctx)
        return ctx.render("login.html")
    return login_page


def request_code(audience: str) -> Endpoint:
    @action(audience, signed_in=False, back="/login")
    async def ask_for_code(ctx: PageContext) -> Response:
        await _branding(ctx)
        email = signin.normalise_email(ctx.value("email"))
        if not signin.plausible_email(email):
            return ctx.render("login.html", 400, email=email,
                              error="Enter the e-mail address you use with us.")
        redis, missing = ctx.services.redis, negative.sign_in(ctx.tenant_id, audience, email)
        if await negative.is_missing(redis, missing):
            # Asked again within the window: already recorded against this client, nothing to look up.
            note_failed_lookup(ctx.request.scope)
            return ctx.render("code.html", email=email, sent=True)
        async with ctx.pool.acquire() as conn:
            if audience == "admin":
                allowed = await signin.find_admin(conn, ctx.tenant_id, email) is not None
            else:
                allowed = await signin.is_customer(conn, ctx.tenant_id, email)
            async with conn.transaction():
                if allowed:
                    _, code = await signin.issue_code(conn, ctx.keys, ctx.now, tenant_id=ctx.tenant_id,
                                                      audience=audience, email=email, client=ctx.client)
                    link = (f"{public_base(ctx.services.settings)}{ctx.base}/login/code?"
                            + urlencode({"email": email, "code": code}))
                    await mail.send_login_code(conn, ctx.services.settings, ctx.tenant_id, email, code=code,
                                               link=link, minutes=int(signin.CODE_TTL.total_seconds() // 60))
                else:
                    note_failed_lookup(ctx.request.scope)  # an address nobody signs in with
                    await signin.record_refused_request(conn, ctx.keys, ctx.now, tenant_id=ctx.tenant_id,
                                                        audience=audience, email=email, client=ctx.client)
        if not allowed:
            await negative.remember_missing(redis, missing)
        return ctx.render("code.html", email=email, sent=True)
    return ask_for_code


def code_form(audience: str) -> Endpoint:
    @page(audience, signed_in=False)
    async def enter_code(ctx: PageContext) -> Response:
        await _branding(ctx)
        query = ctx.request.query_params
        return ctx.render("code.html", email=query.get("email", "")[:254], code=query.get("code", "")[:6],
                          sent=False)
    return enter_code


def redeem_code(audience: str) -> Endpoint:
    @action(audience, signed_in=False, back="/login")
    async def sign_in_with_code(ctx: PageContext) -> Response:
        email = signin.normalise_email(ctx.value("email"))
        code = ctx.value("code")
        async with ctx.pool.acquire() as conn:
            ok = await signin.redeem_code(conn, ctx.keys, ctx.now, tenant_id=ctx.tenant_id, audience=audience,
                                          email=email, code=code)
            admin_id = await signin.find_admin(conn, ctx.tenant_id, email) if ok and audience == "admin" else None
        if not ok or (audience == "admin" and admin_id is None):
            note_failed_lookup(ctx.request.scope)
            await _branding(ctx)
            return ctx.render("code.html", 400, email=email, sent=False,
                              error="That code is wrong, used or expired. Check the e-mail, or ask for a new code.")
        return await _signed_in(ctx, email, admin_id)
    return sign_in_with_code


@page("admin", signed_in=False)
async def link_confirm(ctx: PageContext) -> Response:
    """The GET a mail scanner may make: shows a button, consumes nothing."""
    await _branding(ctx)
    return ctx.render("link.html", token=ctx.request.query_params.get("token", "")[:100])


@action("admin", signed_in=False, back="/login")
async def link_redeem(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        found = await signin.redeem_link(conn, ctx.keys, ctx.now, ctx.tenant_id, ctx.value("token"))
    if found is None:
        note_failed_lookup(ctx.request.scope)
        return ctx.redirect(f"{ctx.base}/login", "That sign-in link is used or expired. Ask for a code instead.",
                            error=True)
    admin_id, email = found
    return await _signed_in(ctx, email, admin_id)


def logout(audience: str) -> Endpoint:
    @action(audience, signed_in=False)
    async def sign_out(ctx: PageContext) -> Response:
        async with ctx.pool.acquire() as conn:
            await sessions.end(conn, ctx.keys, ctx.now, ctx.request.cookies.get(sessions.COOKIES[audience]))
        response = ctx.redirect(f"{ctx.base}/login", "You are signed out.")
        sessions.clear_cookie(response, audience, ctx.tenant["slug"], ctx.secure)
        return response
    return sign_out

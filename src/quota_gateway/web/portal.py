"""Customer portal pages under /portal/{tenant}: a customer's licenses, devices and their history.

A customer is an e-mail address; they see exactly the license keys issued to that address in
this tenant, and may free a device of one of them (the product's deactivation cooldown applies).
"""

from __future__ import annotations

from starlette.responses import Response

from ..errors import ApiError
from ..licensing import service as licensing
from . import service
from .pages import SECURITY_HEADERS, PageContext, action, int_param, page


async def brand_into(ctx: PageContext) -> None:
    """Put the tenant's portal branding into the page's values."""
    async with ctx.pool.acquire() as conn:
        ctx.extra["brand"] = await service.branding(conn, ctx.tenant)


@page("portal")
async def home(ctx: PageContext) -> Response:
    assert ctx.session is not None
    await brand_into(ctx)
    async with ctx.pool.acquire() as conn:
        items = await service.customer_licenses(conn, ctx.tenant_id, ctx.session.email, ctx.now)
    return ctx.render("portal/home.html", nav="licenses", licenses=items)


@page("portal")
async def history(ctx: PageContext) -> Response:
    assert ctx.session is not None
    await brand_into(ctx)
    async with ctx.pool.acquire() as conn:
        items = await service.customer_history(conn, ctx.tenant_id, ctx.session.email)
    return ctx.render("portal/history.html", nav="history", history=items)


@action("portal", back="/")
async def deactivate(ctx: PageContext) -> Response:
    assert ctx.session is not None
    license_id = int_param(ctx, "license_id")
    hardware = ctx.value("hardware_id")
    async with ctx.pool.acquire() as conn:
        if not await service.customer_license_id(conn, ctx.tenant_id, ctx.session.email, license_id):
            raise ApiError(404, "not_found", "There is no such license key.")
        lic = await licensing.find_license_by_id(conn, ctx.tenant_id, license_id)
        try:
            await licensing.deactivate_found(conn, ctx.tenant_id, ctx.now, lic, hardware)
        except ApiError as exc:
            if exc.code == "deactivation_cooldown":
                wait = int(str(exc.extra.get("retryAfterSeconds") or 0))
                raise ApiError(429, exc.code, f"This license freed a device recently. You can free another in "
                               f"{_duration(wait)}.") from None
            raise
    return ctx.redirect(f"{ctx.base}/", f"Device {hardware[:12]}… is no longer activated.")


def _duration(seconds: int) -> str:
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes = (rest + 59) // 60
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@page("portal", signed_in=False)
async def brand_css(ctx: PageContext) -> Response:
    """The tenant's colour as a stylesheet (the pages allow no inline styles)."""
    async with ctx.pool.acquire() as conn:
        brand = await service.branding(conn, ctx.tenant)
    css = f":root {{ --brand: {brand['colour']}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "no-cache",
                                                         "X-Content-Type-Options": "nosniff"})


@page("portal", signed_in=False)
async def logo(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        found = await service.logo(conn, ctx.tenant_id)
    if found is None:
        raise ApiError(404, "not_found", "This portal has no logo.")
    data, media_type = found
    return Response(data, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

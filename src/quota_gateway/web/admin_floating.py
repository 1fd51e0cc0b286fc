"""Admin pages for floating licenses under /admin/{tenant}/floating: customers, floating keys
(create, revoke) and the live leases of each key.

Writes go through the leases domain's service; the live leases are read from the key's pool in
Redis (the record of who held a lease reaches Postgres behind the request path).
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from ..errors import ApiError
from ..leases import service as leases
from ..leases.pool import LeasePools
from . import service
from .pages import PageContext, action, form_int, form_text, int_param, page, show_secret


def _pools(ctx: PageContext) -> LeasePools:
    pools: LeasePools = ctx.services.lease_pools
    return pools


def _epoch(ctx: PageContext) -> int:
    return int(ctx.services.clock.now())


def _status(row: dict, now: datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


@page("admin")
async def floating_keys(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        keys = await leases.floating_keys_overview(conn, _pools(ctx), ctx.tenant_id, _epoch(ctx))
        customers = await leases.list_customers(conn, ctx.tenant_id)
        products = await service.products(conn, ctx.tenant_id)
    for key in keys:
        key["status"] = _status(key, ctx.now)
    return ctx.render("admin/floating.html", nav="floating", keys=keys, customers=customers, products=products)


@action("admin", back="/floating")
async def create_customer(ctx: PageContext) -> Response:
    name = form_text(ctx, "name", max_len=200, label="customer name", required=True)
    async with ctx.pool.acquire() as conn:
        made = await leases.create_customer(conn, ctx.tenant_id, name, ctx.value("contact")[:500], ctx.now)
    return ctx.redirect(f"{ctx.base}/floating", f"Customer “{made['name']}” added.")


@action("admin", back="/floating")
async def create_floating_key(ctx: PageContext) -> Response:
    customer_id = form_int(ctx, "customer_id", minimum=1, label="customer")
    product_id = form_int(ctx, "product_id", minimum=1, label="product")
    lease_limit = form_int(ctx, "lease_limit", minimum=1, maximum=1_000_000, label="concurrent leases")
    if customer_id is None or product_id is None or lease_limit is None:
        raise ApiError(400, "missing_field", "choose a customer and a product, and give the number of concurrent "
                       "leases")
    features = [f.strip() for f in ctx.value("features").split(",") if f.strip()]
    if len(features) > 500 or any(len(f) > 100 for f in features):
        raise ApiError(400, "invalid_field", "features: at most 500 names of up to 100 characters", field="features")
    body = {"customerId": customer_id, "leaseLimit": lease_limit,
            "validityDays": form_int(ctx, "validity_days", minimum=1, maximum=36500, label="validity"),
            "products": [{"productId": product_id, "features": features}]}
    made = await leases.create_floating_key(ctx.pool, ctx.services.redis, _pools(ctx), ctx.tenant_id, ctx.now, body)
    return show_secret(ctx, "floating", "Floating key created", "Floating key", made["key"],
                       f"{ctx.base}/floating/{made['id']}",
                       f"up to {lease_limit} concurrent lease{'s' if lease_limit != 1 else ''}")


@page("admin")
async def floating_key(ctx: PageContext) -> Response:
    key_id = int_param(ctx, "key_id")
    async with ctx.pool.acquire() as conn:
        key = await leases.floating_key_with_leases(conn, _pools(ctx), ctx.tenant_id, key_id, _epoch(ctx))
        names = {p["id"]: p["name"] for p in await service.products(conn, ctx.tenant_id)}
    key["status"] = _status(key, ctx.now)
    for lease in key["leases"]:
        lease["expiresAt"] = datetime.fromtimestamp(lease["expiresAt"], tz=UTC)
    return ctx.render("admin/floating_key.html", nav="floating", key=key, product_names=names)


@action("admin", back="/floating/{key_id}")
async def revoke_floating_key(ctx: PageContext) -> Response:
    key_id = int_param(ctx, "key_id")
    await leases.revoke_floating_key_by_id(ctx.pool, _pools(ctx), ctx.tenant_id, key_id, ctx.now)
    return ctx.redirect(f"{ctx.base}/floating/{key_id}", "Floating key revoked: no new leases, and live leases "
                                                          "stop validating.")

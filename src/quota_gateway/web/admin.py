"""Admin UI pages under /admin/{tenant}: each parses the form, calls a domain's service, renders.

A secret (license key, API key, access token) appears once, in the page answering the POST that
made it; it is never put in a URL, a cookie or a redirect.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from starlette.responses import Response

from .. import catalogue, crypto
from ..abuse import negative
from ..apilicense import service as apilicense
from ..apilicense.engine import QuotaEngine
from ..auth.service import SCOPES, create_token, list_tokens, revoke_token
from ..errors import ApiError
from ..licensing import service as licensing
from . import analytics, service, signin
from .pages import PageContext, action, form_email, form_int, form_text, int_param, page, page_number, show_secret


def _engine(ctx: PageContext) -> QuotaEngine:
    engine: QuotaEngine = ctx.services.quota
    return engine


# --- dashboard -----------------------------------------------------------------------------------

@page("admin")
async def dashboard(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        data = await service.dashboard(conn, ctx.tenant_id, ctx.now)
    return ctx.render("admin/dashboard.html", nav="dashboard", **data)


# --- analytics ---------------------------------------------------------------------------------

@page("admin")
async def analytics_page(ctx: PageContext) -> Response:
    grain = ctx.request.query_params.get("grain", "day")
    if grain not in analytics.GRAINS:
        grain = "day"
    async with ctx.pool.acquire() as conn:
        data = await analytics.overview(conn, ctx.tenant_id, ctx.now, grain, _engine(ctx).tenant_validation_counts(ctx.tenant_id))
    charts = {"activations": data["activations"], "countries": data["countries"], "units": data["units"]}
    return ctx.render("admin/analytics.html", nav="analytics", grain=grain, grains=list(analytics.GRAINS), data=data,
                      charts=charts)


# --- products, features, plans -------------------------------------------------------------------

@page("admin")
async def products(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        items = await service.products(conn, ctx.tenant_id)
        plans = await service.plans(conn, ctx.tenant_id)
    return ctx.render("admin/products.html", nav="products", products=items, plans=plans)


def _product_values(ctx: PageContext) -> dict[str, Any]:
    name = form_text(ctx, "name", max_len=100, required=True)
    return {"name": name, "description": ctx.value("description")[:1000],
            "trialDays": form_int(ctx, "trial_days", maximum=3650, label="trial days") or 0,
            "minimumRequiredVersion": ctx.value("minimum_version")[:32] or None,
            "deactivationCooldownHours": form_int(ctx, "cooldown_hours", maximum=24 * 365,
                                                  label="deactivation cooldown") or 0}


@action("admin", back="/products")
async def create_product(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        made = await catalogue.create_product(conn, ctx.tenant_id, _product_values(ctx))
    return ctx.redirect(f"{ctx.base}/products/{made['id']}", f"Product “{made['name']}” created.")


@page("admin")
async def product(ctx: PageContext) -> Response:
    product_id = int_param(ctx, "product_id")
    async with ctx.pool.acquire() as conn:
        found = await catalogue.get_product(conn, ctx.tenant_id, product_id)
        features = await catalogue.product_features(conn, ctx.tenant_id, product_id)
    return ctx.render("admin/product.html", nav="products", product=found, features=features)


@action("admin", back="/products/{product_id}")
async def update_product(ctx: PageContext) -> Response:
    product_id = int_param(ctx, "product_id")
    async with ctx.pool.acquire() as conn:
        await catalogue.update_product(conn, ctx.tenant_id, product_id, _product_values(ctx))
    await catalogue.features_changed(ctx.services, ctx.tenant_id, product_id)  # caches hold the name too
    return ctx.redirect(f"{ctx.base}/products/{product_id}", "Product saved.")


@action("admin", back="/products/{product_id}")
async def add_feature(ctx: PageContext) -> Response:
    product_id = int_param(ctx, "product_id")
    name = form_text(ctx, "name", max_len=100, label="feature name", required=True)
    async with ctx.pool.acquire() as conn:
        await catalogue.create_feature(conn, ctx.tenant_id, product_id, name, ctx.value("description")[:1000])
    await catalogue.features_changed(ctx.services, ctx.tenant_id, product_id)
    return ctx.redirect(f"{ctx.base}/products/{product_id}", f"Feature “{name}” added.")


@action("admin", back="/products/{product_id}")
async def remove_feature(ctx: PageContext) -> Response:
    product_id = int_param(ctx, "product_id")
    async with ctx.pool.acquire() as conn:
        await catalogue.remove_feature(conn, ctx.tenant_id, product_id, int_param(ctx, "feature_id"))
    await catalogue.features_changed(ctx.services, ctx.tenant_id, product_id)
    return ctx.redirect(f"{ctx.base}/products/{product_id}", "Feature removed.")


@action("admin", back="/products")
async def create_plan(ctx: PageContext) -> Response:
    name = form_text(ctx, "name", max_len=100, label="plan name", required=True)
    days = form_int(ctx, "duration_days", minimum=1, maximum=36500, label="duration (days)")
    async with ctx.pool.acquire() as conn:
        made, _ = await licensing.save_plan(conn, ctx.tenant_id, {"id": None, "name": name, "durationDays": days,
                                                                  "isActive": True})
    return ctx.redirect(f"{ctx.base}/products", f"Plan “{made['name']}” created.")


@action("admin", back="/products")
async def toggle_plan(ctx: PageContext) -> Response:
    plan_id = int_param(ctx, "plan_id")
    async with ctx.pool.acquire() as conn:
        found = next((p for p in await licensing.list_plans(conn, ctx.tenant_id) if p["id"] == plan_id), None)
        if found is None:
            raise ApiError(404, "not_found", "There is no such plan.")
        made, _ = await licensing.save_plan(conn, ctx.tenant_id, {**found, "isActive": not found["isActive"]})
    state = "offered for new keys again" if made["isActive"] else "no longer offered for new keys"
    return ctx.redirect(f"{ctx.base}/products", f"Plan “{made['name']}” is {state}.")


# --- license keys --------------------------------------------------------------------------------

@page("admin")
async def licenses(ctx: PageContext) -> Response:
    q = ctx.request.query_params
    search, status = q.get("q", "")[:100], q.get("status", "")
    async with ctx.pool.acquire() as conn:
        found = await service.licenses(conn, ctx.tenant_id, ctx.now, search=search, status=status,
                                       page=page_number(ctx))
        items = await service.products(conn, ctx.tenant_id)
        plans = await service.plans(conn, ctx.tenant_id)
    return ctx.render("admin/licenses.html", nav="licenses", found=found, search=search, status=status,
                      products=items, plans=plans)


@action("admin", back="/licenses")
async def create_license(ctx: PageContext) -> Response:
    product_id = form_int(ctx, "product_id", minimum=1, label="product")
    if product_id is None:
        raise ApiError(400, "missing_field", "choose a product", field="product_id")
    kind = ctx.value("kind", "standard")
    if kind not in ("standard", "corporate"):
        raise ApiError(400, "invalid_field", "type: standard or corporate", field="kind")
    email = form_email(ctx, "email").lower()
    seats = form_int(ctx, "max_seats", minimum=1, maximum=1_000_000, label="seats")
    async with ctx.pool.acquire() as conn:
        key, made = await licensing.create_license(
            conn, ctx.services.settings, ctx.services.redis, ctx.tenant_id, ctx.now, product_id=product_id, email=email, kind=kind,
            max_seats=seats if kind == "corporate" else None, plan_id=form_int(ctx, "plan_id", minimum=1),
            validity_days=form_int(ctx, "validity_days", minimum=1, maximum=36500, label="validity"))
    return show_secret(ctx, "licenses", "License key created", "Activation key", key,
                       f"{ctx.base}/licenses/{made['id']}", f"{made['productName']} · {kind} · {email or 'no e-mail'}")


async def _license(conn: asyncpg.Connection, ctx: PageContext, license_id: int) -> Any:
    """The tenant's license key `license_id`, or 404."""
    lic = await licensing.find_license_by_id(conn, ctx.tenant_id, license_id)
    if lic is None:
        raise ApiError(404, "not_found", "There is no such license key.")
    return lic


@page("admin")
async def license_detail(ctx: PageContext) -> Response:
    license_id = int_param(ctx, "license_id")
    async with ctx.pool.acquire() as conn:
        lic = await _license(conn, ctx, license_id)
        features = await licensing.license_features(conn, lic)
        devices = await service.license_devices(conn, ctx.tenant_id, license_id)
        history = await service.license_history(conn, ctx.tenant_id, license_id)
    return ctx.render("admin/license.html", nav="licenses", lic=lic, features=features, devices=devices,
                      history=history, status=service.license_status(lic, ctx.now))


@action("admin", back="/licenses/{license_id}")
async def revoke_license(ctx: PageContext) -> Response:
    license_id = int_param(ctx, "license_id")
    async with ctx.pool.acquire() as conn:
        lic = await _license(conn, ctx, license_id)
        await licensing.revoke_found(conn, ctx.tenant_id, lic, ctx.now)
    return ctx.redirect(f"{ctx.base}/licenses/{license_id}", "License key revoked.")


@action("admin", back="/licenses/{license_id}")
async def offline_code(ctx: PageContext) -> Response:
    license_id = int_param(ctx, "license_id")
    hardware = form_text(ctx, "hardware_id", max_len=256, label="hardware id", required=True)
    async with ctx.pool.acquire() as conn:
        lic = await _license(conn, ctx, license_id)
        made = await licensing.offline_code_found(conn, ctx.tenant_id, ctx.services.settings.master_key, ctx.now,
                                                  lic, hardware, ctx.value("version")[:32] or None)
    return show_secret(ctx, "licenses", "Offline activation code", "Offline code", made["offlineCode"],
                       f"{ctx.base}/licenses/{license_id}",
                       f"for hardware {made['hardwareId']}; the device now holds a seat")


# --- API keys ------------------------------------------------------------------------------------

@page("admin")
async def api_keys(ctx: PageContext) -> Response:
    search = ctx.request.query_params.get("q", "")[:100]
    async with ctx.pool.acquire() as conn:
        found = await service.api_keys(conn, ctx.tenant_id, ctx.now, search=search, page=page_number(ctx))
        items = await service.products(conn, ctx.tenant_id)
    return ctx.render("admin/api_keys.html", nav="api_keys", found=found, search=search, products=items)


@action("admin", back="/api-keys")
async def create_api_key(ctx: PageContext) -> Response:
    product_id = form_int(ctx, "product_id", minimum=1, label="product")
    if product_id is None:
        raise ApiError(400, "missing_field", "choose a product", field="product_id")
    email = form_email(ctx, "email").lower()
    async with ctx.pool.acquire() as conn:
        made = await apilicense.create_key(
            conn, _engine(ctx), ctx.tenant_id, ctx.now, product_id=product_id, email=email,
            client_name=ctx.value("client_name")[:200], client_identifier=ctx.value("client_identifier")[:200],
            validity_days=form_int(ctx, "validity_days", minimum=1, maximum=36500, label="validity"),
            max_api_calls=form_int(ctx, "max_api_calls", minimum=1, label="lifetime quota"))
    return show_secret(ctx, "api_keys", "API key created", "API key", made["apiKey"],
                       f"{ctx.base}/api-keys/{made['id']}",
                       f"{made['productName']} · {made['clientName'] or made['email'] or 'no client'}")


@page("admin")
async def api_key_detail(ctx: PageContext) -> Response:
    key_id = int_param(ctx, "key_id")
    async with ctx.pool.acquire() as conn:
        row = await apilicense.find_by_id(conn, ctx.tenant_id, key_id)
        usage = await apilicense.usage(conn, _engine(ctx), ctx.tenant_id, row)
    return ctx.render("admin/api_key.html", nav="api_keys", key=apilicense.license_json(row, ctx.now.timestamp()),
                      usage=usage, periods=("all", "lifetime", *apilicense.PERIODS))


@action("admin", back="/api-keys/{key_id}")
async def reset_api_key(ctx: PageContext) -> Response:
    key_id = int_param(ctx, "key_id")
    period = ctx.value("period", "all")
    if period not in ("all", "lifetime", *apilicense.PERIODS):
        raise ApiError(400, "invalid_field", "period: all, lifetime, minute, hour, day or month", field="period")
    async with ctx.pool.acquire() as conn:
        row = await apilicense.find_by_id(conn, ctx.tenant_id, key_id)
    await apilicense.reset(ctx.pool, _engine(ctx), ctx.tenant_id, row, period)
    return ctx.redirect(f"{ctx.base}/api-keys/{key_id}", f"Usage reset ({period}).")


@action("admin", back="/api-keys/{key_id}")
async def revoke_api_key(ctx: PageContext) -> Response:
    key_id = int_param(ctx, "key_id")
    async with ctx.pool.acquire() as conn:
        row = await apilicense.find_by_id(conn, ctx.tenant_id, key_id)
        await apilicense.revoke_key(conn, _engine(ctx), row, ctx.now)
    return ctx.redirect(f"{ctx.base}/api-keys/{key_id}", "API key revoked.")


# --- access tokens -------------------------------------------------------------------------------

@page("admin")
async def tokens(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        items = await list_tokens(conn, ctx.tenant_id)
    return ctx.render("admin/tokens.html", nav="tokens", tokens=items, scopes=SCOPES)


@action("admin", back="/tokens")
async def create_access_token(ctx: PageContext) -> Response:
    assert ctx.form is not None
    name = form_text(ctx, "name", max_len=100, required=True)
    scopes = [s for s in ctx.form.getlist("scopes") if isinstance(s, str)]
    async with ctx.pool.acquire() as conn:
        made = await create_token(conn, ctx.tenant_id, name, scopes)
    return show_secret(ctx, "tokens", "Access token created", "Access token", made["token"], f"{ctx.base}/tokens",
                       f"{name} · {', '.join(made['scopes'])}")


@action("admin", back="/tokens")
async def revoke_access_token(ctx: PageContext) -> Response:
    public_id = str(ctx.request.path_params["public_id"])[:40]
    async with ctx.pool.acquire() as conn:
        revoked = await revoke_token(conn, ctx.tenant_id, public_id)
    if not revoked:
        raise ApiError(404, "not_found", "No live access token with that id.")
    await ctx.services.tokens.publish_invalidation(public_id)
    return ctx.redirect(f"{ctx.base}/tokens", f"Access token {public_id} revoked.")


# --- crypto keys ---------------------------------------------------------------------------------

@page("admin")
async def crypto_keys(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        items = await crypto.public_keys(conn, ctx.tenant_id)
    return ctx.render("admin/crypto.html", nav="crypto", keys=items)


@action("admin", back="/crypto")
async def rotate_crypto_key(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        kid = await crypto.create_key_pair(conn, ctx.tenant_id, ctx.services.settings.master_key or "")
    return ctx.redirect(f"{ctx.base}/crypto", f"New signing key {kid} is active; old public keys still verify.")


# --- people and branding -------------------------------------------------------------------------

@page("admin")
async def settings_page(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        admins = await signin.list_admins(conn, ctx.tenant_id)
        brand = await service.branding(conn, ctx.tenant)
    return ctx.render("admin/settings.html", nav="settings", admins=admins, brand=brand)


@action("admin", back="/settings")
async def add_admin(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        made = await signin.create_admin(conn, ctx.tenant_id, ctx.value("email"), ctx.now)
    await negative.forget(ctx.services.redis, negative.sign_in(ctx.tenant_id, "admin", made["email"]))
    return ctx.redirect(f"{ctx.base}/settings", f"{made['email']} can now sign in.")


@action("admin", back="/settings")
async def save_branding(ctx: PageContext) -> Response:
    assert ctx.form is not None
    upload = ctx.form.get("logo")
    logo = await upload.read(service.MAX_LOGO_BYTES + 1) if upload is not None and not isinstance(upload, str) else None
    async with ctx.pool.acquire() as conn:
        await service.save_branding(conn, ctx.tenant_id, ctx.value("display_name"), ctx.value("colour", "#1d4ed8"),
                                    logo)
    return ctx.redirect(f"{ctx.base}/settings", "Portal branding saved.")

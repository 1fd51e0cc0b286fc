"""The web front end's routes: the admin UI under /admin/{tenant}, the portal under /portal/{tenant},
and the assets under /static/web (every asset is served by the gateway; no CDN).

These are HTML pages, not API endpoints, so they are plain Starlette routes and stay out of
/openapi.json.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import (
    admin,
    admin_email,
    admin_floating,
    admin_payments,
    admin_support,
    admin_webhooks,
    login,
    portal,
    portal_support,
)
from .pages import render, web_keys

STATIC_DIR = Path(__file__).parent / "static"
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


async def admin_index(request: Request) -> Response:
    """Which tenant? (/admin?tenant=slug jumps to its sign-in page.)"""
    slug = request.query_params.get("tenant", "").strip().lower()
    if _SLUG.fullmatch(slug):
        return RedirectResponse(f"/admin/{slug}/", status_code=303)
    return render(request, web_keys(request.app.state.services), "admin/index.html")


def _signin_routes(audience: str) -> list[BaseRoute]:
    base = f"/{audience}/{{tenant}}"
    return [
        Route(f"{base}/login", login.login_form(audience), methods=["GET"]),
        Route(f"{base}/login", login.request_code(audience), methods=["POST"]),
        Route(f"{base}/login/code", login.code_form(audience), methods=["GET"]),
        Route(f"{base}/login/code", login.redeem_code(audience), methods=["POST"]),
        Route(f"{base}/logout", login.logout(audience), methods=["POST"]),
    ]


_A = "/admin/{tenant}"
_P = "/portal/{tenant}"

routes: list[BaseRoute] = [
    Mount("/static/web", app=StaticFiles(directory=str(STATIC_DIR)), name="web-static"),
    Route("/admin", admin_index, methods=["GET"]),
    Route("/admin/", admin_index, methods=["GET"]),
    *_signin_routes("admin"),
    Route(f"{_A}/login/link", login.link_confirm, methods=["GET"]),
    Route(f"{_A}/login/link", login.link_redeem, methods=["POST"]),
    Route(f"{_A}/", admin.dashboard, methods=["GET"]),
    Route(f"{_A}/analytics", admin.analytics_page, methods=["GET"]),
    Route(f"{_A}/products", admin.products, methods=["GET"]),
    Route(f"{_A}/products", admin.create_product, methods=["POST"]),
    Route(f"{_A}/products/{{product_id}}", admin.product, methods=["GET"]),
    Route(f"{_A}/products/{{product_id}}", admin.update_product, methods=["POST"]),
    Route(f"{_A}/products/{{product_id}}/features", admin.add_feature, methods=["POST"]),
    Route(f"{_A}/products/{{product_id}}/features/{{feature_id}}/delete", admin.remove_feature, methods=["POST"]),
    Route(f"{_A}/plans", admin.create_plan, methods=["POST"]),
    Route(f"{_A}/plans/{{plan_id}}/toggle", admin.toggle_plan, methods=["POST"]),
    Route(f"{_A}/licenses", admin.licenses, methods=["GET"]),
    Route(f"{_A}/licenses", admin.create_license, methods=["POST"]),
    Route(f"{_A}/licenses/{{license_id}}", admin.license_detail, methods=["GET"]),
    Route(f"{_A}/licenses/{{license_id}}/revoke", admin.revoke_license, methods=["POST"]),
    Route(f"{_A}/licenses/{{license_id}}/offline-code", admin.offline_code, methods=["POST"]),
    Route(f"{_A}/api-keys", admin.api_keys, methods=["GET"]),
    Route(f"{_A}/api-keys", admin.create_api_key, methods=["POST"]),
    Route(f"{_A}/api-keys/{{key_id}}", admin.api_key_detail, methods=["GET"]),
    Route(f"{_A}/api-keys/{{key_id}}/reset", admin.reset_api_key, methods=["POST"]),
    Route(f"{_A}/api-keys/{{key_id}}/revoke", admin.revoke_api_key, methods=["POST"]),
    Route(f"{_A}/floating", admin_floating.floating_keys, methods=["GET"]),
    Route(f"{_A}/floating/customers", admin_floating.create_customer, methods=["POST"]),
    Route(f"{_A}/floating/keys", admin_floating.create_floating_key, methods=["POST"]),
    Route(f"{_A}/floating/{{key_id}}", admin_floating.floating_key, methods=["GET"]),
    Route(f"{_A}/floating/{{key_id}}/revoke", admin_floating.revoke_floating_key, methods=["POST"]),
    Route(f"{_A}/tokens", admin.tokens, methods=["GET"]),
    Route(f"{_A}/tokens", admin.create_access_token, methods=["POST"]),
    Route(f"{_A}/tokens/{{public_id}}/revoke", admin.revoke_access_token, methods=["POST"]),
    Route(f"{_A}/crypto", admin.crypto_keys, methods=["GET"]),
    Route(f"{_A}/crypto/rotate", admin.rotate_crypto_key, methods=["POST"]),
    Route(f"{_A}/payments", admin_payments.payments_page, methods=["GET"]),
    Route(f"{_A}/payments/events/{{event_id}}/reprocess", admin_payments.reprocess_event, methods=["POST"]),
    Route(f"{_A}/webhooks", admin_webhooks.endpoints, methods=["GET"]),
    Route(f"{_A}/webhooks", admin_webhooks.create_endpoint, methods=["POST"]),
    # the log's paths first: "deliveries" is not an endpoint id
    Route(f"{_A}/webhooks/deliveries", admin_webhooks.deliveries, methods=["GET"]),
    Route(f"{_A}/webhooks/deliveries/{{delivery_id}}", admin_webhooks.delivery, methods=["GET"]),
    Route(f"{_A}/webhooks/deliveries/{{delivery_id}}/redeliver", admin_webhooks.redeliver, methods=["POST"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}", admin_webhooks.endpoint, methods=["GET"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}", admin_webhooks.update_endpoint, methods=["POST"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}/enabled", admin_webhooks.set_enabled, methods=["POST"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}/delete", admin_webhooks.delete_endpoint, methods=["POST"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}/rotate-secret", admin_webhooks.rotate_secret, methods=["POST"]),
    Route(f"{_A}/webhooks/{{endpoint_id}}/ping", admin_webhooks.ping, methods=["POST"]),
    Route(f"{_A}/email", admin_email.email_page, methods=["GET"]),
    Route(f"{_A}/email/smtp", admin_email.save_smtp, methods=["POST"]),
    Route(f"{_A}/email/smtp/delete", admin_email.delete_smtp, methods=["POST"]),
    Route(f"{_A}/email/smtp/test", admin_email.test_smtp, methods=["POST"]),
    Route(f"{_A}/email/settings", admin_email.save_mail_settings, methods=["POST"]),
    Route(f"{_A}/email/templates/{{name}}", admin_email.template_page, methods=["GET"]),
    Route(f"{_A}/email/templates/{{name}}", admin_email.save_template, methods=["POST"]),
    Route(f"{_A}/email/templates/{{name}}/reset", admin_email.reset_template, methods=["POST"]),
    Route(f"{_A}/tickets", admin_support.tickets, methods=["GET"]),
    Route(f"{_A}/tickets/{{ticket_id}}", admin_support.ticket, methods=["GET"]),
    Route(f"{_A}/tickets/{{ticket_id}}/reply", admin_support.reply, methods=["POST"]),
    Route(f"{_A}/tickets/{{ticket_id}}/status", admin_support.set_status, methods=["POST"]),
    Route(f"{_A}/tickets/{{ticket_id}}/priority", admin_support.set_priority, methods=["POST"]),
    Route(f"{_A}/tickets/{{ticket_id}}/resync", admin_support.resync, methods=["POST"]),
    Route(f"{_A}/servicenow", admin_support.servicenow_page, methods=["GET"]),
    Route(f"{_A}/servicenow", admin_support.save_servicenow, methods=["POST"]),
    Route(f"{_A}/servicenow/delete", admin_support.delete_servicenow, methods=["POST"]),
    Route(f"{_A}/servicenow/test", admin_support.test_servicenow, methods=["POST"]),
    Route(f"{_A}/servicenow/inbound-token", admin_support.issue_servicenow_token, methods=["POST"]),
    Route(f"{_A}/settings", admin.settings_page, methods=["GET"]),
    Route(f"{_A}/settings/admins", admin.add_admin, methods=["POST"]),
    Route(f"{_A}/settings/branding", admin.save_branding, methods=["POST"]),
    *_signin_routes("portal"),
    Route(f"{_P}/", portal.home, methods=["GET"]),
    Route(f"{_P}/history", portal.history, methods=["GET"]),
    Route(f"{_P}/licenses/{{license_id}}/deactivate", portal.deactivate, methods=["POST"]),
    Route(f"{_P}/tickets", portal_support.tickets, methods=["GET"]),
    Route(f"{_P}/tickets", portal_support.create_ticket, methods=["POST"]),
    Route(f"{_P}/tickets/{{ticket_id}}", portal_support.ticket, methods=["GET"]),
    Route(f"{_P}/tickets/{{ticket_id}}/reply", portal_support.reply, methods=["POST"]),
    Route(f"{_P}/brand.css", portal.brand_css, methods=["GET"]),
    Route(f"{_P}/logo", portal.logo, methods=["GET"]),
]

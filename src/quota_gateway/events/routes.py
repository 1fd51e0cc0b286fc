"""Endpoints of the events domain: SMTP settings, e-mail templates, tenant mail settings."""

from __future__ import annotations

from typing import Any

from ..routing import Call, endpoint
from ..schema import UNSET, Bool, Email, Int, Str, obj
from . import mailer, templates

_SMTP = obj(
    host=Str(required=True, min_len=1, max_len=253),
    port=Int(required=True, minimum=1, maximum=65535),
    security=Str(choices=mailer.SECURITY, default="starttls"),
    username=Str(max_len=256, default=""),
    password=Str(max_len=1024, strip=False, nullable=True, default=UNSET,
                 description="omit to keep the stored password; empty string clears it"),
    **{"from": Email(required=True, description="sender address")},
)
_SMTP_TEST = obj(to=Email(required=True))
_TEMPLATE = obj(
    subject=Str(required=True, min_len=1, max_len=500),
    text=Str(required=True, min_len=1, max_len=100_000, strip=False),
    html=Str(max_len=200_000, strip=False, default="", description="empty: the mail has a plain-text part only"),
)
_MAIL_SETTINGS = obj(
    contactEmail=Email(description="where the tenant is told things (e.g. a disabled webhook endpoint)"),
    deliverLicenses=Bool(description="mail a new license's key to the e-mail address it was made for"),
    customerPortalUrl=Str(max_len=2000, description="{{CustomerPortalUrl}} in templates"),
)


async def get_smtp(call: Call) -> dict:
    """The SMTP server this tenant's mail goes through (password masked)."""
    async with call.services.pool.acquire() as conn:
        return mailer.smtp_view(await mailer.smtp_config(conn, call.services.settings, call.tenant_id))


async def put_smtp(call: Call) -> dict:
    """Set the tenant's own SMTP server."""
    b = call.body
    password = None if b["password"] is UNSET else (b["password"] or "")
    async with call.services.pool.acquire() as conn:
        config = await mailer.put_smtp(conn, call.services.settings, call.tenant_id, host=b["host"], port=b["port"],
                                       security=b["security"], username=b["username"], password=password,
                                       from_address=b["from"])
    return mailer.smtp_view(config)


async def delete_smtp(call: Call) -> dict:
    """Forget the tenant's SMTP server (mail falls back to the server-wide default, if any)."""
    async with call.services.pool.acquire() as conn:
        deleted = await mailer.delete_smtp(conn, call.tenant_id)
        view = mailer.smtp_view(await mailer.smtp_config(conn, call.services.settings, call.tenant_id))
    return {"deleted": deleted, **view}


async def test_smtp(call: Call) -> dict:
    """Send a test message now through the effective SMTP server."""
    return await mailer.send_test(call.services, call.tenant_id, call.body["to"])


def _template_json(t: templates.Template) -> dict[str, Any]:
    return {"name": t.name, "subject": t.subject, "text": t.text, "html": t.html, "isDefault": t.is_default,
            "placeholders": [*templates.COMMON_PLACEHOLDERS, *templates.PLACEHOLDERS[t.name]]}


async def list_templates(call: Call) -> dict:
    """Every template name, and whether the tenant changed it."""
    async with call.services.pool.acquire() as conn:
        changed = await templates.customised(conn, call.tenant_id)
    return {"templates": [{"name": name, "isDefault": name not in changed, "updatedAt": changed.get(name)}
                          for name in templates.DEFAULTS]}


async def get_template(call: Call) -> dict:
    """The tenant's version of a template (or the default)."""
    async with call.services.pool.acquire() as conn:
        return _template_json(await templates.load(conn, call.tenant_id, call.path["name"]))


async def put_template(call: Call) -> dict:
    """Replace a template (Jinja2, sandboxed; the HTML part is autoescaped)."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        saved = await templates.save(conn, call.tenant_id, call.path["name"], b["subject"], b["text"], b["html"])
    return _template_json(saved)


async def delete_template(call: Call) -> dict:
    """Back to the built-in default."""
    async with call.services.pool.acquire() as conn:
        return _template_json(await templates.reset(conn, call.tenant_id, call.path["name"]))


async def get_mail_settings(call: Call) -> dict:
    """The tenant's contact address, license delivery switch and portal URL."""
    async with call.services.pool.acquire() as conn:
        return await mailer.mail_settings(conn, call.tenant_id)


async def put_mail_settings(call: Call) -> dict:
    """Change the tenant's mail settings (members left out stay as they are)."""
    async with call.services.pool.acquire() as conn:
        return await mailer.put_mail_settings(conn, call.tenant_id, call.body)


_T = "email"
routes = [
    endpoint("GET", "/api/smtp", get_smtp, scope="manage", tag=_T),
    endpoint("PUT", "/api/smtp", put_smtp, scope="manage", tag=_T, body=_SMTP),
    endpoint("DELETE", "/api/smtp", delete_smtp, scope="manage", tag=_T),
    endpoint("POST", "/api/smtp/test", test_smtp, scope="manage", tag=_T, body=_SMTP_TEST,
             errors=("smtp_not_configured", "smtp_failed"),
             responses={200: "sent", 409: "no SMTP server configured", 502: "the SMTP server refused or failed"}),
    endpoint("GET", "/api/email/templates", list_templates, scope="manage", tag=_T),
    endpoint("GET", "/api/email/templates/{name}", get_template, scope="manage", tag=_T, errors=("unknown_template",)),
    endpoint("PUT", "/api/email/templates/{name}", put_template, scope="manage", tag=_T, body=_TEMPLATE,
             errors=("unknown_template", "template_syntax")),
    endpoint("DELETE", "/api/email/templates/{name}", delete_template, scope="manage", tag=_T,
             errors=("unknown_template",)),
    endpoint("GET", "/api/email/settings", get_mail_settings, scope="manage", tag=_T),
    endpoint("PUT", "/api/email/settings", put_mail_settings, scope="manage", tag=_T, body=_MAIL_SETTINGS),
]

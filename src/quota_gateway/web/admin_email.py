"""Admin pages for e-mail under /admin/{tenant}/email: the tenant's SMTP server (the password is
sealed at rest and never shown), a test message, mail settings, and the e-mail templates.

Every write is a call to the events domain (events.mailer, events.templates).
"""

from __future__ import annotations

from starlette.responses import Response

from ..config import portal_url
from ..errors import ApiError
from ..events import mailer, templates
from .pages import PageContext, action, form_email, form_int, form_text, page

_TEMPLATE_LIMITS = {"subject": 500, "text": 100_000, "html": 200_000}


@page("admin")
async def email_page(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        smtp = mailer.smtp_view(await mailer.smtp_config(conn, ctx.services.settings, ctx.tenant_id))
        settings = await mailer.mail_settings(conn, ctx.tenant_id)
        changed = await templates.customised(conn, ctx.tenant_id)
        effective_portal = await mailer.customer_portal_url(conn, ctx.services.settings, ctx.tenant_id)
    names = [{"name": name, "updatedAt": changed.get(name)} for name in templates.DEFAULTS]
    return ctx.render("admin/email.html", nav="email", smtp=smtp, mail=settings, templates=names,
                      securities=mailer.SECURITY, own_portal=portal_url(ctx.services.settings, ctx.tenant["slug"]),
                      effective_portal=effective_portal)


@action("admin", back="/email")
async def save_smtp(ctx: PageContext) -> Response:
    assert ctx.form is not None
    host = form_text(ctx, "host", max_len=253, required=True)
    port = form_int(ctx, "port", minimum=1, maximum=65535, label="port")
    if port is None:
        raise ApiError(400, "missing_field", "port: 1 to 65535", field="port")
    username = form_text(ctx, "username", max_len=256, label="user name")
    raw_password = ctx.form.get("password")
    typed = raw_password if isinstance(raw_password, str) else ""
    if len(typed) > 1024:
        raise ApiError(400, "invalid_field", "password: at most 1024 characters", field="password")
    # Blank keeps the stored password (it is never sent to the page); the box clears it.
    password = "" if ctx.value("clear_password") else (typed or None)
    async with ctx.pool.acquire() as conn:
        await mailer.put_smtp(conn, ctx.services.settings, ctx.tenant_id, host=host, port=port,
                              security=ctx.value("security", "starttls"), username=username, password=password,
                              from_address=form_email(ctx, "from", label="sender address", required=True))
    return ctx.redirect(f"{ctx.base}/email", "SMTP settings saved.")


@action("admin", back="/email")
async def delete_smtp(ctx: PageContext) -> Response:
    async with ctx.pool.acquire() as conn:
        await mailer.delete_smtp(conn, ctx.tenant_id)
    return ctx.redirect(f"{ctx.base}/email", "The tenant's SMTP settings are removed; mail uses the server's "
                                             "default, if any.")


@action("admin", back="/email")
async def test_smtp(ctx: PageContext) -> Response:
    to = form_email(ctx, "to", label="test recipient", required=True)
    sent = await mailer.send_test(ctx.services, ctx.tenant_id, to)
    through = "this tenant's own SMTP server" if sent["source"] == "tenant" else "the gateway's default SMTP server"
    return ctx.redirect(f"{ctx.base}/email", f"Test message sent to {to} through {through}.")


@action("admin", back="/email")
async def save_mail_settings(ctx: PageContext) -> Response:
    portal_url = form_text(ctx, "customer_portal_url", max_len=2000, label="portal address")
    changes = {"contactEmail": form_email(ctx, "contact_email", label="contact address"),
               "deliverLicenses": bool(ctx.value("deliver_licenses")), "customerPortalUrl": portal_url}
    async with ctx.pool.acquire() as conn:
        await mailer.put_mail_settings(conn, ctx.tenant_id, changes)
    return ctx.redirect(f"{ctx.base}/email", "Mail settings saved.")


def _template_name(ctx: PageContext) -> str:
    name = str(ctx.request.path_params.get("name", ""))
    if name not in templates.DEFAULTS:
        raise ApiError(404, "not_found", "There is no such e-mail template.")
    return name


@page("admin")
async def template_page(ctx: PageContext) -> Response:
    name = _template_name(ctx)
    async with ctx.pool.acquire() as conn:
        template = await templates.load(conn, ctx.tenant_id, name)
    return ctx.render("admin/email_template.html", nav="email", template=template,
                      placeholders=[*templates.COMMON_PLACEHOLDERS, *templates.PLACEHOLDERS[name]])


@action("admin", back="/email/templates/{name}")
async def save_template(ctx: PageContext) -> Response:
    assert ctx.form is not None
    name = _template_name(ctx)
    parts: dict[str, str] = {}
    for part, limit in _TEMPLATE_LIMITS.items():
        value = ctx.form.get(part)
        text = value.replace("\r\n", "\n") if isinstance(value, str) else ""
        if len(text) > limit:
            raise ApiError(400, "invalid_field", f"{part}: at most {limit} characters", field=part)
        parts[part] = text
    if not parts["subject"].strip() or not parts["text"].strip():
        raise ApiError(400, "missing_field", "a template needs a subject and a plain-text body")
    async with ctx.pool.acquire() as conn:
        await templates.save(conn, ctx.tenant_id, name, parts["subject"].strip(), parts["text"], parts["html"],
                             ctx.now)
    return ctx.redirect(f"{ctx.base}/email/templates/{name}", f"Template {name} saved.")


@action("admin", back="/email/templates/{name}")
async def reset_template(ctx: PageContext) -> Response:
    name = _template_name(ctx)
    async with ctx.pool.acquire() as conn:
        await templates.reset(conn, ctx.tenant_id, name)
    return ctx.redirect(f"{ctx.base}/email/templates/{name}", f"Template {name} is back to the default.")

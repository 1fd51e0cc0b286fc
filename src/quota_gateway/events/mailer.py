"""E-mail: SMTP settings per tenant (else the server-wide QG_SMTP_* default), rendering, sending.

`queue_mail` renders in the caller's transaction and enqueues a `mail.send` job carrying the
finished message and its Message-ID, so every retry sends the same bytes under the same id: the
job queue records the attempt before the SMTP conversation, and should the process die after the
server accepted the message but before the outcome was recorded, the retry's duplicate carries
the same Message-ID, which receiving systems deduplicate on.
"""

from __future__ import annotations

import functools
import logging
import ssl
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib
import asyncpg

from .. import crypto
from ..config import Settings, portal_url
from ..errors import ApiError
from ..formats import urls
from . import jobs, templates, webhooks

log = logging.getLogger("quota_gateway.events.mailer")

MAIL_JOB = "mail.send"
SECURITY = ("none", "starttls", "tls")
_PASSWORD_PURPOSE = "smtp-password"
MASK = "********"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    username: str
    password: str
    from_address: str
    source: str  # "tenant" or "server"


def server_default(settings: Any) -> SmtpConfig | None:
    if not settings.smtp_host or not settings.smtp_from:
        return None
    return SmtpConfig(settings.smtp_host, settings.smtp_port, settings.smtp_security, settings.smtp_user,
                      settings.smtp_password, settings.smtp_from, "server")


async def smtp_config(conn: asyncpg.Connection, settings: Any, tenant_id: str) -> SmtpConfig | None:
    """The SMTP server mail of this tenant goes through: its own, else the server's, else None."""
    row = await conn.fetchrow("SELECT host, port, security, username, password_enc, from_address FROM smtp_settings "
                              "WHERE tenant_id = $1", tenant_id)
    if row is None:
        return server_default(settings)
    password = ""
    if row["password_enc"] is not None:
        password = crypto.unseal(settings.master_key or "", tenant_id, _PASSWORD_PURPOSE,
                                 bytes(row["password_enc"])).decode()
    return SmtpConfig(row["host"], row["port"], row["security"], row["username"], password, row["from_address"],
                      "tenant")


def smtp_view(config: SmtpConfig | None) -> dict[str, Any]:
    """The wire shape of GET /api/smtp: the password masked, never shown."""
    if config is None:
        return {"source": None, "host": None, "port": None, "security": None, "username": None, "password": None,
                "from": None}
    return {"source": config.source, "host": config.host, "port": config.port, "security": config.security,
            "username": config.username, "password": MASK if config.password else "", "from": config.from_address}


async def put_smtp(conn: asyncpg.Connection, settings: Any, tenant_id: str, *, host: str, port: int, security: str,
                   username: str, password: str | None, from_address: str) -> SmtpConfig:
    """Store the tenant's SMTP server; `password` None keeps the stored one, "" clears it."""
    if security not in SECURITY:
        raise ApiError(400, "invalid_field", f"security: must be one of {', '.join(SECURITY)}", field="security")
    if not settings.webhook_allow_private:
        webhooks.refuse_private_host(host.rstrip(".").lower(), "host")
    sealed: bytes | None
    if password is None:
        sealed = await conn.fetchval("SELECT password_enc FROM smtp_settings WHERE tenant_id = $1", tenant_id)
    else:
        sealed = (crypto.seal(settings.master_key or "", tenant_id, _PASSWORD_PURPOSE, password.encode())
                  if password else None)
    await conn.execute(
        """INSERT INTO smtp_settings (tenant_id, host, port, security, username, password_enc, from_address, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now())
           ON CONFLICT (tenant_id) DO UPDATE SET host = $2, port = $3, security = $4, username = $5,
               password_enc = $6, from_address = $7, updated_at = now()""",
        tenant_id, host, port, security, username, sealed, from_address)
    config = await smtp_config(conn, settings, tenant_id)
    assert config is not None
    return config


async def delete_smtp(conn: asyncpg.Connection, tenant_id: str) -> bool:
    status = await conn.execute("DELETE FROM smtp_settings WHERE tenant_id = $1", tenant_id)
    return status.endswith(" 1")


# --- tenant mail settings -------------------------------------------------------------------------

async def mail_settings(conn: asyncpg.Connection, tenant_id: str) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT contact_email, deliver_licenses, customer_portal_url FROM tenant_mail_settings "
                              "WHERE tenant_id = $1", tenant_id)
    if row is None:
        return {"contactEmail": "", "deliverLicenses": False, "customerPortalUrl": ""}
    return {"contactEmail": row["contact_email"], "deliverLicenses": row["deliver_licenses"],
            "customerPortalUrl": row["customer_portal_url"]}


async def put_mail_settings(conn: asyncpg.Connection, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    if changes.get("customerPortalUrl"):  # it becomes a link in customers' e-mails
        urls.check_http_url(changes["customerPortalUrl"], "customerPortalUrl")
    current = {**await mail_settings(conn, tenant_id), **{k: v for k, v in changes.items() if v is not None}}
    await conn.execute(
        """INSERT INTO tenant_mail_settings (tenant_id, contact_email, deliver_licenses, customer_portal_url, updated_at)
           VALUES ($1, $2, $3, $4, now())
           ON CONFLICT (tenant_id) DO UPDATE SET contact_email = $2, deliver_licenses = $3, customer_portal_url = $4,
               updated_at = now()""",
        tenant_id, current["contactEmail"], current["deliverLicenses"], current["customerPortalUrl"])
    return current


# --- composing and queueing -----------------------------------------------------------------------

def _recipients(to: str | list[str]) -> list[str]:
    addresses = [to] if isinstance(to, str) else list(to)
    clean = []
    for address in addresses:
        address = address.strip()
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or any(c in address for c in "\r\n,<>") or any(c.isspace() for c in address):
            raise ApiError(400, "invalid_email", f"not an e-mail address: {address!r}")
        clean.append(address)
    if not clean:
        raise ApiError(400, "invalid_email", "no recipient")
    return clean


async def customer_portal_url(conn: asyncpg.Connection, settings: Settings, tenant_id: str) -> str:
    """{{CustomerPortalUrl}} of the tenant's e-mails: the address the tenant set, else this
    gateway's portal of the tenant (`config.portal_url`)."""
    row = await conn.fetchrow("SELECT t.slug, m.customer_portal_url FROM tenants t "
                              "LEFT JOIN tenant_mail_settings m ON m.tenant_id = t.id WHERE t.id = $1", tenant_id)
    if row is None:
        return ""
    return row["customer_portal_url"] or portal_url(settings, row["slug"])


async def tenant_display_name(conn: asyncpg.Connection, tenant_id: str) -> str:
    """{{TenantName}} of the tenant's e-mails: the display name its customers see in the portal
    (the admin UI's branding settings, `tenant_branding`), else the tenant's name."""
    return await conn.fetchval("SELECT coalesce(nullif(b.display_name, ''), t.name) FROM tenants t "
                               "LEFT JOIN tenant_branding b ON b.tenant_id = t.id WHERE t.id = $1", tenant_id) or ""


async def render_for(conn: asyncpg.Connection, settings: Settings, tenant_id: str, template: str,
                     context: dict[str, Any]) -> templates.Rendered:
    """Template `template` of the tenant rendered with `context` plus TenantName and CustomerPortalUrl."""
    chosen = await templates.load(conn, tenant_id, template)
    full = {"TenantName": await tenant_display_name(conn, tenant_id),
            "CustomerPortalUrl": await customer_portal_url(conn, settings, tenant_id), **context}
    return templates.render(chosen, full)


def new_message_id() -> str:
    # Fixed when the mail is queued, so every retry of it carries the same id.
    return f"<{uuid.uuid4().hex}@quota-gateway>"


async def queue_mail(conn: asyncpg.Connection, settings: Settings, tenant_id: str, template: str,
                     to: str | list[str], context: dict[str, Any], *, dedupe_key: str | None = None) -> int | None:
    """Render the tenant's `template` with `context` and enqueue it for sending, in the caller's
    transaction. Returns the job id, or None when `dedupe_key` was queued before."""
    recipients = _recipients(to)
    templates.require_known(template)
    payload: dict[str, Any] = {"to": recipients, "messageId": new_message_id(), "template": template}
    try:
        rendered = await render_for(conn, settings, tenant_id, template, context)
    except Exception as exc:
        # The job records why and fails without retrying; the caller's transaction goes on.
        payload["renderError"] = f"{type(exc).__name__}: {exc}"
    else:
        payload.update(subject=rendered.subject, text=rendered.text, html=rendered.html)
    return await jobs.enqueue(conn, tenant_id, MAIL_JOB, payload, dedupe_key=dedupe_key)


def build_message(from_address: str, to: list[str], subject: str, text: str, html: str, message_id: str,
                  date: Any) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(date)
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    return msg


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """How SMTP servers are verified: the system's trust store, plus the PEM certificates of
    `ca_file` (QG_SMTP_CA_FILE: a private CA, or a test's self-signed certificate) when set.
    Certificates and host names are always checked; nothing here turns verification off."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


async def send(config: SmtpConfig, message: EmailMessage, timeout: float, ca_file: str | None = None) -> None:
    """One SMTP conversation; raises on any failure (refused, TLS, auth, rejected recipients)."""
    await aiosmtplib.send(message, hostname=config.host, port=config.port,
                          username=config.username or None, password=config.password or None,
                          use_tls=config.security == "tls", start_tls=config.security == "starttls",
                          tls_context=tls_context(ca_file) if config.security != "none" else None,
                          timeout=timeout)


class MailNotConfigured(Exception):
    pass


async def _check_destination(config: SmtpConfig, settings: Any) -> None:
    """A tenant's own server is held to the webhooks' destination rule, whatever its name resolves
    to now (the server-wide default is the operator's: a local relay is fine); DestinationRefused
    unless QG_WEBHOOK_ALLOW_PRIVATE."""
    if config.source == "tenant" and not settings.webhook_allow_private:
        await webhooks.resolve(config.host, config.port, False)


async def _send_job(services: Any, job: jobs.Job) -> None:
    p = job.payload
    if "renderError" in p:
        raise jobs.Permanent(f"template {p['template']} failed to render: {p['renderError']}")
    async with services.pool.acquire() as conn:
        config = await smtp_config(conn, services.settings, job.tenant_id)
    if config is None:  # retried: the tenant may configure SMTP in the meantime
        raise MailNotConfigured("no SMTP server configured for this tenant and no server-wide default")
    await _check_destination(config, services.settings)  # refused: retried, the settings may be fixed
    message = build_message(config.from_address, p["to"], p["subject"], p["text"], p["html"], p["messageId"],
                            services.clock.utcnow())
    await send(config, message, services.settings.smtp_timeout, services.settings.smtp_ca_file)


async def send_test(services: Any, tenant_id: str, to: str) -> dict[str, Any]:
    """Send a test message now through the tenant's effective SMTP server."""
    recipients = _recipients(to)
    async with services.pool.acquire() as conn:
        config = await smtp_config(conn, services.settings, tenant_id)
        tenant_name = await tenant_display_name(conn, tenant_id)
    if config is None:
        raise ApiError(409, "smtp_not_configured", "no SMTP server is configured (PUT /api/smtp)")
    try:
        await _check_destination(config, services.settings)
    except webhooks.DestinationRefused as exc:
        raise ApiError(400, "url_not_allowed", f"host: {exc}", field="host") from None
    message_id = new_message_id()
    subject = " ".join(f"{tenant_name}: SMTP test".split())  # one line, as templates.render folds subjects
    message = build_message(config.from_address, recipients, subject,
                            "This is a test message: the SMTP settings work.\n",
                            "<p>This is a test message: the SMTP settings work.</p>", message_id,
                            services.clock.utcnow())
    try:
        await send(config, message, services.settings.smtp_timeout, services.settings.smtp_ca_file)
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise ApiError(502, "smtp_failed", f"sending failed: {type(exc).__name__}: {exc}") from None
    return {"sent": True, "messageId": message_id, "source": config.source}


jobs.register(MAIL_JOB, _send_job)


async def queue_license_delivery(conn: asyncpg.Connection, settings: Settings, tenant_id: str, *, license_id: int,
                                 key: str, email: str, product_name: str, expires_at: Any = None) -> int | None:
    """Mail a new license's key to `email` when the tenant enabled delivery (in the transaction
    that creates the license: the plain key exists only there). None when nothing is sent."""
    if not email or not (await mail_settings(conn, tenant_id))["deliverLicenses"]:
        return None
    context = {"LicenseKey": key, "ProductName": product_name, "CustomerEmail": email,
               "ExpirationDate": expires_at.strftime("%Y-%m-%d") if expires_at is not None else ""}
    try:
        _recipients(email)
    except ApiError:  # an address SMTP cannot take must not fail the license's creation
        log.warning("license %s: not mailing the key to an unusable address", license_id)
        return None
    return await queue_mail(conn, settings, tenant_id, "license_delivery", email, context,
                            dedupe_key=f"license-delivery:{license_id}")

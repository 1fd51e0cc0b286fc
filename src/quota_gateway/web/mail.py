"""The one place the web front end sends e-mail: sign-in codes, through the events domain's mailer.

`events.mailer.queue_mail` renders the tenant's `portal_login_code` template and delivers it via
SMTP through the durable job queue, in the caller's transaction.
"""

from __future__ import annotations

import asyncpg

from ..events import mailer

TEMPLATE = "portal_login_code"


async def send_login_code(conn: asyncpg.Connection, tenant_id: str, to: str, *, code: str, link: str,
                          portal_url: str, minutes: int) -> None:
    """Queue the sign-in e-mail; {{CustomerPortalUrl}} points at this gateway's portal unless the
    tenant set its own."""
    context = {"LoginCode": code, "ValidMinutes": minutes, "CustomerEmail": to, "LoginUrl": link}
    if not (await mailer.mail_settings(conn, tenant_id)).get("customerPortalUrl"):
        context["CustomerPortalUrl"] = portal_url
    await mailer.queue_mail(conn, tenant_id, TEMPLATE, to, context)

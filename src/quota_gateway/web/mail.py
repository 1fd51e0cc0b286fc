"""The one place the web front end sends e-mail: sign-in codes, through the events domain's mailer.

`events.mailer.queue_mail` renders the tenant's `portal_login_code` template and delivers it via
SMTP through the durable job queue, in the caller's transaction.
"""

from __future__ import annotations

import asyncpg

from ..config import Settings
from ..events import mailer

TEMPLATE = "portal_login_code"


async def send_login_code(conn: asyncpg.Connection, settings: Settings, tenant_id: str, to: str, *, code: str,
                          link: str, minutes: int) -> None:
    """Queue the sign-in e-mail ({{CustomerPortalUrl}}: the mailer's rule, as in every e-mail)."""
    context = {"LoginCode": code, "ValidMinutes": minutes, "CustomerEmail": to, "LoginUrl": link}
    await mailer.queue_mail(conn, settings, tenant_id, TEMPLATE, to, context)

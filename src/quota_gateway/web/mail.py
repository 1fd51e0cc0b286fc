"""The one place the web front end sends e-mail: sign-in codes, through the events domain's mailer.

`events.mailer.queue_mail` renders the tenant's `portal_login_code` template and delivers it via
SMTP through the durable job queue. A gateway built without that mailer cannot mail codes; the
sign-in pages then say so and point at `quota-gateway admin link`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import asyncpg

TEMPLATE = "portal_login_code"


def _mailer() -> ModuleType | None:
    try:
        return importlib.import_module("quota_gateway.events.mailer")
    except ImportError:
        return None


def available() -> bool:
    return _mailer() is not None


async def send_login_code(conn: asyncpg.Connection, tenant_id: str, to: str, *, code: str, link: str,
                          tenant_name: str, portal_url: str, minutes: int) -> bool:
    """Queue the sign-in e-mail in the caller's transaction; False when no mailer is built in."""
    mailer = _mailer()
    if mailer is None:
        return False
    await mailer.queue_mail(conn, tenant_id, TEMPLATE, to,
                            {"code": code, "link": link, "loginUrl": link, "tenantName": tenant_name,
                             "minutes": minutes, "email": to, "customerPortalUrl": portal_url})
    return True

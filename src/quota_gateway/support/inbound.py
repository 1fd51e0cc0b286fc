"""ServiceNow → tickets: what the instance's agents do on an incident comes back to its ticket.

The instance posts the incident after each change (a business rule with an outbound REST call,
shown in the README) to `POST /hooks/servicenow/{tenant-slug}` with `Authorization: Bearer
<token>`; the token is the tenant's (issued by `POST /api/servicenow/inbound-token`, shown once,
only its SHA-256 kept). What is applied:
- a new customer-visible comment (`comments`, the journal entry as `getJournalEntry(1)` gives it,
  its header line removed) becomes a staff reply: stored, e-mailed to the customer, never posted
  back as a work note; whatever the order the posts arrive in, each journal entry once;
- `state` 6 (Resolved), 7 (Closed) or 8 (Canceled) resolves the ticket; any other state on a
  resolved ticket reopens it; the sync job then writes no state back. The incident's
  `sys_mod_count` orders states: a post not newer than the last state taken, or than our own last
  write to the incident (its echo), shows a state already followed or overwritten.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime
from typing import Any

import asyncpg

from .. import tenants
from ..config import Settings
from ..errors import ApiError
from ..formats.digests import sha256
from ..jsonio import json_object
from . import service

TOKEN_PREFIX = "qgsn_"
RESOLVED_STATES = frozenset({"6", "7", "8"})  # Resolved, Closed, Canceled
_SYS_ID = re.compile(r"[0-9a-f]{32}")
# `getJournalEntry(1)`: "2027-01-15 08:00:00 - Jane Agent (Additional comments)\n<text>".
_JOURNAL_HEADER = re.compile(r"\A\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - .{0,200}? \(([^()\n]{1,60})\)\r?\n")
_WORK_NOTES = "Work notes"


async def issue_token(conn: asyncpg.Connection, tenant_id: str) -> str:
    """A new inbound token for the tenant's ServiceNow connection; the previous one stops working."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    updated = await conn.fetchval("UPDATE servicenow_settings SET inbound_token_digest = $2 WHERE tenant_id = $1 "
                                  "RETURNING 1", tenant_id, sha256(token))
    if updated is None:
        raise ApiError(404, "servicenow_not_configured", "no ServiceNow connection is set up for this tenant")
    return token


def comment_text(entry: str) -> str | None:
    """The text of a journal entry as ServiceNow renders it (header line removed); None for an
    internal work note, which never reaches the customer."""
    header = _JOURNAL_HEADER.match(entry)
    if header is not None:
        if header.group(1) == _WORK_NOTES:
            return None
        entry = entry[header.end():]
    text = entry.strip()
    return text or None


def _digits(body: dict, name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, "missing_field", f"{name}: required", field=name)
        return None
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise ApiError(400, "invalid_field", f"{name}: must be a non-negative integer", field=name)
    return int(text)


def parse(raw: bytes) -> dict[str, Any]:
    body = json_object(raw, "invalid_body", "the body")
    sys_id = body.get("sys_id")
    if not isinstance(sys_id, str) or not _SYS_ID.fullmatch(sys_id):
        raise ApiError(400, "invalid_field", "sys_id: the incident's 32-hex-digit sys_id", field="sys_id")
    comments = body.get("comments")
    if comments is not None and not isinstance(comments, str):
        raise ApiError(400, "invalid_field", "comments: must be a string", field="comments")
    if comments is not None:
        comments = comments.replace("\x00", "\ufffd")  # PostgreSQL text refuses NUL; the comment is kept
    if comments is not None and len(comments) > service.MESSAGE_MAX + 300:
        raise ApiError(400, "message_too_long", f"comments: at most {service.MESSAGE_MAX} characters",
                       field="comments", maxLength=service.MESSAGE_MAX)
    correlation = body.get("correlation_id")
    state = _digits(body, "state", required=False)
    return {"sys_id": sys_id, "mod_count": _digits(body, "sys_mod_count", required=True),
            "state": str(state) if state is not None else None, "comments": comments or None,
            "correlation_id": correlation if isinstance(correlation, str) else None}


async def _tenant(pool: asyncpg.Pool, redis: Any, slug: str, authorization: str | None) -> str:
    tenant = await tenants.find(pool, redis, slug)  # an unknown slug is negative-cached
    digest = None
    if tenant is not None and tenant["slug"] == slug:
        async with pool.acquire() as conn:
            digest = await conn.fetchval("SELECT inbound_token_digest FROM servicenow_settings WHERE tenant_id = $1 "
                                         "AND enabled", tenant["id"])
    scheme, _, token = (authorization or "").partition(" ")
    # Unknown tenant, no connection, no token issued, wrong token: one answer, nothing revealed.
    if tenant is None or digest is None or scheme.lower() != "bearer" or \
            not hmac.compare_digest(bytes(digest), sha256(token.strip())):
        raise ApiError(401, "unauthorized", "no ServiceNow inbound token of this tenant")
    return str(tenant["id"])


async def _ticket_of(conn: asyncpg.Connection, tenant_id: str, sys_id: str, correlation: str | None) -> Any:
    row = await conn.fetchrow("SELECT id, snow_sys_id FROM support_tickets WHERE tenant_id = $1 AND snow_sys_id = $2",
                              tenant_id, sys_id)
    prefix = f"qg-{tenant_id}-"
    number = correlation[len(prefix):] if correlation and correlation.startswith(prefix) else ""
    # ASCII digits only, as many as a bigint holds: isdigit() alone takes '²', which int() refuses.
    if row is None and number.isascii() and number.isdigit() and len(number) <= 18:
        # The incident is ours but its create's answer was lost: the ticket has no sys_id yet.
        row = await conn.fetchrow("SELECT id, snow_sys_id FROM support_tickets WHERE tenant_id = $1 AND id = $2 "
                                  "AND snow_sys_id IS NULL", tenant_id, int(number))
    if row is None:
        raise ApiError(404, "ticket_not_found", "no ticket of this tenant has that incident")
    return row


async def receive(pool: asyncpg.Pool, redis: Any, settings: Settings, slug: str, authorization: str | None,
                  raw: bytes, now: datetime) -> dict[str, Any]:
    tenant_id = await _tenant(pool, redis, slug, authorization)
    posted = parse(raw)
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        ticket = await _ticket_of(conn, tenant_id, posted["sys_id"], posted["correlation_id"])
        ticket_id = ticket["id"]
        text = comment_text(posted["comments"]) if posted["comments"] else None
        # A comment is applied whatever the order of the posts (none is lost), once per journal entry.
        journal_key = sha256(f"{posted['sys_id']}\n{posted['comments']}").hex() if text is not None else None
        if journal_key is not None and not await conn.fetchval(
                "SELECT 1 FROM support_messages WHERE ticket_id = $1 AND snow_journal_key = $2", ticket_id, journal_key):
            await service.add_staff_reply(conn, settings, tenant_id, ticket_id, (text or "")[:service.MESSAGE_MAX], now,
                                          journal_key=journal_key)
            applied.append("comment")
        # The state only from a post newer than every state taken or written before.
        newer = await conn.fetchval(
            "UPDATE support_tickets SET snow_inbound_mod_count = $2 WHERE id = $1 "
            "AND (snow_inbound_mod_count IS NULL OR snow_inbound_mod_count < $2) "
            "AND (snow_written_mod_count IS NULL OR snow_written_mod_count < $2) RETURNING 1",
            ticket_id, posted["mod_count"])
        if newer is not None and posted["state"] is not None:
            change = await service.follow_incident_state(conn, tenant_id, ticket_id,
                                                         posted["state"] in RESOLVED_STATES, posted["state"], now)
            if change is not None:
                applied.append(change)
    return {"received": True, "ticketId": ticket_id, "applied": applied, "stale": newer is None}

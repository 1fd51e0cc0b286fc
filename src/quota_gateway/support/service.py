"""Support tickets: a thread of messages per ticket, linked to product, license key, hardware and
version; staff replies are e-mailed to the customer, and every change that ServiceNow should see
queues a sync job (sync.py) in the same transaction.

Statuses: `open` and `resolved` (a customer reply reopens a resolved ticket). Priorities: Low,
Medium (default), High, Critical. Messages are stored as sent: HTML is text here, and whoever
shows it escapes it (the API returns it verbatim inside JSON strings).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import catalogue
from ..config import Settings
from ..errors import ApiError
from ..events import jobs, mailer, outbox
from ..events import types as event_types
from ..licensing import keys as license_keys
from ..licensing import service as licensing
from ..listing import Where, fetch_page

PRIORITIES = ("Low", "Medium", "High", "Critical")
STATUSES = ("open", "resolved")
SUBJECT_MAX = 200
MESSAGE_MAX = 20_000
SYNC_JOB = "support.servicenow_sync"

_TICKET_COLUMNS = """t.id, t.product_id, t.product_name, t.license_id, t.activation_key_hint, t.hardware_id,
    t.client_version, t.email, t.subject, t.priority, t.status, t.created_at, t.updated_at, t.resolved_at,
    t.reopened_at, t.snow_state, t.snow_sys_id, t.snow_number, t.snow_last_error, t.snow_attempts, t.snow_synced_at,
    (SELECT count(*) FROM support_messages m WHERE m.ticket_id = t.id) AS message_count"""


def canonical_priority(value: str) -> str:
    for priority in PRIORITIES:
        if priority.lower() == value.strip().lower():
            return priority
    raise ApiError(400, "invalid_priority", f"priority must be one of {', '.join(PRIORITIES)}", field="priority")


def ticket_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "productName": row["product_name"], "productId": row["product_id"],
        "email": row["email"], "subject": row["subject"], "priority": row["priority"], "status": row["status"],
        "activationKey": row["activation_key_hint"], "licenseId": row["license_id"], "hardwareId": row["hardware_id"],
        "version": row["client_version"], "messageCount": row["message_count"], "createdAt": row["created_at"],
        "updatedAt": row["updated_at"], "resolvedAt": row["resolved_at"], "reopenedAt": row["reopened_at"],
        "serviceNow": {"state": row["snow_state"], "sysId": row["snow_sys_id"], "number": row["snow_number"],
                       "lastError": row["snow_last_error"], "attempts": row["snow_attempts"],
                       "syncedAt": row["snow_synced_at"]},
    }


def _message_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "author": row["author"], "authorEmail": row["author_email"] or None,
            "message": row["body"], "createdAt": row["created_at"], "fromServiceNow": row["from_servicenow"]}


def _event_data(row: Any) -> dict[str, Any]:
    return {"ticketId": row["id"], "productName": row["product_name"], "email": row["email"],
            "subject": row["subject"], "priority": row["priority"], "status": row["status"]}


async def _servicenow_enabled(conn: asyncpg.Connection, tenant_id: str) -> bool:
    return bool(await conn.fetchval("SELECT enabled FROM servicenow_settings WHERE tenant_id = $1", tenant_id))


async def _queue_sync(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, now: datetime) -> None:
    """Mark the ticket as waiting for ServiceNow and queue the sync job (in the caller's transaction)."""
    await conn.execute("UPDATE support_tickets SET snow_state = 'pending' WHERE tenant_id = $1 AND id = $2",
                       tenant_id, ticket_id)
    await jobs.enqueue(conn, tenant_id, SYNC_JOB, {"ticketId": ticket_id}, run_at=now)


async def _fetch(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, *, lock: bool = False) -> Any:
    row = await conn.fetchrow(f"SELECT {_TICKET_COLUMNS} FROM support_tickets t WHERE t.tenant_id = $1 AND t.id = $2"
                              + (" FOR UPDATE" if lock else ""), tenant_id, ticket_id)
    if row is None:
        raise ApiError(404, "ticket_not_found", f"no ticket {ticket_id}")
    return row


async def create_ticket(conn: asyncpg.Connection, tenant_id: str, now: datetime, body: dict[str, Any]) -> dict[str, Any]:
    """A new open ticket with the customer's first message; links the product and license when
    they are known here (an unknown product or key is kept as sent, not refused)."""
    product = await catalogue.find_product_by_name(conn, tenant_id, body["productName"])
    license_id, key_hint = None, None
    if body.get("activationKey"):
        canonical = license_keys.normalize(body["activationKey"])
        if canonical is not None:
            key_hint = license_keys.hint(canonical)
            lic = await licensing.find_license(conn, tenant_id, canonical)
            license_id = lic["id"] if lic is not None else None
    hardware = body.get("hardwareId")
    priority = canonical_priority(body.get("priority") or "Medium")
    async with conn.transaction():
        ticket_id = await conn.fetchval(
            """INSERT INTO support_tickets (tenant_id, product_id, product_name, license_id, activation_key_hint,
                   hardware_id, client_version, email, subject, priority, status, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11, $11) RETURNING id""",
            tenant_id, product["id"] if product else None, body["productName"], license_id, key_hint,
            hardware.strip().upper() if hardware else None, body.get("version") or None, body["email"],
            body["subject"], priority, now)
        await conn.execute("INSERT INTO support_messages (tenant_id, ticket_id, author, author_email, body, created_at, "
                           "snow_pending) VALUES ($1, $2, 'customer', $3, $4, $5, false)",
                           tenant_id, ticket_id, body["email"], body["message"], now)
        row = await _fetch(conn, tenant_id, ticket_id)
        await outbox.emit(conn, tenant_id, event_types.TICKET_CREATED, _event_data(row), at=now)
        if await _servicenow_enabled(conn, tenant_id):
            await _queue_sync(conn, tenant_id, ticket_id, now)
            row = await _fetch(conn, tenant_id, ticket_id)
    return ticket_json(row)


async def list_tickets(conn: asyncpg.Connection, tenant_id: str, *, page: int, page_size: int,
                       status: str | None = None, priority: str | None = None, product: str | None = None,
                       email: str | None = None) -> dict[str, Any]:
    where = Where("t.tenant_id", tenant_id)
    where.equals("t.status", status)
    where.equals("t.priority", canonical_priority(priority) if priority else None)
    if product:
        where.add(f"lower(t.product_name) = lower({where.param(product)})")
    if email:
        where.add(f"lower(t.email) = lower({where.param(email)})")
    return await fetch_page(conn, count_from="SELECT count(*) FROM support_tickets t",
                            select_from=f"SELECT {_TICKET_COLUMNS} FROM support_tickets t", where=where,
                            order_by="t.id DESC", page=page, page_size=page_size, item=ticket_json)


async def get_ticket(conn: asyncpg.Connection, tenant_id: str, ticket_id: int) -> dict[str, Any]:
    """The ticket with its whole thread, oldest message first."""
    ticket = ticket_json(await _fetch(conn, tenant_id, ticket_id))
    rows = await conn.fetch("SELECT id, author, author_email, body, created_at, from_servicenow FROM support_messages "
                            "WHERE tenant_id = $1 AND ticket_id = $2 ORDER BY id", tenant_id, ticket_id)
    ticket["messages"] = [_message_json(r) for r in rows]
    return ticket


async def stats(conn: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    """Counts for a dashboard: open and resolved tickets, and open ones that are Critical or High."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'open') AS open,
                  count(*) FILTER (WHERE status = 'resolved') AS resolved,
                  count(*) FILTER (WHERE status = 'open' AND priority = 'Critical') AS critical,
                  count(*) FILTER (WHERE status = 'open' AND priority = 'High') AS high,
                  count(*) AS total
           FROM support_tickets WHERE tenant_id = $1""", tenant_id)
    return {"open": row["open"], "resolved": row["resolved"], "critical": row["critical"], "high": row["high"],
            "total": row["total"]}


async def _add_message(conn: asyncpg.Connection, tenant_id: str, ticket: Any, author: str, email: str, message: str,
                       now: datetime, *, journal_key: str | None = None) -> int:
    # A reply that came from ServiceNow (a journal entry) is on the incident already: not posted
    # back as a work note.
    from_servicenow = journal_key is not None
    snow = not from_servicenow and await _servicenow_enabled(conn, tenant_id)
    message_id: int = await conn.fetchval(
        "INSERT INTO support_messages (tenant_id, ticket_id, author, author_email, body, created_at, snow_pending, "
        "snow_noted_at, from_servicenow, snow_journal_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        tenant_id, ticket["id"], author, email, message, now, snow, now if from_servicenow else None, from_servicenow,
        journal_key)
    await conn.execute("UPDATE support_tickets SET updated_at = $3 WHERE tenant_id = $1 AND id = $2",
                       tenant_id, ticket["id"], now)
    await outbox.emit(conn, tenant_id, event_types.TICKET_REPLIED,
                      {**_event_data(ticket), "messageId": message_id, "author": author}, at=now)
    if snow:
        await _queue_sync(conn, tenant_id, ticket["id"], now)
    return message_id


async def add_staff_reply(conn: asyncpg.Connection, settings: Settings, tenant_id: str, ticket_id: int, message: str,
                          now: datetime, *, journal_key: str | None = None) -> dict[str, Any]:
    """A reply from the publisher's staff (here, or an agent's comment on the incident: then
    `journal_key` names its journal entry): stored, e-mailed to the customer (`ticket_reply`)."""
    async with conn.transaction():
        ticket = await _fetch(conn, tenant_id, ticket_id, lock=True)
        message_id = await _add_message(conn, tenant_id, ticket, "staff", "", message, now, journal_key=journal_key)
        await mailer.queue_mail(conn, settings, tenant_id, "ticket_reply", ticket["email"],
                                {"TicketSubject": ticket["subject"], "ReplyText": message, "TicketId": ticket["id"],
                                 "CustomerEmail": ticket["email"]},
                                dedupe_key=f"ticket-reply:{message_id}")
    return await get_ticket(conn, tenant_id, ticket_id)


async def add_customer_reply(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, email: str, message: str,
                             *, now: datetime | None = None) -> dict[str, Any]:
    """A reply from the customer (the portal calls this): only on the customer's own ticket
    (another address gets the same 404 as a missing ticket); a resolved ticket opens again."""
    now = now or datetime.now(UTC)
    if len(message) > MESSAGE_MAX:
        raise ApiError(400, "message_too_long", f"message: must be at most {MESSAGE_MAX} characters",
                       field="message", maxLength=MESSAGE_MAX)
    if not message.strip():
        raise ApiError(400, "invalid_field", "message: must not be empty", field="message")
    async with conn.transaction():
        ticket = await _fetch(conn, tenant_id, ticket_id, lock=True)
        if ticket["email"].lower() != email.strip().lower():
            raise ApiError(404, "ticket_not_found", f"no ticket {ticket_id}")
        if ticket["status"] == "resolved":
            await _reopen(conn, tenant_id, ticket_id, now)
        await _add_message(conn, tenant_id, ticket, "customer", ticket["email"], message, now)
    return await get_ticket(conn, tenant_id, ticket_id)


async def set_status(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, status: str,
                     now: datetime) -> dict[str, Any]:
    """Resolve (stamps resolvedAt, emits ticket.resolved) or reopen (stamps reopenedAt, clears
    resolvedAt). Setting the status a ticket already has changes nothing."""
    async with conn.transaction():
        ticket = await _fetch(conn, tenant_id, ticket_id, lock=True)
        if ticket["status"] != status:
            if status == "resolved":
                await _resolve(conn, tenant_id, ticket, now)
            else:
                await _reopen(conn, tenant_id, ticket_id, now)
            if await _servicenow_enabled(conn, tenant_id):
                await _queue_sync(conn, tenant_id, ticket_id, now)  # the incident's state follows
    return ticket_json(await _fetch(conn, tenant_id, ticket_id))


async def follow_incident_state(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, resolved: bool,
                                incident_state: str, now: datetime) -> str | None:
    """The incident was resolved (or closed, cancelled) or reopened in ServiceNow: the ticket follows,
    and the state is recorded as the incident's, so the sync job writes nothing back. Returns
    "resolved" / "reopened", or None when the ticket already has that status, or when a resolve or
    reopen made here is not written to the incident yet (the post shows the incident before it:
    ours is the later change)."""
    async with conn.transaction():
        ticket = await _fetch(conn, tenant_id, ticket_id, lock=True)
        written = await conn.fetchval("SELECT snow_incident_state FROM support_tickets WHERE id = $1", ticket_id)
        if (ticket["status"] == "resolved") != (written == "6"):  # "6": Resolved, as sync.py writes it
            return None
        await conn.execute("UPDATE support_tickets SET snow_incident_state = $2 WHERE id = $1", ticket_id,
                           incident_state)
        if resolved and ticket["status"] != "resolved":
            await _resolve(conn, tenant_id, ticket, now)
            return "resolved"
        if not resolved and ticket["status"] == "resolved":
            await _reopen(conn, tenant_id, ticket_id, now)
            return "reopened"
    return None


async def _resolve(conn: asyncpg.Connection, tenant_id: str, ticket: Any, now: datetime) -> None:
    await conn.execute("UPDATE support_tickets SET status = 'resolved', resolved_at = $3, updated_at = $3 "
                       "WHERE tenant_id = $1 AND id = $2", tenant_id, ticket["id"], now)
    await outbox.emit(conn, tenant_id, event_types.TICKET_RESOLVED, {**_event_data(ticket), "status": "resolved"},
                      at=now)


async def _reopen(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, now: datetime) -> None:
    await conn.execute("UPDATE support_tickets SET status = 'open', resolved_at = NULL, reopened_at = $3, "
                       "updated_at = $3 WHERE tenant_id = $1 AND id = $2", tenant_id, ticket_id, now)


async def set_priority(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, priority: str,
                       now: datetime) -> dict[str, Any]:
    """Change the priority; a synced incident gets the new urgency through the sync job."""
    priority = canonical_priority(priority)
    async with conn.transaction():
        ticket = await _fetch(conn, tenant_id, ticket_id, lock=True)
        if ticket["priority"] != priority:
            await conn.execute("UPDATE support_tickets SET priority = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
                               tenant_id, ticket_id, priority, now)
            if await _servicenow_enabled(conn, tenant_id):
                await _queue_sync(conn, tenant_id, ticket_id, now)
    return ticket_json(await _fetch(conn, tenant_id, ticket_id))


async def request_sync(conn: asyncpg.Connection, tenant_id: str, ticket_id: int, now: datetime) -> dict[str, Any]:
    """Queue a sync by hand (a ticket made before ServiceNow was set up, or one whose retries ran out)."""
    async with conn.transaction():
        await _fetch(conn, tenant_id, ticket_id, lock=True)
        if not await _servicenow_enabled(conn, tenant_id):
            raise ApiError(409, "servicenow_not_enabled", "ServiceNow is not configured and enabled for this tenant")
        # Replies written while ServiceNow was off become work notes too (the first message is the
        # incident's description, marked noted when the incident is made).
        await conn.execute("UPDATE support_messages SET snow_pending = true WHERE tenant_id = $1 AND ticket_id = $2 "
                           "AND snow_noted_at IS NULL AND NOT from_servicenow", tenant_id, ticket_id)
        await _queue_sync(conn, tenant_id, ticket_id, now)
    return ticket_json(await _fetch(conn, tenant_id, ticket_id))

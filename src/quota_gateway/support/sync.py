"""ServiceNow for support tickets: the tenant's connection settings and the sync job.

Settings: one row per tenant; the password and client secret are sealed with the tenant's key
(crypto.seal) and shown masked. The sync job (`support.servicenow_sync`, payload `{ticketId}`)
brings one ticket's incident up to date, whatever happened before:
- no incident yet: create it (`POST /api/now/table/{table}`); if an earlier create was sent and
  its answer lost (a timeout), first look the incident up by our `correlation_id`, so a retry
  never makes a second one;
- the incident's urgency differs from the ticket's priority: `PATCH` it;
- the ticket was resolved or reopened since the incident's state was last written: `PATCH`
  `state` 6 (Resolved, with the `close_code` and `close_notes` ServiceNow requires) or 2 (In
  Progress);
- replies not yet noted: one `PATCH` with `work_notes` each, oldest first.
A failure marks the ticket `failed` with the error and raises, so the job queue retries on its
schedule; ServiceNow being down never fails or delays the ticket itself. One worker at a time
syncs a ticket (advisory lock); another finds it busy and defers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from .. import crypto
from ..errors import ApiError
from ..events import jobs, webhooks
from ..formats.digests import sha256
from ..services import Services
from . import service
from .ratelimit import Limits
from .servicenow import Instance, ServiceNowClient, ServiceNowError

log = logging.getLogger("quota_gateway.support")

PASSWORD_PURPOSE = "servicenow.password"
CLIENT_SECRET_PURPOSE = "servicenow.client_secret"
URGENCY = {"Critical": "1", "High": "2", "Medium": "3", "Low": "3"}
# ServiceNow incident states (the post-Helsinki model): 2 In Progress, 6 Resolved.
STATE_IN_PROGRESS, STATE_RESOLVED = "2", "6"
CLOSE_CODE = "Solved (Permanently)"
TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,79}")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_ERROR_CHARS = 500


@dataclass
class SupportState:
    """The support domain's per-process parts (`Services.support`)."""

    client: ServiceNowClient
    limits: Limits


def state(services: Services) -> SupportState:
    """The domain's state, made on first use (start() makes it; a job may run before in tests)."""
    if services.support is None:
        settings = services.settings
        services.support = SupportState(
            ServiceNowClient(services.clock, timeout=settings.servicenow_timeout,
                             allow_private=settings.webhook_allow_private),
            Limits(settings.support_tickets_per_token, settings.support_tickets_per_email,
                   settings.support_ticket_window))
    return services.support


def correlation_id(tenant_id: str, ticket_id: int) -> str:
    """Ours on the incident: unique across tenants that share one instance."""
    return f"qg-{tenant_id}-{ticket_id}"


# --- settings ----------------------------------------------------------------------------------

def check_instance_url(raw: str, allow_private: bool) -> str:
    """`https://host[:port]` (plain http only for a loopback host), without path, query or user;
    unless `allow_private` (QG_WEBHOOK_ALLOW_PRIVATE), never localhost or a literal loopback,
    link-local or private address (400 url_not_allowed), as for webhooks."""
    try:
        parts = urlsplit(raw.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port, parts = None, None, None
    bad = ApiError(400, "invalid_instance_url", "instanceUrl must be https://<instance>.service-now.com "
                   "(no path, query or credentials; plain http only for a loopback host)", field="instanceUrl")
    if parts is None or not host or parts.username or parts.password or parts.query or parts.fragment:
        raise bad
    if parts.path not in ("", "/") or parts.scheme not in ("https", "http"):
        raise bad
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise bad
    if not allow_private:
        webhooks.refuse_private_host(host, "instanceUrl")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


async def _row(conn: asyncpg.Connection, tenant_id: str) -> Any:
    return await conn.fetchrow("SELECT * FROM servicenow_settings WHERE tenant_id = $1", tenant_id)


def _open(master_key: str, tenant_id: str, purpose: str, sealed: bytes | None) -> str | None:
    if sealed is None:
        return None
    return crypto.unseal(master_key, tenant_id, purpose, bytes(sealed)).decode()


def _view(row: Any, master_key: str, tenant_id: str) -> dict[str, Any]:
    password = _open(master_key, tenant_id, PASSWORD_PURPOSE, row["password_enc"])
    secret = _open(master_key, tenant_id, CLIENT_SECRET_PURPOSE, row["client_secret_enc"])
    grant = None
    if row["auth_type"] == "oauth":
        grant = "password" if row["username"] else "client_credentials"
    return {"instanceUrl": row["instance_url"], "authType": row["auth_type"], "username": row["username"],
            "password": crypto_mask(password), "clientId": row["client_id"], "clientSecret": crypto_mask(secret),
            "grantType": grant, "table": row["table_name"], "enabled": row["enabled"], "updatedAt": row["updated_at"],
            "inboundTokenSet": row["inbound_token_digest"] is not None}


def crypto_mask(secret: str | None) -> str | None:
    """`****` and the last four characters, when the secret is long enough to spare them."""
    if secret is None:
        return None
    return "****" + secret[-4:] if len(secret) >= 12 else "****"


async def get_settings(conn: asyncpg.Connection, tenant_id: str, master_key: str) -> dict[str, Any]:
    row = await _row(conn, tenant_id)
    if row is None:
        raise ApiError(404, "servicenow_not_configured", "no ServiceNow connection is set up for this tenant")
    return _view(row, master_key, tenant_id)


async def save_settings(conn: asyncpg.Connection, tenant_id: str, master_key: str, now: datetime,
                        body: dict[str, Any], *, allow_private: bool) -> tuple[dict[str, Any], bool]:
    """Create or replace the connection; a secret left out keeps the stored one. Returns (view, created)."""
    url = check_instance_url(body["instanceUrl"], allow_private)
    table = body.get("table") or "incident"
    if not TABLE_NAME.fullmatch(table):
        raise ApiError(400, "invalid_table", "table must be a ServiceNow table name (lower case, digits, _)",
                       field="table")
    auth = body["authType"]
    async with conn.transaction():
        old = await conn.fetchrow("SELECT * FROM servicenow_settings WHERE tenant_id = $1 FOR UPDATE", tenant_id)

        def kept(field: str, column: str, purpose: str) -> bytes | None:
            if body.get(field):
                return crypto.seal(master_key, tenant_id, purpose, body[field].encode())
            return bytes(old[column]) if old is not None and old[column] is not None else None

        username = body.get("username") or None
        password_enc = kept("password", "password_enc", PASSWORD_PURPOSE)
        client_id, secret_enc = body.get("clientId") or None, kept("clientSecret", "client_secret_enc",
                                                                   CLIENT_SECRET_PURPOSE)
        if auth == "basic":
            client_id, secret_enc = None, None
            if not username:
                raise ApiError(400, "missing_field", "username: required for Basic auth", field="username")
        else:
            if not client_id:
                raise ApiError(400, "missing_field", "clientId: required for OAuth", field="clientId")
            if secret_enc is None:
                raise ApiError(400, "missing_field", "clientSecret: required for OAuth", field="clientSecret")
            if not username:
                password_enc = None  # client_credentials grant: no user
        if username and password_enc is None:
            raise ApiError(400, "missing_field", "password: required with a username", field="password")
        await conn.execute(
            """INSERT INTO servicenow_settings (tenant_id, instance_url, auth_type, username, password_enc, client_id,
                   client_secret_enc, table_name, enabled, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (tenant_id) DO UPDATE SET instance_url = $2, auth_type = $3, username = $4,
                   password_enc = $5, client_id = $6, client_secret_enc = $7, table_name = $8, enabled = $9,
                   updated_at = $10, revision = servicenow_settings.revision + 1""",
            tenant_id, url, auth, username, password_enc, client_id, secret_enc, table, body.get("enabled", True), now)
    return _view(await _row(conn, tenant_id), master_key, tenant_id), old is None


async def delete_settings(conn: asyncpg.Connection, tenant_id: str) -> None:
    if await conn.fetchval("DELETE FROM servicenow_settings WHERE tenant_id = $1 RETURNING 1", tenant_id) is None:
        raise ApiError(404, "servicenow_not_configured", "no ServiceNow connection is set up for this tenant")


async def load_instance(conn: asyncpg.Connection, tenant_id: str, master_key: str, *,
                        enabled_only: bool = True) -> Instance | None:
    row = await _row(conn, tenant_id)
    if row is None or (enabled_only and not row["enabled"]):
        return None
    return Instance(url=row["instance_url"], table=row["table_name"], auth_type=row["auth_type"],
                    username=row["username"], password=_open(master_key, tenant_id, PASSWORD_PURPOSE, row["password_enc"]),
                    client_id=row["client_id"],
                    client_secret=_open(master_key, tenant_id, CLIENT_SECRET_PURPOSE, row["client_secret_enc"]),
                    cache_key=f"{tenant_id}:{row['revision']}")


async def test_connection(services: Services, tenant_id: str) -> dict[str, Any]:
    """Reach the instance with the saved settings: host, TLS, credentials (a fresh OAuth token),
    the table. `ok` false names what failed (`failure`, one of servicenow.FAILURES)."""
    async with services.pool.acquire() as conn:
        instance = await load_instance(conn, tenant_id, services.settings.master_key or "", enabled_only=False)
    if instance is None:
        raise ApiError(404, "servicenow_not_configured", "no ServiceNow connection is set up for this tenant")
    try:
        await state(services).client.check(instance)
    except ServiceNowError as exc:
        return {"ok": False, "failure": exc.code, "message": exc.message, "remoteStatus": exc.status,
                "instanceUrl": instance.url, "table": instance.table}
    return {"ok": True, "instanceUrl": instance.url, "table": instance.table, "authType": instance.auth_type}


# --- the sync job ------------------------------------------------------------------------------

def _lock_key(ticket_id: int) -> int:
    return int.from_bytes(sha256(f"qg servicenow ticket {ticket_id}")[:8], "big", signed=True)


def incident_state_change(status: str, written: str | None, ticket_id: int) -> dict[str, str] | None:
    """The PATCH that brings the incident's state to the ticket's status, or None when it is there:
    a resolved ticket resolves the incident; a ticket reopened after that puts it In Progress. An
    open ticket whose incident was never resolved by us leaves the state to ServiceNow's people."""
    if status == "resolved" and written != STATE_RESOLVED:
        return {"state": STATE_RESOLVED, "close_code": CLOSE_CODE,
                "close_notes": f"Resolved in quota_gateway (ticket {ticket_id})."}
    if status != "resolved" and written == STATE_RESOLVED:
        return {"state": STATE_IN_PROGRESS}
    return None


def work_note(message: Any) -> str:
    who = "Support staff" if message["author"] == "staff" else f"Customer {message['author_email']}"
    return f"{who} replied:\n\n{message['body']}"


async def sync_job(services: Services, job: jobs.Job) -> None:
    ticket_id = int(job.payload["ticketId"])
    async with services.pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(ticket_id)):
            raise jobs.Defer(5, f"ticket {ticket_id} is being synced by another worker")
        try:
            await _sync(services, conn, job.tenant_id, ticket_id)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(ticket_id))


async def _sync(services: Services, conn: asyncpg.Connection, tenant_id: str, ticket_id: int) -> None:
    now = services.clock.utcnow()
    ticket = await conn.fetchrow("SELECT * FROM support_tickets WHERE tenant_id = $1 AND id = $2", tenant_id, ticket_id)
    if ticket is None:
        return  # deleted with its tenant
    instance = await load_instance(conn, tenant_id, services.settings.master_key or "")
    if instance is None:  # turned off since: nothing to retry
        await conn.execute("UPDATE support_tickets SET snow_state = CASE WHEN snow_sys_id IS NULL THEN 'none' "
                           "ELSE 'synced' END WHERE id = $1", ticket_id)
        return
    client = state(services).client
    await conn.execute("UPDATE support_tickets SET snow_attempts = snow_attempts + 1 WHERE id = $1", ticket_id)
    try:
        sys_id = ticket["snow_sys_id"]
        urgency = URGENCY[ticket["priority"]]
        written_urgency = ticket["snow_urgency"]
        if sys_id is None:
            sys_id, written_urgency = await _create_incident(conn, client, instance, tenant_id, ticket, urgency, now)
        if written_urgency != urgency:
            await _written(conn, ticket_id, await client.update_record(instance, sys_id, {"urgency": urgency}))
            await conn.execute("UPDATE support_tickets SET snow_urgency = $2 WHERE id = $1", ticket_id, urgency)
        for message in await conn.fetch("SELECT id, author, author_email, body FROM support_messages "
                                        "WHERE ticket_id = $1 AND snow_pending ORDER BY id", ticket_id):
            await _written(conn, ticket_id,
                           await client.update_record(instance, sys_id, {"work_notes": work_note(message)}))
            await conn.execute("UPDATE support_messages SET snow_pending = false, snow_noted_at = $2 WHERE id = $1",
                               message["id"], now)
        # After the notes: a reopening reply is noted before the incident leaves Resolved, and a
        # resolve comes after the last reply. Read again: a resolve or reopen may have committed
        # while the notes were posted (its own job then finds the ticket busy and defers).
        current = await conn.fetchrow("SELECT status, snow_incident_state FROM support_tickets WHERE id = $1", ticket_id)
        change = incident_state_change(current["status"], current["snow_incident_state"], ticket_id)
        if change is not None:
            await _written(conn, ticket_id, await client.update_record(instance, sys_id, change))
            await conn.execute("UPDATE support_tickets SET snow_incident_state = $2 WHERE id = $1",
                               ticket_id, change["state"])
    except ServiceNowError as exc:
        await conn.execute("UPDATE support_tickets SET snow_state = 'failed', snow_last_error = $2 WHERE id = $1",
                           ticket_id, f"{exc.code}: {exc.message}"[:_ERROR_CHARS])
        raise
    await conn.execute(
        """UPDATE support_tickets SET snow_last_error = NULL, snow_synced_at = $2,
               snow_state = CASE WHEN EXISTS (SELECT 1 FROM support_messages WHERE ticket_id = $1 AND snow_pending)
                                 THEN 'pending' ELSE 'synced' END
           WHERE id = $1""", ticket_id, now)


async def _written(conn: asyncpg.Connection, ticket_id: int, record: dict) -> None:
    """Remember the incident's sys_mod_count after our write: ServiceNow's posts about it (the
    business rule runs on our updates too) then carry no state to follow (inbound.py)."""
    count = str(record.get("sys_mod_count") or "")
    if count.isascii() and count.isdigit() and len(count) <= 9:
        await conn.execute("UPDATE support_tickets SET snow_written_mod_count = GREATEST(snow_written_mod_count, $2) "
                           "WHERE id = $1", ticket_id, int(count))


async def _create_incident(conn: asyncpg.Connection, client: ServiceNowClient, instance: Instance, tenant_id: str,
                           ticket: Any, urgency: str, now: datetime) -> tuple[str, str | None]:
    """(sys_id, the urgency the incident has) of the ticket's incident, made now or found."""
    ticket_id = ticket["id"]
    correlation = correlation_id(tenant_id, ticket_id)
    record = None
    if ticket["snow_create_sent_at"] is not None:  # an earlier create may have landed unanswered
        record = await client.find_by_correlation(instance, correlation)
    if record is None:
        first = await conn.fetchval("SELECT body FROM support_messages WHERE ticket_id = $1 ORDER BY id LIMIT 1",
                                    ticket_id)
        # Committed before the request: if its answer is lost, the next attempt looks up first.
        await conn.execute("UPDATE support_tickets SET snow_create_sent_at = $2 WHERE id = $1", ticket_id, now)
        record = await client.create_record(instance, {
            "short_description": ticket["subject"], "description": first or "", "caller_id": ticket["email"],
            "urgency": urgency, "category": "software", "subcategory": ticket["product_name"],
            "correlation_id": correlation, "correlation_display": "quota_gateway",
        })
    sys_id = str(record["sys_id"])
    number = record.get("number")
    written = str(record["urgency"]) if record.get("urgency") else None
    await conn.execute("UPDATE support_tickets SET snow_sys_id = $2, snow_number = $3, snow_urgency = $4 WHERE id = $1",
                       ticket_id, sys_id, str(number) if number else None, written)
    # The first message is the incident's description, not a work note.
    await conn.execute("UPDATE support_messages SET snow_pending = false, snow_noted_at = $2 WHERE id = "
                       "(SELECT min(id) FROM support_messages WHERE ticket_id = $1)", ticket_id, now)
    if number is None:
        log.info("ServiceNow answered incident %s without a number", sys_id)
    return sys_id, written


jobs.register(service.SYNC_JOB, sync_job)

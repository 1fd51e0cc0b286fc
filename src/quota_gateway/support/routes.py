"""Endpoints of support tickets and of the tenant's ServiceNow connection.

Permissions: creating a ticket needs `email` (the ExisOne SDKs' `send_support_ticket`); everything
a publisher's staff does (listing, reading, replying, status, priority, stats, ServiceNow settings)
needs `manage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import tenants
from ..answers import BOOLEAN, INTEGER, STRING, TIMESTAMP, answer, array, component, nullable, one_of, optional, page
from ..errors import ApiError
from ..jsonio import JSONResponse, read_body
from ..listing import PAGE_FIELDS
from ..routing import ApiRoute, Call, endpoint
from ..schema import Bool, Email, Query, Str, obj
from . import inbound, ratelimit, service, sync


@dataclass
class _Text(Str):
    """Text with its own error code when too long (`subject_too_long`, ...), so clients can tell
    the customer which part to shorten."""

    too_long_code: str = "invalid_field"

    def parse(self, value: Any, path: str) -> str:
        if isinstance(value, str) and len(value.strip() if self.strip else value) > self.max_len:
            raise ApiError(400, self.too_long_code, f"{path}: must be at most {self.max_len} characters",
                           field=path, maxLength=self.max_len)
        return super().parse(value, path)


_SUBJECT = _Text(required=True, min_len=1, max_len=service.SUBJECT_MAX, too_long_code="subject_too_long")
_MESSAGE = _Text(required=True, min_len=1, max_len=service.MESSAGE_MAX, strip=False, too_long_code="message_too_long",
                 description="plain text; HTML is kept as text (escape it when showing it)")
_PRIORITY = Str(max_len=16, description="Low, Medium, High or Critical (any case)")
_TICKET = obj(productName=Str(required=True, min_len=1, max_len=100), email=Email(required=True), subject=_SUBJECT,
              message=_MESSAGE, activationKey=Str(max_len=64, nullable=True), hardwareId=Str(max_len=256, nullable=True),
              version=Str(max_len=32, nullable=True), priority=_PRIORITY)
_REPLY = obj(message=_MESSAGE)
_STATUS = obj(status=Str(required=True, choices=service.STATUSES))
_PRIORITY_BODY = obj(priority=Str(required=True, max_len=16, description="Low, Medium, High or Critical"))
_LIST = Query({**PAGE_FIELDS, "status": Str(choices=service.STATUSES), "priority": _PRIORITY,
               "product": Str(max_len=100), "email": Str(max_len=254)})
_SETTINGS = obj(instanceUrl=Str(required=True, min_len=1, max_len=300, description="https://<instance>.service-now.com"),
                authType=Str(required=True, choices=("basic", "oauth")), username=Str(max_len=200, nullable=True),
                password=Str(max_len=500, strip=False, nullable=True, description="kept when left out"),
                clientId=Str(max_len=200, nullable=True),
                clientSecret=Str(max_len=500, strip=False, nullable=True, description="kept when left out"),
                table=Str(max_len=80, default="incident"), enabled=Bool(default=True))
# Answers (support.service.ticket_json, support.sync._view).
_PRIORITY_NAME = one_of(*service.PRIORITIES)
_STATUS_NAME = one_of(*service.STATUSES)
_TICKET_FIELDS = dict(
    id=INTEGER, productName=STRING, productId=nullable(INTEGER), email=STRING, subject=STRING, priority=_PRIORITY_NAME,
    status=_STATUS_NAME, activationKey=nullable(STRING), licenseId=nullable(INTEGER), hardwareId=nullable(STRING),
    version=nullable(STRING), messageCount=INTEGER, createdAt=TIMESTAMP, updatedAt=TIMESTAMP,
    resolvedAt=nullable(TIMESTAMP), reopenedAt=nullable(TIMESTAMP),
    serviceNow=answer(state=one_of("none", "pending", "synced", "failed"), sysId=nullable(STRING),
                      number=nullable(STRING), lastError=nullable(STRING), attempts=INTEGER,
                      syncedAt=nullable(TIMESTAMP)))
_TICKET_SHOWN = component("Ticket", answer(**_TICKET_FIELDS))
_TICKET_THREAD = component("TicketWithThread", answer(**_TICKET_FIELDS, messages=array(answer(
    id=INTEGER, author=one_of("customer", "staff"), authorEmail=nullable(STRING), message=STRING,
    createdAt=TIMESTAMP, fromServiceNow=BOOLEAN))))
_TICKET_CREATED = answer(success={"const": True}, ticketId=INTEGER, status=_STATUS_NAME, priority=_PRIORITY_NAME,
                         createdAt=TIMESTAMP)
_STATS = answer(open=INTEGER, resolved=INTEGER, critical=INTEGER, high=INTEGER, total=INTEGER)
_SETTINGS_SHOWN = answer(instanceUrl=STRING, authType=one_of("basic", "oauth"), username=nullable(STRING),
                         password=nullable(STRING), clientId=nullable(STRING), clientSecret=nullable(STRING),
                         grantType=nullable(one_of("password", "client_credentials")), table=STRING, enabled=BOOLEAN,
                         updatedAt=TIMESTAMP, inboundTokenSet=BOOLEAN)
_INBOUND_TOKEN = answer(token=STRING, inboundUrl=STRING)
_INBOUND_RECEIVED = answer(received={"const": True}, ticketId=INTEGER, applied=array(one_of("comment", "resolved",
                                                                                              "reopened")),
                           stale=BOOLEAN)
_TESTED = answer(ok=BOOLEAN, instanceUrl=STRING, table=STRING, authType=optional(STRING), failure=optional(STRING),
                 message=optional(STRING), remoteStatus=optional(nullable(INTEGER)))
_T = "support"
_SNOW = "servicenow"
_MAX_ID = 2**63 - 1


def _now(call: Call) -> datetime:
    return call.services.clock.utcnow()


def _ticket_id(call: Call) -> int:
    raw = call.path["ticket_id"]
    if not raw.isdigit() or int(raw) > _MAX_ID:
        raise ApiError(404, "ticket_not_found", f"no ticket {raw}")
    return int(raw)


async def create_ticket(call: Call) -> JSONResponse:
    """Open a support ticket (the ExisOne SDKs' send_support_ticket); answers its id."""
    assert call.principal is not None
    service.canonical_priority(call.body["priority"] or "Medium")  # refused input takes no slot
    state = sync.state(call.services)
    await ratelimit.take(call.services.runner, state.limits, call.tenant_id, call.principal.token_id,
                         call.body["email"], call.services.clock.now())
    async with call.services.pool.acquire() as conn:
        ticket = await service.create_ticket(conn, call.tenant_id, _now(call), call.body)
    return JSONResponse({"success": True, "ticketId": ticket["id"], "status": ticket["status"],
                         "priority": ticket["priority"], "createdAt": ticket["createdAt"]}, status_code=201)


async def list_tickets(call: Call) -> dict:
    """List tickets, newest first; filter by status, priority, product name, customer e-mail."""
    q = call.query
    async with call.services.pool.acquire() as conn:
        return await service.list_tickets(conn, call.tenant_id, page=q["page"], page_size=q["pageSize"],
                                          status=q["status"], priority=q["priority"], product=q["product"],
                                          email=q["email"])


async def ticket_stats(call: Call) -> dict:
    """Counts: open, resolved, and open tickets that are Critical or High."""
    async with call.services.pool.acquire() as conn:
        return await service.stats(conn, call.tenant_id)


async def get_ticket(call: Call) -> dict:
    """One ticket with its whole thread."""
    async with call.services.pool.acquire() as conn:
        return await service.get_ticket(conn, call.tenant_id, _ticket_id(call))


async def reply(call: Call) -> JSONResponse:
    """Staff reply: added to the thread and e-mailed to the customer."""
    async with call.services.pool.acquire() as conn:
        ticket = await service.add_staff_reply(conn, call.services.settings, call.tenant_id, _ticket_id(call), call.body["message"], _now(call))
    return JSONResponse(ticket, status_code=201)


async def set_status(call: Call) -> dict:
    """Resolve or reopen a ticket."""
    async with call.services.pool.acquire() as conn:
        return await service.set_status(conn, call.tenant_id, _ticket_id(call), call.body["status"], _now(call))


async def set_priority(call: Call) -> dict:
    """Change a ticket's priority."""
    async with call.services.pool.acquire() as conn:
        return await service.set_priority(conn, call.tenant_id, _ticket_id(call), call.body["priority"], _now(call))


async def resync(call: Call) -> dict:
    """Queue the ticket's ServiceNow sync again (after its retries ran out, or for an older ticket)."""
    async with call.services.pool.acquire() as conn:
        return await service.request_sync(conn, call.tenant_id, _ticket_id(call), _now(call))


async def get_settings(call: Call) -> dict:
    """The ServiceNow connection, secrets masked."""
    async with call.services.pool.acquire() as conn:
        return await sync.get_settings(conn, call.tenant_id, call.services.settings.master_key or "")


async def save_settings(call: Call) -> JSONResponse:
    """Create or replace the ServiceNow connection (a secret left out keeps the stored one)."""
    async with call.services.pool.acquire() as conn:
        view, created = await sync.save_settings(conn, call.tenant_id, call.services.settings.master_key or "", _now(call),
                                                 call.body, allow_private=call.services.settings.webhook_allow_private)
    return JSONResponse(view, status_code=201 if created else 200)


async def delete_settings(call: Call) -> dict:
    """Remove the ServiceNow connection; tickets stop syncing."""
    async with call.services.pool.acquire() as conn:
        await sync.delete_settings(conn, call.tenant_id)
    return {"deleted": True}


async def test_settings(call: Call) -> dict:
    """Try the saved connection and say what failed: DNS, TLS, credentials, rights, table."""
    return await sync.test_connection(call.services, call.tenant_id)


async def issue_inbound_token(call: Call) -> dict:
    """A new token for ServiceNow's posts to this tenant's inbound URL (shown once; the old one stops)."""
    async with call.services.pool.acquire() as conn:
        token = await inbound.issue_token(conn, call.tenant_id)
        slug = await tenants.slug_of(conn, call.tenant_id)
    return {"token": token, "inboundUrl": f"{str(call.request.base_url).rstrip('/')}/hooks/servicenow/{slug}"}


async def servicenow_hook(call: Call) -> dict:
    """ServiceNow posts an incident's change: its bearer token is the credential (no access token)."""
    raw = await read_body(call.request, _INBOUND_MAX_BYTES)
    s = call.services
    return await inbound.receive(s.pool, s.redis, s.settings, call.path["slug"], call.request.headers.get("authorization"),
                                 raw, _now(call))


_INBOUND_MAX_BYTES = 128 * 1024
_TICKET_ERRORS = ("ticket_not_found",)
_NOT_CONFIGURED = ("servicenow_not_configured",)

def _inbound_route() -> ApiRoute:
    route = endpoint("POST", "/hooks/servicenow/{slug}", servicenow_hook, scope=None, tag=_SNOW,
                     errors=("unauthorized", "ticket_not_found", "invalid_body", "invalid_field", "missing_field",
                             "message_too_long", "body_too_large"),
                     responses={200: "received (`stale` true: not newer than the last applied post)",
                                400: "not an incident post", 401: "not this tenant's inbound token",
                                404: "no ticket has that incident"},
                     returns=_INBOUND_RECEIVED)
    route.spec.raw_body = True
    return route


routes = [
    endpoint("POST", "/api/support/ticket", create_ticket, scope="email", body=_TICKET, tag=_T,
             errors=("subject_too_long", "message_too_long", "invalid_priority", "ticket_rate_limit_token",
                     "ticket_rate_limit_email", "unavailable"),
             responses={201: "created: ticketId", 429: "too many tickets from this token or address",
                        503: "rate limiter unreachable"}, returns=_TICKET_CREATED),
    endpoint("GET", "/api/support/tickets", list_tickets, scope="manage", query=_LIST, tag=_T,
             errors=("invalid_priority",), returns=page(_TICKET_SHOWN)),
    endpoint("GET", "/api/support/tickets/stats", ticket_stats, scope="manage", tag=_T, returns=_STATS),
    endpoint("GET", "/api/support/tickets/{ticket_id}", get_ticket, scope="manage", tag=_T, errors=_TICKET_ERRORS,
             responses={200: "the ticket and its messages", 404: "no such ticket"}, returns=_TICKET_THREAD),
    endpoint("POST", "/api/support/tickets/{ticket_id}/reply", reply, scope="manage", body=_REPLY, tag=_T,
             errors=(*_TICKET_ERRORS, "message_too_long"), responses={201: "replied; the ticket and its messages",
                                                                     404: "no such ticket"},
             returns=_TICKET_THREAD),
    endpoint("PUT", "/api/support/tickets/{ticket_id}/status", set_status, scope="manage", body=_STATUS, tag=_T,
             errors=_TICKET_ERRORS, responses={200: "the ticket", 404: "no such ticket"}, returns=_TICKET_SHOWN),
    endpoint("PUT", "/api/support/tickets/{ticket_id}/priority", set_priority, scope="manage", body=_PRIORITY_BODY,
             tag=_T, errors=(*_TICKET_ERRORS, "invalid_priority"), responses={200: "the ticket", 404: "no such ticket"},
             returns=_TICKET_SHOWN),
    endpoint("POST", "/api/support/tickets/{ticket_id}/sync", resync, scope="manage", tag=_T,
             errors=(*_TICKET_ERRORS, "servicenow_not_enabled"),
             responses={200: "queued; the ticket", 404: "no such ticket", 409: "ServiceNow is off"},
             returns=_TICKET_SHOWN),
    endpoint("GET", "/api/servicenow/settings", get_settings, scope="manage", tag=_SNOW, errors=_NOT_CONFIGURED,
             responses={200: "the settings, secrets masked", 404: "not configured"}, returns=_SETTINGS_SHOWN),
    endpoint("POST", "/api/servicenow/settings", save_settings, scope="manage", body=_SETTINGS, tag=_SNOW,
             errors=("invalid_instance_url", "url_not_allowed", "invalid_table"),
             responses={200: "replaced", 201: "created"}, returns=_SETTINGS_SHOWN),
    endpoint("DELETE", "/api/servicenow/settings", delete_settings, scope="manage", tag=_SNOW, errors=_NOT_CONFIGURED,
             responses={200: "deleted", 404: "not configured"}, returns=answer(deleted=BOOLEAN)),
    endpoint("POST", "/api/servicenow/inbound-token", issue_inbound_token, scope="manage", tag=_SNOW,
             errors=_NOT_CONFIGURED, responses={200: "the token (shown once) and the inbound URL",
                                                404: "not configured"}, returns=_INBOUND_TOKEN),
    _inbound_route(),
    endpoint("POST", "/api/servicenow/test", test_settings, scope="manage", tag=_SNOW, errors=_NOT_CONFIGURED,
             responses={200: "ok true, or ok false with `failure` (dns_failed, tls_failed, ...)",
                        404: "not configured"}, returns=_TESTED),
]

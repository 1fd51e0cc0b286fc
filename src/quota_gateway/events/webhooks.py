"""Outbound webhooks: endpoints, signing, fan-out from the outbox, delivery with its log.

Each (endpoint, event) pair is one delivery row, sent by `webhook.deliver` jobs (so the job
queue's claims, retries and crash recovery apply). An attempt claims its delivery row (under the
row's lock, with a lease, in the commit that records the attempt), so the same event never goes
to the same endpoint twice at once, whichever processes run the jobs (a manual redeliver
included). Every attempt is written before the request and completed after it: a worker killed
mid-request leaves a `sending` attempt, shown as `interrupted` once the delivery runs again.

Signatures (each over the exact body bytes sent):
  X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>, key = the secret
                       string as shown (`whsec_...`, UTF-8); comma-separated during a rotation
  X-Webhook-Timestamp: unix seconds of this attempt;  X-Webhook-Event: the event type
  webhook-id / webhook-timestamp / webhook-signature: Standard Webhooks, `v1,<base64 HMAC-SHA256>`
                       over "{id}.{timestamp}.{body}" keyed with the base64-decoded secret
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

from .. import crypto
from ..errors import ApiError
from ..formats import urls
from . import jobs, mailer, outbox, types

DELIVER_JOB = "webhook.deliver"
DISABLE_AFTER = 5              # failed attempts in a row
DELIVERY_STATES = ("pending", "succeeded", "failed", "skipped")
EXCERPT_CHARS = 2048
_SECRET_PURPOSE = "webhook-secret"


# --- secrets ----------------------------------------------------------------------------------------

def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _hint(secret: str) -> str:
    return secret[:10] + "…"


async def _add_secret(conn: asyncpg.Connection, settings: Any, tenant_id: str, endpoint_id: int,
                      now: datetime) -> str:
    secret = new_secret()
    await conn.execute("INSERT INTO webhook_secrets (endpoint_id, secret_enc, hint, created_at) VALUES ($1, $2, $3, $4)",
                       endpoint_id, crypto.seal(settings.master_key or "", tenant_id, _SECRET_PURPOSE, secret.encode()),
                       _hint(secret), now)
    return secret


async def signing_secrets(conn: asyncpg.Connection, settings: Any, tenant_id: str, endpoint_id: int,
                          now: datetime) -> list[str]:
    """The secrets that sign now, newest first: the current one and any still in their overlap."""
    rows = await conn.fetch("SELECT secret_enc FROM webhook_secrets WHERE endpoint_id = $1 "
                            "AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC", endpoint_id, now)
    return [crypto.unseal(settings.master_key or "", tenant_id, _SECRET_PURPOSE, bytes(r["secret_enc"])).decode()
            for r in rows]


def sign(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers for one attempt (every secret in `secrets_` signs)."""
    exiso = ",".join("sha256=" + hmac.new(s.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
                     for s in secrets_)
    standard = " ".join(
        "v1," + base64.b64encode(hmac.new(base64.b64decode(s.removeprefix("whsec_") + "=="),
                                          f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
        for s in secrets_)
    return {"X-Webhook-Signature": exiso, "X-Webhook-Timestamp": str(timestamp),
            "webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": standard}


# --- SSRF guard ------------------------------------------------------------------------------------

class DestinationRefused(Exception):
    """The URL's host is (or resolves to) an address webhooks may not reach."""


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def resolve(host: str, port: int, allow_private: bool) -> str:
    """One address to connect to; every address the name resolves to must be allowed (so a name
    with one public and one private address is refused), and the connection then goes to the
    address checked here, not to a second lookup (DNS rebinding)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise DestinationRefused(f"{host} has no address")
    if not allow_private:
        bad = [a for a in addresses if _forbidden(a)]
        if bad:
            raise DestinationRefused(f"{host} resolves to a non-public address ({bad[0]}); "
                                     "set QG_WEBHOOK_ALLOW_PRIVATE=1 to allow it")
    return addresses[0]


@dataclass(frozen=True)
class Pinned:
    """A request's URL with its host replaced by the address the guard checked, and what keeps the
    request the URL's: its Host header and (https) the name the TLS certificate must carry."""

    url: str
    host_header: str
    extensions: dict[str, Any] | None


async def pin(url: str, allow_private: bool) -> Pinned:
    """`url` pinned to an address `resolve` allowed; DestinationRefused otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = await resolve(host, port, allow_private)
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    return Pinned(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
                  parts.netloc.rsplit("@", 1)[-1], {"sni_hostname": host} if parts.scheme == "https" else None)


def refuse_private_host(host: str, field: str = "url") -> None:
    """400 url_not_allowed when `host` is localhost or a literal loopback, link-local or private address."""
    literal = None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise ApiError(400, "url_not_allowed", f"{field}: loopback destinations are not allowed",
                           field=field) from None
    if literal is not None and _forbidden(str(literal)):
        raise ApiError(400, "url_not_allowed", f"{field}: loopback, link-local and private addresses are not allowed",
                       field=field)


def check_url(url: str, allow_private: bool) -> str:
    """400 unless `url` is an absolute http(s) URL whose host is not a forbidden literal address."""
    urls.check_http_url(url)
    parts = urlsplit(url)
    if not allow_private:
        refuse_private_host(parts.hostname or "")  # check_http_url made sure there is one
    return url


# --- endpoints -------------------------------------------------------------------------------------

def check_event_types(names: list[str]) -> list[str]:
    allowed = set(types.ALL) | {"*"}
    unknown = sorted(set(names) - allowed)
    if unknown or not names:
        raise ApiError(400, "unknown_event_type", f"events: unknown event types: {', '.join(unknown)}" if unknown
                       else "events: name at least one event type, or \"*\"", field="events", known=list(types.ALL))
    return sorted(set(names))


_ENDPOINT_COLUMNS = """id, url, events, description, enabled, consecutive_failures, disabled_reason, disabled_at,
                       created_at, updated_at"""


def endpoint_json(row: asyncpg.Record, hints: list[str] | None = None) -> dict[str, Any]:
    out = {"id": row["id"], "url": row["url"], "events": list(row["events"]), "description": row["description"],
           "enabled": row["enabled"], "consecutiveFailures": row["consecutive_failures"],
           "disabledReason": row["disabled_reason"], "disabledAt": row["disabled_at"],
           "createdAt": row["created_at"], "updatedAt": row["updated_at"]}
    if hints is not None:
        out["secretHints"] = hints
    return out


async def _hints(conn: asyncpg.Connection, endpoint_id: int, now: datetime) -> list[str]:
    rows = await conn.fetch("SELECT hint FROM webhook_secrets WHERE endpoint_id = $1 "
                            "AND (expires_at IS NULL OR expires_at > $2) ORDER BY id DESC", endpoint_id, now)
    return [r["hint"] for r in rows]


async def create_endpoint(conn: asyncpg.Connection, settings: Any, tenant_id: str, now: datetime, *, url: str,
                          events: list[str], description: str, enabled: bool) -> dict[str, Any]:
    check_url(url, settings.webhook_allow_private)
    events = check_event_types(events)
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO webhook_endpoints (tenant_id, url, events, description, enabled, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {_ENDPOINT_COLUMNS}""",
            tenant_id, url, events, description, enabled, now)
        secret = await _add_secret(conn, settings, tenant_id, row["id"], now)
    return {**endpoint_json(row, [_hint(secret)]), "secret": secret}


async def get_endpoint(conn: asyncpg.Connection, tenant_id: str, endpoint_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2",
                              endpoint_id, tenant_id)
    if row is None:
        raise ApiError(404, "webhook_not_found", f"no webhook endpoint {endpoint_id}")
    return row


async def show_endpoint(conn: asyncpg.Connection, tenant_id: str, endpoint_id: int, now: datetime) -> dict[str, Any]:
    row = await get_endpoint(conn, tenant_id, endpoint_id)
    return endpoint_json(row, await _hints(conn, endpoint_id, now))


async def list_endpoints(conn: asyncpg.Connection, tenant_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id",
                            tenant_id)
    return [endpoint_json(r) for r in rows]


async def update_endpoint(conn: asyncpg.Connection, settings: Any, tenant_id: str, endpoint_id: int, now: datetime,
                          changes: dict[str, Any]) -> dict[str, Any]:
    current = await get_endpoint(conn, tenant_id, endpoint_id)
    url = check_url(changes["url"], settings.webhook_allow_private) if changes.get("url") is not None else current["url"]
    events = check_event_types(changes["events"]) if changes.get("events") is not None else list(current["events"])
    description = changes["description"] if changes.get("description") is not None else current["description"]
    enabled = changes["enabled"] if changes.get("enabled") is not None else current["enabled"]
    reenabled = enabled and not current["enabled"]
    row = await conn.fetchrow(
        f"""UPDATE webhook_endpoints SET url = $3, events = $4, description = $5, enabled = $6, updated_at = $7,
                consecutive_failures = CASE WHEN $8 THEN 0 ELSE consecutive_failures END,
                disabled_reason = CASE WHEN $6 THEN NULL WHEN NOT $6 AND enabled THEN 'disabled by the tenant'
                                       ELSE disabled_reason END,
                disabled_at = CASE WHEN $6 THEN NULL WHEN NOT $6 AND enabled THEN $7 ELSE disabled_at END
            WHERE id = $1 AND tenant_id = $2 RETURNING {_ENDPOINT_COLUMNS}""",
        endpoint_id, tenant_id, url, events, description, enabled, now, reenabled)
    return endpoint_json(row, await _hints(conn, endpoint_id, now))


async def delete_endpoint(conn: asyncpg.Connection, tenant_id: str, endpoint_id: int) -> None:
    status = await conn.execute("DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2", endpoint_id, tenant_id)
    if not status.endswith(" 1"):
        raise ApiError(404, "webhook_not_found", f"no webhook endpoint {endpoint_id}")


async def rotate_secret(conn: asyncpg.Connection, settings: Any, tenant_id: str, endpoint_id: int, now: datetime,
                        overlap_seconds: int) -> dict[str, Any]:
    """A new current secret; the previous ones keep signing for `overlap_seconds` more."""
    await get_endpoint(conn, tenant_id, endpoint_id)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR UPDATE", endpoint_id)
        overlap_end = now + timedelta(seconds=overlap_seconds)
        await conn.execute("UPDATE webhook_secrets SET expires_at = LEAST(COALESCE(expires_at, $2), $2) "
                           "WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > $3)",
                           endpoint_id, overlap_end, now)
        secret = await _add_secret(conn, settings, tenant_id, endpoint_id, now)
    return {"id": endpoint_id, "secret": secret, "previousSecretsExpireAt": overlap_end,
            "secretHints": await _hints(conn, endpoint_id, now)}


# --- fan-out ---------------------------------------------------------------------------------------

async def fan_out(conn: asyncpg.Connection, event: asyncpg.Record, envelope: dict[str, Any]) -> None:
    """One delivery (and its job) per enabled endpoint of the tenant subscribed to the event."""
    if event["type"] == types.WEBHOOK_PING:
        return
    endpoints = await conn.fetch("SELECT id FROM webhook_endpoints WHERE tenant_id = $1 AND enabled "
                                 "AND events && ARRAY[$2, '*']::text[] ORDER BY id", event["tenant_id"], event["type"])
    for endpoint in endpoints:
        delivery_id = await conn.fetchval(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING id",
            event["tenant_id"], endpoint["id"], event["id"], event["created_at"])
        if delivery_id is not None:
            await jobs.enqueue(conn, str(event["tenant_id"]), DELIVER_JOB, {"deliveryId": delivery_id},
                               dedupe_key=f"delivery:{delivery_id}")


# --- delivery --------------------------------------------------------------------------------------

@dataclass
class AttemptResult:
    delivery_id: int
    ok: bool
    attempt: int
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    skipped: bool = False

    def json(self) -> dict[str, Any]:
        return {"deliveryId": self.delivery_id, "delivered": self.ok, "attempt": self.attempt,
                "statusCode": self.status_code, "latencyMs": self.latency_ms, "error": self.error}


class DeliveryFailed(Exception):
    pass


def http_client(services: Any) -> httpx.AsyncClient:
    client: httpx.AsyncClient | None = services.webhook_http
    if client is None or client.is_closed:
        # No redirects: a 3xx is a failure (and following one could lead past the SSRF guard).
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                   limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        services.webhook_http = client
    return client


async def close_http_client(services: Any) -> None:
    client, services.webhook_http = services.webhook_http, None
    if client is not None:
        await client.aclose()


def _excerpt(text: str) -> str:
    return text[:EXCERPT_CHARS].replace("\x00", "")


async def _post(services: Any, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST to the address the SSRF guard checked (Host header and TLS name stay the URL's)."""
    timeout = services.settings.webhook_timeout
    pinned = await asyncio.wait_for(pin(url, services.settings.webhook_allow_private), timeout)
    response = await http_client(services).post(
        pinned.url, content=body, headers={**headers, "Host": pinned.host_header},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), extensions=pinned.extensions)
    return response.status_code, _excerpt(response.text)


def request_body(row: asyncpg.Record | dict[str, Any]) -> bytes:
    """The exact bytes a delivery sends: the event's envelope (from the row's uid, type, data,
    created_at and event_tenant), the same for every attempt."""
    return orjson.dumps(outbox.envelope({"uid": row["uid"], "type": row["type"], "data": row["data"],
                                         "created_at": row["created_at"], "tenant_id": row["event_tenant"]}))


async def attempt_delivery(services: Any, delivery_id: int, *, manual: bool = False,
                           last_try: bool = False) -> AttemptResult:
    """One attempt at one delivery. The delivery row is claimed for the attempt (under its row
    lock, with a lease) in the same commit that records the attempt, so two workers never send
    the same event to the same endpoint at once, and no transaction stays open during the request.
    A manual attempt (redeliver, ping) also goes to a disabled endpoint and leaves the failure
    streak alone."""
    settings, clock = services.settings, services.clock
    started = clock.utcnow()
    async with services.pool.acquire() as conn, conn.transaction():
        d = await conn.fetchrow(
            """SELECT d.id, d.tenant_id, d.endpoint_id, d.state, d.attempts, d.sending_until, e.url, e.enabled,
                      ev.uid, ev.type, ev.data, ev.created_at, ev.tenant_id AS event_tenant
               FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
               JOIN events ev ON ev.id = d.event_id
               WHERE d.id = $1 FOR NO KEY UPDATE OF d""", delivery_id)
        if d is None:  # the endpoint was deleted meanwhile
            return AttemptResult(delivery_id, True, 0, skipped=True)
        if d["sending_until"] is not None and d["sending_until"] > started:
            wait = (d["sending_until"] - started).total_seconds()
            raise jobs.Defer(wait + 0.05, "another worker is sending this event to this endpoint")
        if not manual and d["state"] != "pending":
            return AttemptResult(delivery_id, d["state"] == "succeeded", d["attempts"], skipped=True)
        if not manual and not d["enabled"]:
            await conn.execute("UPDATE webhook_deliveries SET state = 'skipped' WHERE id = $1", delivery_id)
            return AttemptResult(delivery_id, True, d["attempts"], skipped=True)
        tenant_id = str(d["tenant_id"])
        attempt = d["attempts"] + 1
        # An attempt still `sending` belongs to a worker that died mid-request.
        await conn.execute("UPDATE webhook_attempts SET outcome = 'interrupted', finished_at = $2, "
                           "error = 'the worker stopped before recording an outcome' "
                           "WHERE delivery_id = $1 AND outcome = 'sending'", delivery_id, started)
        await conn.execute("UPDATE webhook_deliveries SET attempts = $2, last_attempt_at = $3, sending_until = $4 "
                           "WHERE id = $1", delivery_id, attempt, started,
                           started + timedelta(seconds=settings.job_lease_seconds))
        secrets_ = await signing_secrets(conn, settings, tenant_id, d["endpoint_id"], started)
        body = request_body(d)
        headers = {"Content-Type": "application/json", "User-Agent": "quota-gateway-webhooks/1",
                   "X-Webhook-Event": d["type"], **sign(secrets_, f"evt_{d['uid'].hex}", int(clock.now()), body)}
        attempt_id = await conn.fetchval(
            "INSERT INTO webhook_attempts (delivery_id, attempt, manual, started_at, request_headers) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id", delivery_id, attempt, manual, started, headers)
    status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    began = time.perf_counter()
    try:
        status, excerpt = await _post(services, d["url"], body, headers)
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except DestinationRefused as exc:
        error = str(exc)
    except (TimeoutError, httpx.TimeoutException):
        error = f"timed out after {settings.webhook_timeout:g} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    latency_ms = int((time.perf_counter() - began) * 1000)
    ok = error is None
    finished = clock.utcnow()
    # Success settles the delivery; a failure does once its retries are used up (not a manual one).
    state = "succeeded" if ok else ("failed" if last_try and not manual else None)
    async with services.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE webhook_attempts SET outcome = $2, finished_at = $3, status_code = $4, latency_ms = $5, "
            "response_excerpt = $6, error = $7 WHERE id = $1",
            attempt_id, "succeeded" if ok else "failed", finished, status, latency_ms, excerpt, error)
        await conn.execute("UPDATE webhook_deliveries SET sending_until = NULL, "
                           "state = COALESCE($2::text, state) WHERE id = $1", delivery_id, state)
        if not manual:
            await _track_streak(conn, settings, tenant_id, d["endpoint_id"], d["url"], ok, status, error, finished)
    return AttemptResult(delivery_id, ok, attempt, status, latency_ms, error)


async def _track_streak(conn: asyncpg.Connection, settings: Any, tenant_id: str, endpoint_id: int, url: str, ok: bool,
                        status: int | None, error: str | None, now: datetime) -> None:
    if ok:
        await conn.execute("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1", endpoint_id)
        return
    row = await conn.fetchrow("UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 "
                              "WHERE id = $1 RETURNING consecutive_failures, enabled", endpoint_id)
    gone = status == 410  # the receiver says the endpoint is gone for good
    if row["enabled"] and (row["consecutive_failures"] >= DISABLE_AFTER or gone):
        reason = ("the receiver answered 410 Gone" if gone
                  else f"{row['consecutive_failures']} failed delivery attempts in a row")
        await conn.execute("UPDATE webhook_endpoints SET enabled = false, disabled_at = $2, disabled_reason = $3, "
                           "updated_at = $2 WHERE id = $1", endpoint_id, now, reason)
        contact = (await mailer.mail_settings(conn, tenant_id))["contactEmail"]
        if contact:
            await mailer.queue_mail(conn, settings, tenant_id, "endpoint_disabled", contact,
                                    {"EndpointUrl": url, "EndpointId": endpoint_id,
                                     "FailureCount": row["consecutive_failures"], "LastError": error or ""},
                                    dedupe_key=f"endpoint-disabled:{endpoint_id}:{int(now.timestamp())}")


async def _deliver_job(services: Any, job: jobs.Job) -> None:
    manual = bool(job.payload.get("manual"))
    result = await attempt_delivery(services, job.payload["deliveryId"], manual=manual, last_try=job.last_attempt)
    if not result.ok:
        raise DeliveryFailed(result.error or "delivery failed")


async def redeliver(conn: asyncpg.Connection, tenant_id: str, endpoint_id: int, delivery_id: int) -> dict[str, Any]:
    """Queue one more attempt of a past delivery (one try, no retries), even to a disabled endpoint."""
    await get_endpoint(conn, tenant_id, endpoint_id)
    found = await conn.fetchval("SELECT 1 FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 AND tenant_id = $3",
                                delivery_id, endpoint_id, tenant_id)
    if not found:
        raise ApiError(404, "delivery_not_found", f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
    job_id = await jobs.enqueue(conn, tenant_id, DELIVER_JOB, {"deliveryId": delivery_id, "manual": True},
                                max_attempts=1)
    return {"queued": True, "deliveryId": delivery_id, "jobId": job_id}


async def ping(services: Any, tenant_id: str, endpoint_id: int) -> dict[str, Any]:
    """Send a `webhook.ping` event to this endpoint now and answer how it went."""
    now = services.clock.utcnow()
    async with services.pool.acquire() as conn, conn.transaction():
        await get_endpoint(conn, tenant_id, endpoint_id)
        event_id = await conn.fetchval(
            "INSERT INTO events (tenant_id, type, data, created_at, delivered_at) VALUES ($1, $2, $3, $4, $4) "
            "RETURNING id", tenant_id, types.WEBHOOK_PING, {"endpointId": endpoint_id}, now)
        delivery_id = await conn.fetchval(
            "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, created_at) VALUES ($1, $2, $3, $4) "
            "RETURNING id", tenant_id, endpoint_id, event_id, now)
    result = await attempt_delivery(services, delivery_id, manual=True)
    if not result.ok:   # a ping is one try: nothing retries it, so its delivery is settled, not pending
        async with services.pool.acquire() as conn:
            await conn.execute("UPDATE webhook_deliveries SET state = 'failed' WHERE id = $1 AND state = 'pending'",
                               delivery_id)
    return result.json()


_ATTEMPT_COLUMNS = ("attempt, manual, started_at, finished_at, outcome, status_code, latency_ms, response_excerpt, "
                    "error, request_headers")


def _attempt_json(a: asyncpg.Record) -> dict[str, Any]:
    return {"attempt": a["attempt"], "manual": a["manual"], "startedAt": a["started_at"],
            "finishedAt": a["finished_at"], "outcome": a["outcome"], "statusCode": a["status_code"],
            "latencyMs": a["latency_ms"], "responseExcerpt": a["response_excerpt"], "error": a["error"],
            "requestHeaders": a["request_headers"]}


async def deliveries(conn: asyncpg.Connection, tenant_id: str, endpoint_id: int, *, limit: int,
                     before: int | None, state: str | None = None, event_type: str | None = None) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with every attempt; `state` and
    `event_type` (None: any) narrow the list, `before` pages through it."""
    await get_endpoint(conn, tenant_id, endpoint_id)
    rows = await conn.fetch(
        """SELECT d.id, d.state, d.attempts, d.created_at, d.last_attempt_at, ev.uid, ev.type
           FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id
           WHERE d.endpoint_id = $1 AND d.tenant_id = $2 AND ($3::bigint IS NULL OR d.id < $3)
             AND ($5::text IS NULL OR d.state = $5) AND ($6::text IS NULL OR ev.type = $6)
           ORDER BY d.id DESC LIMIT $4""", endpoint_id, tenant_id, before, limit, state, event_type)
    attempts: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if rows:
        for a in await conn.fetch(f"SELECT delivery_id, {_ATTEMPT_COLUMNS} FROM webhook_attempts "
                                  "WHERE delivery_id = ANY($1::bigint[]) ORDER BY id", list(attempts)):
            attempts[a["delivery_id"]].append(_attempt_json(a))
    items = [{"id": r["id"], "eventId": f"evt_{r['uid'].hex}", "eventType": r["type"], "state": r["state"],
              "attempts": r["attempts"], "createdAt": r["created_at"], "lastAttemptAt": r["last_attempt_at"],
              "log": attempts[r["id"]]} for r in rows]
    return {"deliveries": items, "nextBefore": rows[-1]["id"] if len(rows) == limit else None}


# --- reading for the admin UI ------------------------------------------------------------------------

async def endpoints_overview(conn: asyncpg.Connection, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's endpoints, each with its current secret's hint and its latest attempt
    (outcome, response code, when): the admin UI's list."""
    rows = await conn.fetch(
        f"""SELECT {_ENDPOINT_COLUMNS}, s.hint, last.outcome AS last_outcome,
                   last.status_code AS last_status_code, last.started_at AS last_attempt_at
            FROM webhook_endpoints e
            LEFT JOIN LATERAL (SELECT hint FROM webhook_secrets WHERE endpoint_id = e.id AND expires_at IS NULL
                               ORDER BY id DESC LIMIT 1) s ON true
            LEFT JOIN LATERAL (SELECT a.outcome, a.status_code, a.started_at
                               FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
                               WHERE d.endpoint_id = e.id ORDER BY a.id DESC LIMIT 1) last ON true
            WHERE e.tenant_id = $1 ORDER BY e.id""", tenant_id)
    return [{**endpoint_json(r), "secretHint": r["hint"], "lastOutcome": r["last_outcome"],
             "lastStatusCode": r["last_status_code"], "lastAttemptAt": r["last_attempt_at"]} for r in rows]


async def delivery_log(conn: asyncpg.Connection, tenant_id: str, *, endpoint_id: int | None, limit: int,
                       before: int | None, state: str | None = None) -> dict[str, Any]:
    """Deliveries of the tenant (of one endpoint, or of all), newest first, each with its latest
    attempt's response code, latency and error; `state` narrows, `before` pages."""
    rows = await conn.fetch(
        """SELECT d.id, d.endpoint_id, e.url, d.state, d.attempts, d.created_at, d.last_attempt_at, ev.uid, ev.type,
                  a.status_code, a.latency_ms, a.error, a.outcome
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
           JOIN events ev ON ev.id = d.event_id
           LEFT JOIN LATERAL (SELECT status_code, latency_ms, error, outcome FROM webhook_attempts
                              WHERE delivery_id = d.id ORDER BY id DESC LIMIT 1) a ON true
           WHERE d.tenant_id = $1 AND ($2::bigint IS NULL OR d.endpoint_id = $2)
             AND ($3::bigint IS NULL OR d.id < $3) AND ($4::text IS NULL OR d.state = $4)
           ORDER BY d.id DESC LIMIT $5""", tenant_id, endpoint_id, before, state, limit)
    items = [{"id": r["id"], "endpointId": r["endpoint_id"], "url": r["url"], "eventId": f"evt_{r['uid'].hex}",
              "eventType": r["type"], "state": r["state"], "attempts": r["attempts"], "createdAt": r["created_at"],
              "lastAttemptAt": r["last_attempt_at"], "statusCode": r["status_code"], "latencyMs": r["latency_ms"],
              "error": r["error"], "outcome": r["outcome"]} for r in rows]
    return {"deliveries": items, "nextBefore": rows[-1]["id"] if len(rows) == limit else None}


async def delivery_detail(conn: asyncpg.Connection, tenant_id: str, delivery_id: int) -> dict[str, Any]:
    """One delivery of the tenant: its endpoint, the request body it sends, and every attempt with
    the headers it went with and the response."""
    d = await conn.fetchrow(
        """SELECT d.id, d.endpoint_id, e.url, d.state, d.attempts, d.created_at, d.last_attempt_at,
                  ev.uid, ev.type, ev.data, ev.created_at AS event_created_at, ev.tenant_id AS event_tenant
           FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
           JOIN events ev ON ev.id = d.event_id
           WHERE d.id = $1 AND d.tenant_id = $2""", delivery_id, tenant_id)
    if d is None:
        raise ApiError(404, "delivery_not_found", f"no webhook delivery {delivery_id}")
    attempts = await conn.fetch(f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
                                delivery_id)
    body = request_body({**dict(d), "created_at": d["event_created_at"]})
    return {"id": d["id"], "endpointId": d["endpoint_id"], "url": d["url"], "state": d["state"],
            "attempts": d["attempts"], "createdAt": d["created_at"], "lastAttemptAt": d["last_attempt_at"],
            "eventId": f"evt_{d['uid'].hex}", "eventType": d["type"], "body": body.decode(),
            "log": [_attempt_json(a) for a in attempts]}


jobs.register(DELIVER_JOB, _deliver_job)
jobs.add_fanout(fan_out)

"""Domain events through one interface: an outbox row in the same transaction as the change.

`emit` only writes the row (and a NOTIFY that fires on commit); the dispatcher in jobs.py later
claims undispatched rows and fans each out as jobs: one webhook delivery per subscribed endpoint
and one job per in-process subscriber (`subscribe`). Code raising events never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ..clock import iso_utc

# In-process subscribers: event type (or "*") -> job kinds enqueued for each such event.
_SUBSCRIBERS: dict[str, list[str]] = {}

NOTIFY_CHANNEL = "qg_jobs"


def subscribe(event_type: str, job_kind: str) -> None:
    """Run job `job_kind` (payload: the event envelope) for every event of `event_type` ("*": all).
    Registered at import time by the domain that handles it."""
    kinds = _SUBSCRIBERS.setdefault(event_type, [])
    if job_kind not in kinds:
        kinds.append(job_kind)


def subscribers(event_type: str) -> list[str]:
    return [*_SUBSCRIBERS.get(event_type, ()), *_SUBSCRIBERS.get("*", ())]


async def emit(conn: asyncpg.Connection, tenant_id: str, event_type: str, data: dict[str, Any],
               *, at: datetime | None = None) -> int:
    """Record an event in the caller's transaction; returns its row id. `at` (default: the
    database's now) is the event's timestamp, for callers that run on the injectable clock."""
    event_id: int = await conn.fetchval(
        "INSERT INTO events (tenant_id, type, data, created_at) VALUES ($1, $2, $3, COALESCE($4, now())) RETURNING id",
        tenant_id, event_type, data, at)
    await conn.execute("SELECT pg_notify($1, 'event')", NOTIFY_CHANNEL)
    return event_id


async def emit_many(conn: asyncpg.Connection,
                    events: Sequence[tuple[str, str, dict[str, Any], datetime | None]]) -> int:
    """Record several events, `(tenant_id, type, data, at)` each, in the caller's transaction with
    one statement (write-behind loops raise one per history entry); returns how many."""
    if not events:
        return 0
    await conn.execute(
        """INSERT INTO events (tenant_id, type, data, created_at)
           SELECT t.tenant_id, t.type, t.data, COALESCE(t.at, now())
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[]) WITH ORDINALITY
                AS t(tenant_id, type, data, at, n) ORDER BY t.n""",
        [e[0] for e in events], [e[1] for e in events], [e[2] for e in events], [e[3] for e in events])
    await conn.execute("SELECT pg_notify($1, 'event')", NOTIFY_CHANNEL)
    return len(events)


def envelope(row: asyncpg.Record | dict) -> dict[str, Any]:
    """What subscribers and webhook receivers get: id, type, UTC timestamp, tenant, data."""
    return {"id": f"evt_{row['uid'].hex}", "type": row["type"], "timestamp": iso_utc(row["created_at"]),
            "tenantId": str(row["tenant_id"]), "data": row["data"]}


async def pending(conn: asyncpg.Connection, tenant_id: str, limit: int = 100) -> list[dict]:
    """Events of the tenant not yet fanned out to their subscribers, oldest first."""
    rows = await conn.fetch("SELECT id, type, data, created_at FROM events WHERE tenant_id = $1 AND delivered_at IS NULL "
                            "ORDER BY id LIMIT $2", tenant_id, limit)
    return [dict(r) for r in rows]


async def recent(conn: asyncpg.Connection, tenant_id: str, limit: int = 50) -> list[dict]:
    rows = await conn.fetch("SELECT id, uid, tenant_id, type, data, created_at FROM events WHERE tenant_id = $1 "
                            "ORDER BY id DESC LIMIT $2", tenant_id, limit)
    return [envelope(r) for r in rows]

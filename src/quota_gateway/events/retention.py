"""Retention: finished jobs, settled webhook deliveries (with their attempt log) and fanned-out
outbox events older than `QG_EVENTS_RETENTION_DAYS` are deleted.

A periodic task of every job worker; one process per `QG_RETENTION_INTERVAL` does the work: the
run is claimed by moving `maintenance_runs.next_run_at` forward (one UPDATE wins). Deletes go in
bounded batches of rows locked with SKIP LOCKED, so a run never holds many locks for long, and a
second process that somehow ran at the same time would skip the first one's rows, not wait.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from . import jobs, webhooks

log = logging.getLogger("quota_gateway.events.retention")

TASK = "events.retention"
BATCH = 5000
MAX_BATCHES = 20  # per table and run; a run that hits it is due again at once

# Each statement deletes one batch of rows older than $1 (the cutoff), at most $2 of them.
_JOBS = """DELETE FROM jobs WHERE id IN (
               SELECT id FROM jobs WHERE state IN ('succeeded', 'failed') AND finished_at < $1
               LIMIT $2 FOR UPDATE SKIP LOCKED)"""
# A delivery goes once settled, or when nothing will ever try it again (a failed manual ping
# leaves it pending with no job behind it).
_DELIVERIES = f"""DELETE FROM webhook_deliveries WHERE id IN (
               SELECT d.id FROM webhook_deliveries d
               WHERE COALESCE(d.last_attempt_at, d.created_at) < $1
                 AND (d.state <> 'pending' OR NOT EXISTS (
                      SELECT 1 FROM jobs j WHERE j.tenant_id = d.tenant_id AND j.kind = '{webhooks.DELIVER_JOB}'
                        AND j.dedupe_key = 'delivery:' || d.id AND j.state IN ('pending', 'running')))
               LIMIT $2 FOR UPDATE OF d SKIP LOCKED)"""
# An event goes once fanned out and no delivery of it is left (deliveries are deleted first).
_EVENTS = """DELETE FROM events WHERE id IN (
               SELECT e.id FROM events e WHERE e.delivered_at < $1
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)
               LIMIT $2 FOR UPDATE OF e SKIP LOCKED)"""
_STATEMENTS = (("jobs", _JOBS), ("webhookDeliveries", _DELIVERIES), ("events", _EVENTS))


async def claim(conn: asyncpg.Connection, now: datetime, interval: float) -> bool:
    """True when this process won the run that is due now (and moved the next one on)."""
    await conn.execute("INSERT INTO maintenance_runs (name, next_run_at) VALUES ($1, '-infinity') "
                       "ON CONFLICT DO NOTHING", TASK)
    won = await conn.fetchval("UPDATE maintenance_runs SET next_run_at = $2, last_run_at = $3 "
                              "WHERE name = $1 AND next_run_at <= $3 RETURNING 1",
                              TASK, now + timedelta(seconds=interval), now)
    return bool(won)


async def purge(conn: asyncpg.Connection, cutoff: datetime) -> tuple[dict[str, int], bool]:
    """Delete what is older than `cutoff`; returns (rows deleted per kind, whether more is left)."""
    deleted: dict[str, int] = {}
    more = False
    for name, statement in _STATEMENTS:
        count = 0
        for _ in range(MAX_BATCHES):
            status = await conn.execute(statement, cutoff, BATCH)
            batch = int(status.rsplit(" ", 1)[-1])
            count += batch
            if batch < BATCH:
                break
        else:
            more = True
        deleted[name] = count
    return deleted, more


async def run(services: Any) -> int:
    """The periodic task: purge when this process wins the due run; returns rows deleted."""
    settings = services.settings
    now = services.clock.utcnow()
    async with services.pool.acquire() as conn:
        if not await claim(conn, now, settings.retention_interval):
            return 0
        deleted, more = await purge(conn, now - timedelta(days=settings.events_retention_days))
        await conn.execute("UPDATE maintenance_runs SET last_result = $2, "
                           "next_run_at = CASE WHEN $3 THEN $4 ELSE next_run_at END WHERE name = $1",
                           TASK, {**deleted, "moreLeft": more}, more, now)
    total = sum(deleted.values())
    if total:
        log.info("retention: deleted %s", ", ".join(f"{n} {name}" for name, n in deleted.items()))
    return total


jobs.add_periodic(run)

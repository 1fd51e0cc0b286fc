"""Domain events through one interface: an outbox row in the same transaction as the change.

Delivery (webhooks, e-mail) reads undelivered rows later; code raising events never changes.
"""

from __future__ import annotations

import asyncpg

LICENSE_CREATED = "license.created"
LICENSE_ACTIVATED = "license.activated"
LICENSE_EXPIRED = "license.expired"
LICENSE_REVOKED = "license.revoked"
VALIDATION_FAILED = "license.validation.failed"  # the ExisOne webhook document's name
DEVICE_DEACTIVATED = "device.deactivated"
API_LICENSE_CREATED = "api.license.created"
API_LICENSE_REVOKED = "api.license.revoked"


async def emit(conn: asyncpg.Connection, tenant_id: str, event_type: str, data: dict) -> None:
    await conn.execute("INSERT INTO events (tenant_id, type, data) VALUES ($1, $2, $3)", tenant_id, event_type, data)


async def pending(conn: asyncpg.Connection, tenant_id: str, limit: int = 100) -> list[dict]:
    rows = await conn.fetch("SELECT id, type, data, created_at FROM events WHERE tenant_id = $1 AND delivered_at IS NULL "
                            "ORDER BY id LIMIT $2", tenant_id, limit)
    return [dict(r) for r in rows]

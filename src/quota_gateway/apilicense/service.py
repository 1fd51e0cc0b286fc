"""API-key licensing's management logic: issue, revoke, usage, reset (REST routes and the admin UI)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import asyncpg

from .. import catalogue, fastpath
from ..clock import iso_utc
from ..errors import ApiError
from .engine import LicenseRef, QuotaEngine, key_digest

PERIODS = ("minute", "hour", "day", "month")
COLUMNS = """l.id, l.key_digest, l.bucket, l.key_hint, l.email, l.client_name, l.client_identifier, l.max_api_calls,
             l.expires_at, l.revoked_at, l.created_at, l.product_id, p.name AS product_name"""


def mask(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}"


def license_json(row, now: float) -> dict:
    expires = row["expires_at"]
    status = "revoked" if row["revoked_at"] else "expired" if expires and expires.timestamp() <= now else "active"
    return {"id": row["id"], "apiKey": row["key_hint"], "productId": row["product_id"], "productName": row["product_name"],
            "email": row["email"], "clientName": row["client_name"], "clientIdentifier": row["client_identifier"],
            "maxApiCalls": row["max_api_calls"], "expirationDate": iso_utc(expires), "status": status,
            "createdAt": iso_utc(row["created_at"]), "revokedAt": iso_utc(row["revoked_at"])}


def ref_of(row) -> LicenseRef:
    return LicenseRef.from_row(row["key_digest"], row["bucket"])


async def find_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int):
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM api_licenses l JOIN products p ON p.id = l.product_id "
                              "WHERE l.id = $1 AND l.tenant_id = $2", license_id, tenant_id)
    if row is None:
        raise ApiError(404, "not_found", "no such API key")
    return row


async def create_key(conn: asyncpg.Connection, engine: QuotaEngine, tenant_id: str, now: datetime, *, product_id: int,
                     email: str = "", client_name: str = "", client_identifier: str = "",
                     validity_days: int | None = None, max_api_calls: int | None = None) -> dict:
    """Issue an API key; the returned dict is the only place the full key appears."""
    key = fastpath.generate_api_key(secrets.token_bytes(16))
    expires = now + timedelta(days=validity_days) if validity_days else None
    product = await catalogue.get_product(conn, tenant_id, product_id)
    row = await conn.fetchrow(
        """INSERT INTO api_licenses (tenant_id, product_id, key_digest, bucket, key_hint, email, client_name,
                                     client_identifier, max_api_calls, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
        tenant_id, product_id, key_digest(key), fastpath.api_key_bucket(key), mask(key), email, client_name,
        client_identifier, max_api_calls, expires)
    await engine.prime(LicenseRef(key), row["id"])
    return {"id": row["id"], "apiKey": key, "expirationDate": iso_utc(expires), "maxApiCalls": max_api_calls,
            "productId": product_id, "productName": product["name"], "clientName": client_name,
            "clientIdentifier": client_identifier, "email": email}


async def revoke_key(conn: asyncpg.Connection, engine: QuotaEngine, row, now: datetime) -> dict:
    await conn.execute("UPDATE api_licenses SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", row["id"], now)
    await engine.invalidate(ref_of(row))
    return {"revoked": True, "apiKey": row["key_hint"]}


async def usage(conn: asyncpg.Connection, engine: QuotaEngine, tenant_id: str, row) -> dict:
    """Lifetime and per-window usage now (from Redis), and usage by day (from the write-behind record)."""
    history = await conn.fetch("SELECT day, units FROM api_usage_daily WHERE license_id = $1 ORDER BY day", row["id"])
    outcome = await engine.run(ref_of(row), tenant_id, 0, False)
    if outcome is None:
        raise ApiError(404, "not_found", "no such API key")
    document = outcome.document()
    return {"apiKey": row["key_hint"], "quota": document["quota"], "rateLimits": document["rateLimits"],
            "history": [{"date": r["day"].isoformat(), "units": r["units"]} for r in history]}


async def reset(pool: asyncpg.Pool, engine: QuotaEngine, tenant_id: str, row, period_type: str) -> dict:
    """Reset the lifetime counter ('lifetime'), one window ('minute'...'month'), or everything ('all')."""
    ref = ref_of(row)
    if period_type in ("all", "lifetime"):
        # The offset makes "used" zero without rewriting history: used = total - offset. It is set
        # to the total (Redis's, so unflushed usage counts), never raised by "used": concurrent
        # resets then agree, and the offset only ever grows.
        total = await engine.lifetime_total(ref, row["id"])
        async with pool.acquire() as conn:
            await conn.execute("UPDATE api_licenses SET used_offset = GREATEST(used_offset, $2) WHERE id = $1",
                               row["id"], total)
        await engine.invalidate(ref)
    periods = list(PERIODS) if period_type == "all" else [period_type] if period_type in PERIODS else []
    if periods:
        await engine.reset_windows(ref, row["id"], periods)
    return {"apiKey": row["key_hint"], "reset": period_type}

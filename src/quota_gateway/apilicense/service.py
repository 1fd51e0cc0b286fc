"""API-key licensing's management logic and SQL: issue, list, change, revoke, usage, reset (the
REST routes and the admin UI call these).

Functions take a connection (or the pool, when they release it before calling Redis), and the
engine when a change must reach the keys cached in Redis.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .. import catalogue, events, fastpath
from ..abuse import negative
from ..clock import iso_utc
from ..errors import ApiError
from ..formats.digests import sha256
from ..listing import Where, fetch_page
from ..schema import UNSET
from ..scripts import ScriptRunner
from . import keyspace
from .engine import QuotaEngine
from .keyspace import LicenseRef

PERIODS = fastpath.PERIODS  # the windows a reset can name (besides "all" and "lifetime")
COLUMNS = """l.id, l.tenant_id, l.key_digest, l.bucket, l.key_hint, l.email, l.client_name, l.client_identifier,
             l.max_api_calls, l.expires_at, l.revoked_at, l.created_at, l.product_id, l.imported,
             p.name AS product_name"""
_FROM = "api_licenses l JOIN products p ON p.id = l.product_id"


def mask(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}"


def mask_imported(key: str) -> str:
    """An imported key may be as short as 8 characters: show at most its first and last four."""
    return f"{key[:4]}…{key[-4:]}" if len(key) >= 12 else f"{key[:2]}…{key[-2:]}"


def license_json(row: Any, now: float) -> dict:
    expires = row["expires_at"]
    status = "revoked" if row["revoked_at"] else "expired" if expires and expires.timestamp() <= now else "active"
    return {"id": row["id"], "apiKey": row["key_hint"], "productId": row["product_id"], "productName": row["product_name"],
            "email": row["email"], "clientName": row["client_name"], "clientIdentifier": row["client_identifier"],
            "maxApiCalls": row["max_api_calls"], "expirationDate": iso_utc(expires), "status": status,
            "createdAt": iso_utc(row["created_at"]), "revokedAt": iso_utc(row["revoked_at"]), "imported": row["imported"]}


def ref_of(row: Any) -> LicenseRef:
    return LicenseRef.from_row(row["key_digest"], row["bucket"])


def canonical_key(raw_key: str) -> str | None:
    """One of our keys, or a key imported from elsewhere, in canonical form (None: neither)."""
    return fastpath.normalize_api_key(raw_key) or fastpath.normalize_imported_key(raw_key)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such API key")


async def find(conn: asyncpg.Connection, tenant_id: str, raw_key: str) -> Any:
    """The tenant's license row for a key (ours, or one imported from elsewhere), or 404 not_found."""
    key = canonical_key(raw_key)
    row = None
    if key is not None:
        row = await conn.fetchrow(f"SELECT {COLUMNS} FROM {_FROM} WHERE l.key_digest = $1 AND l.tenant_id = $2",
                                  sha256(key), tenant_id)
    if row is None:
        raise _not_found()
    return row


async def find_by_id(conn: asyncpg.Connection, tenant_id: str, license_id: int) -> Any:
    """The tenant's license row by id (the admin UI only knows masked keys), or 404 not_found."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM {_FROM} WHERE l.id = $1 AND l.tenant_id = $2",
                              license_id, tenant_id)
    if row is None:
        raise _not_found()
    return row


async def create_key(conn: asyncpg.Connection, engine: QuotaEngine, tenant_id: str, now: datetime, *, product_id: int,
                     email: str = "", client_name: str = "", client_identifier: str = "",
                     validity_days: int | None = None, max_api_calls: int | None = None) -> dict:
    """Issue an API key; the returned dict is the only place the full key appears."""
    key = fastpath.generate_api_key(secrets.token_bytes(16))
    expires = now + timedelta(days=validity_days) if validity_days else None
    product = await catalogue.get_product(conn, tenant_id, product_id)
    if email:  # a new portal customer: no stale negative sign-in entry (abuse.negative)
        await negative.forget(engine.services.redis, negative.sign_in(tenant_id, "portal", email))
    async with conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO api_licenses (tenant_id, product_id, key_digest, bucket, key_hint, email, client_name,
                                         client_identifier, max_api_calls, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
            tenant_id, product_id, sha256(key), fastpath.api_key_bucket(key), mask(key), email, client_name,
            client_identifier, max_api_calls, expires)
        await events.emit(conn, tenant_id, events.API_LICENSE_CREATED,
                          {"apiLicenseId": row["id"], "productId": product_id, "apiKey": mask(key), "email": email,
                           "clientIdentifier": client_identifier})
    await engine.prime(LicenseRef(key))
    return {"id": row["id"], "apiKey": key, "expirationDate": iso_utc(expires), "maxApiCalls": max_api_calls,
            "productId": product_id, "productName": product["name"], "clientName": client_name,
            "clientIdentifier": client_identifier, "email": email}


async def import_keys(conn: asyncpg.Connection, engine: QuotaEngine, tenant_id: str, product_id: int,
                      keys: list[dict]) -> dict:
    """Register API keys issued by another licensing server, with their terms (`keys` items:
    apiKey, email, clientName, clientIdentifier, maxApiCalls, usedApiCalls, expiresAt). Stored
    as digests like ours; all or nothing."""
    rows, seen = [], set()
    for i, item in enumerate(keys):
        key = fastpath.normalize_imported_key(item["apiKey"])
        if key is None:
            raise ApiError(400, "invalid_key_format", f"keys[{i}].apiKey: {fastpath.IMPORTED_MIN_LEN} to "
                           f"{fastpath.IMPORTED_MAX_LEN} letters, digits, '_' or '.' (dashes and spaces are ignored), "
                           "not starting with qgk_", field=f"keys[{i}].apiKey")
        if key in seen:
            raise ApiError(400, "duplicate_key", f"keys[{i}].apiKey: listed twice", field=f"keys[{i}].apiKey")
        seen.add(key)
        rows.append((key, item))
    product = await catalogue.get_product(conn, tenant_id, product_id)
    for email in {item["email"] for _, item in rows if item["email"]}:  # new portal customers (abuse.negative)
        await negative.forget(engine.services.redis, negative.sign_in(tenant_id, "portal", email))
    made = []
    async with conn.transaction():
        taken = await conn.fetchval("SELECT count(*) FROM api_licenses WHERE key_digest = ANY($1::bytea[])",
                                    [sha256(key) for key, _ in rows])
        if taken:
            raise ApiError(409, "key_exists", f"{taken} of these keys are already registered; nothing was imported")
        for key, item in rows:
            # used_total carries the usage brought along; the counters are built from it on first use.
            license_id = await conn.fetchval(
                """INSERT INTO api_licenses (tenant_id, product_id, key_digest, bucket, key_hint, email, client_name,
                                             client_identifier, max_api_calls, expires_at, used_total, imported)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true) RETURNING id""",
                tenant_id, product_id, sha256(key), fastpath.api_key_bucket(key), mask_imported(key), item["email"],
                item["clientName"], item["clientIdentifier"], item["maxApiCalls"], item["expiresAt"],
                item["usedApiCalls"])
            await events.emit(conn, tenant_id, events.API_LICENSE_CREATED,
                              {"apiLicenseId": license_id, "productId": product_id, "apiKey": mask_imported(key),
                               "email": item["email"], "clientIdentifier": item["clientIdentifier"], "imported": True})
            made.append({"id": license_id, "apiKey": mask_imported(key), "expirationDate": iso_utc(item["expiresAt"]),
                         "maxApiCalls": item["maxApiCalls"], "usedApiCalls": item["usedApiCalls"]})
    for key, _ in rows:  # drop negative entries cached while a key was unknown
        await engine.invalidate(LicenseRef(key))
    return {"imported": len(made), "productId": product_id, "productName": product["name"], "items": made}


async def listing(conn: asyncpg.Connection, tenant_id: str, now: datetime, q: dict) -> dict:
    """One page of the tenant's keys (masked), newest first, filtered by product, status or client."""
    where = Where("l.tenant_id", tenant_id)
    where.equals("l.product_id", q["productId"])
    where.equals("l.client_identifier", q["clientIdentifier"])
    if q["status"] == "revoked":
        where.add("l.revoked_at IS NOT NULL")
    elif q["status"] == "active":
        where.add(f"l.revoked_at IS NULL AND (l.expires_at IS NULL OR l.expires_at > {where.param(now)})")
    elif q["status"] == "expired":
        where.add(f"l.revoked_at IS NULL AND l.expires_at <= {where.param(now)}")
    return await fetch_page(conn, count_from="SELECT count(*) FROM api_licenses l",
                            select_from=f"SELECT {COLUMNS} FROM {_FROM}", where=where, order_by="l.id DESC",
                            page=q["page"], page_size=q["pageSize"], item=lambda r: license_json(r, now.timestamp()))


async def update(conn: asyncpg.Connection, engine: QuotaEngine, row: Any, max_api_calls: Any, expires: Any) -> Any:
    """Change the lifetime quota or expiry (UNSET keeps a value, None clears it); every gateway
    sees it on the next request. Returns the changed row."""
    row = await conn.fetchrow(
        f"""UPDATE api_licenses l
            SET max_api_calls = CASE WHEN $4 THEN l.max_api_calls ELSE $2 END,
                expires_at = CASE WHEN $5 THEN l.expires_at ELSE $3 END
            FROM products p WHERE l.id = $1 AND p.id = l.product_id RETURNING {COLUMNS}""",
        row["id"], None if max_api_calls is UNSET else max_api_calls, None if expires is UNSET else expires,
        max_api_calls is UNSET, expires is UNSET)
    await engine.invalidate(ref_of(row))
    return row


async def revoke_key(conn: asyncpg.Connection, engine: QuotaEngine, row: Any, now: datetime) -> dict:
    async with conn.transaction():
        status = await conn.execute("UPDATE api_licenses SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                                    row["id"], now)
        if status.endswith(" 1"):  # revoking twice raises the event once
            await events.emit(conn, str(row["tenant_id"]), events.API_LICENSE_REVOKED,
                              {"apiLicenseId": row["id"], "productId": row["product_id"], "apiKey": row["key_hint"]})
    await engine.invalidate(ref_of(row))
    return {"revoked": True, "apiKey": row["key_hint"]}


async def usage(conn: asyncpg.Connection, engine: QuotaEngine, tenant_id: str, row: Any) -> dict:
    """Lifetime and per-window usage now (from Redis), and usage by day (from the write-behind record)."""
    history = await conn.fetch("SELECT day, units FROM api_usage_daily WHERE license_id = $1 ORDER BY day", row["id"])
    answer = await engine.run(ref_of(row), tenant_id, 0, False)
    if answer is None:
        raise _not_found()
    document = answer.document()
    return {"apiKey": row["key_hint"], "quota": document["quota"], "rateLimits": document["rateLimits"],
            "history": [{"date": r["day"].isoformat(), "units": r["units"]} for r in history]}


async def reset(pool: asyncpg.Pool, engine: QuotaEngine, tenant_id: str, row: Any, period_type: str) -> dict:
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
        await engine.reset_windows(ref, periods)
    return {"apiKey": row["key_hint"], "reset": period_type}


async def features_changed(pool: asyncpg.Pool, runner: ScriptRunner, tenant_id: str, product_id: int) -> None:
    """Drop the product's metadata (name, features, rules) cached in every bucket, however many keys
    it has: its keys share it there. The version raised first lets no fill that read the old
    product re-cache it (keyspace.DROP_PRODUCT)."""
    async with pool.acquire() as conn:
        version = await conn.fetchval("""UPDATE products SET cache_version = cache_version + 1
                                         WHERE id = $1 AND tenant_id = $2 RETURNING cache_version""",
                                      product_id, tenant_id)
    if version is not None:
        await runner.run_many(keyspace.DROP_PRODUCT, keyspace.product_invalidations(product_id, version))

"""Time-driven license work on the injectable clock: `license.expired` once per license, renewal
reminders N days before expiry (per product; default 7 and 1), each once.

Runs as a periodic task of every worker; any number of processes may run it at once, because a
notice is claimed by inserting its (license, kind) row: the primary key lets one insert win, and
the event or e-mail is written in that same transaction.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ..config import Settings
from ..errors import ApiError
from . import jobs, mailer, types
from .outbox import emit

DEFAULT_REMINDER_DAYS: tuple[int, ...] = (7, 1)
# Licenses that expired longer ago than this are not announced (e.g. when the feature is first
# deployed on a database full of old licenses).
EXPIRED_LOOKBACK = timedelta(days=7)
_BATCH = 200


async def expire_licenses(conn: asyncpg.Connection, now: datetime) -> int:
    """Raise `license.expired` for every license that passed its expiry since the last run."""
    async with conn.transaction():
        rows = await conn.fetch(
            """INSERT INTO license_notices (license_id, kind, tenant_id, at)
               SELECT l.id, 'expired', l.tenant_id, $1 FROM licenses l
               WHERE l.expires_at <= $1 AND l.expires_at > $2 AND l.revoked_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM license_notices n WHERE n.license_id = l.id AND n.kind = 'expired')
               ORDER BY l.expires_at LIMIT $3
               ON CONFLICT DO NOTHING RETURNING license_id""", now, now - EXPIRED_LOOKBACK, _BATCH)
        if not rows:
            return 0
        for lic in await conn.fetch(
                """SELECT l.id, l.tenant_id, l.product_id, p.name AS product_name, l.key_hint, l.email, l.expires_at
                   FROM licenses l JOIN products p ON p.id = l.product_id WHERE l.id = ANY($1::bigint[])
                   ORDER BY l.expires_at""", [r["license_id"] for r in rows]):
            await emit(conn, str(lic["tenant_id"]), types.LICENSE_EXPIRED,
                       {"licenseId": lic["id"], "activationKey": lic["key_hint"], "productId": lic["product_id"],
                        "productName": lic["product_name"], "email": lic["email"],
                        "expirationDate": _iso(lic["expires_at"])}, at=now)
    return len(rows)


async def send_reminders(conn: asyncpg.Connection, settings: Settings, now: datetime) -> int:
    """Queue each due renewal reminder once: for a license, the smallest reminder day whose point
    it has passed (a late scheduler sends one reminder, not every one it missed), and only points
    the license lived to see (a 3-day license gets no "expires in 7 days")."""
    longest = await conn.fetchval("SELECT max(d) FROM product_reminders, unnest(days) AS d")
    horizon = now + timedelta(days=max(longest or 0, *DEFAULT_REMINDER_DAYS))
    sent = 0
    async with conn.transaction():
        due_rows = await conn.fetch(
            """SELECT l.id, l.tenant_id, l.product_id, l.key_hint, l.email, l.expires_at, p.name AS product_name, s.due
               FROM licenses l JOIN products p ON p.id = l.product_id
               LEFT JOIN product_reminders r ON r.product_id = l.product_id
               CROSS JOIN LATERAL (
                   SELECT min(d) AS due FROM unnest(COALESCE(r.days, $4::integer[])) AS d
                   WHERE l.expires_at - make_interval(days => d) <= $1
                     AND l.expires_at - make_interval(days => d) >= l.created_at) s
               WHERE l.expires_at > $1 AND l.expires_at <= $2 AND l.revoked_at IS NULL AND l.email <> ''
                 AND s.due IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM license_notices n WHERE n.license_id = l.id
                                 AND n.kind LIKE 'reminder:%' AND split_part(n.kind, ':', 2)::integer <= s.due)
               ORDER BY l.expires_at LIMIT $3""", now, horizon, _BATCH, list(DEFAULT_REMINDER_DAYS))
        for lic in due_rows:
            due = lic["due"]
            claimed = await conn.fetchval(
                "INSERT INTO license_notices (license_id, kind, tenant_id, at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT DO NOTHING RETURNING license_id", lic["id"], f"reminder:{due}", lic["tenant_id"], now)
            if claimed is None:  # another process sent it
                continue
            tenant_id = str(lic["tenant_id"])
            days_left = max(1, math.ceil((lic["expires_at"] - now).total_seconds() / 86400))
            context = {"LicenseKey": lic["key_hint"], "ProductName": lic["product_name"],
                       "ExpirationDate": lic["expires_at"].strftime("%Y-%m-%d"), "DaysLeft": days_left,
                       "CustomerEmail": lic["email"]}
            await mailer.queue_mail(conn, settings, tenant_id, "renewal_reminder", lic["email"], context,
                                    dedupe_key=f"reminder:{lic['id']}:{due}")
            await emit(conn, tenant_id, types.LICENSE_EXPIRING,
                       {"licenseId": lic["id"], "activationKey": lic["key_hint"], "productId": lic["product_id"],
                        "productName": lic["product_name"], "email": lic["email"],
                        "expirationDate": _iso(lic["expires_at"]), "daysLeft": days_left}, at=now)
            sent += 1
    return sent


async def run(services: Any) -> int:
    """One scheduler pass (a periodic task of the job worker)."""
    now = services.clock.utcnow()
    async with services.pool.acquire() as conn:
        return await expire_licenses(conn, now) + await send_reminders(conn, services.settings, now)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- per-product reminder days --------------------------------------------------------------------

async def _check_product(conn: asyncpg.Connection, tenant_id: str, product_id: int) -> None:
    if not await conn.fetchval("SELECT 1 FROM products WHERE id = $1 AND tenant_id = $2", product_id, tenant_id):
        raise ApiError(404, "product_not_found", f"no product {product_id}")


async def reminder_days(conn: asyncpg.Connection, tenant_id: str, product_id: int) -> dict[str, Any]:
    await _check_product(conn, tenant_id, product_id)
    days = await conn.fetchval("SELECT days FROM product_reminders WHERE product_id = $1", product_id)
    return {"productId": product_id, "days": sorted(days if days is not None else DEFAULT_REMINDER_DAYS, reverse=True),
            "isDefault": days is None}


async def set_reminder_days(conn: asyncpg.Connection, tenant_id: str, product_id: int,
                            days: list[int]) -> dict[str, Any]:
    await _check_product(conn, tenant_id, product_id)
    await conn.execute("INSERT INTO product_reminders (product_id, tenant_id, days) VALUES ($1, $2, $3) "
                       "ON CONFLICT (product_id) DO UPDATE SET days = $3", product_id, tenant_id, sorted(set(days)))
    return await reminder_days(conn, tenant_id, product_id)


jobs.add_periodic(run)

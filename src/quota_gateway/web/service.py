"""What the admin and portal pages show: read models over the domains' tables, always tenant-scoped.

Writes go through the owning domain's service functions (catalogue, licensing, apilicense, auth,
crypto); this module only reads, and keeps the web front end's own rows (branding).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ..errors import ApiError

PAGE_SIZE = 25
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
MAX_LOGO_BYTES = 200 * 1024


def _page(total: int, page: int) -> dict:
    pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
    return {"page": page, "pages": pages, "total": total}


# --- dashboard -----------------------------------------------------------------------------------

async def dashboard(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> dict:
    counts = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM products WHERE tenant_id = $1) AS products,
                  (SELECT count(*) FROM licenses WHERE tenant_id = $1 AND revoked_at IS NULL
                                                  AND (expires_at IS NULL OR expires_at > $2)) AS licenses,
                  (SELECT count(*) FROM activations WHERE tenant_id = $1 AND deactivated_at IS NULL) AS devices,
                  (SELECT count(*) FROM api_licenses WHERE tenant_id = $1 AND revoked_at IS NULL) AS api_keys,
                  (SELECT count(*) FROM access_tokens WHERE tenant_id = $1 AND revoked_at IS NULL) AS tokens,
                  (SELECT count(*) FROM activations WHERE tenant_id = $1 AND activated_at > $2 - interval '30 days')
                      AS activations_30d""", tenant_id, now)
    recent = await conn.fetch(
        """SELECT a.activated_at, a.hardware_id, a.country, l.id AS license_id, l.key_hint, p.name AS product_name
           FROM activations a JOIN licenses l ON l.id = a.license_id JOIN products p ON p.id = l.product_id
           WHERE a.tenant_id = $1 ORDER BY a.id DESC LIMIT 8""", tenant_id)
    return {"counts": dict(counts), "recent": [dict(r) for r in recent]}


# --- catalogue -----------------------------------------------------------------------------------

async def products(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch(
        """SELECT p.id, p.name, p.description, p.trial_days, p.deactivation_cooldown_hours, p.minimum_required_version,
                  (SELECT count(*) FROM features f WHERE f.product_id = p.id) AS features,
                  (SELECT count(*) FROM licenses l WHERE l.product_id = p.id) AS licenses,
                  (SELECT count(*) FROM api_licenses k WHERE k.product_id = p.id) AS api_keys
           FROM products p WHERE p.tenant_id = $1 ORDER BY p.name""", tenant_id)
    return [dict(r) for r in rows]


async def plans(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT id, name, duration_days, is_active FROM plans WHERE tenant_id = $1 ORDER BY name",
                            tenant_id)
    return [dict(r) for r in rows]


# --- license keys --------------------------------------------------------------------------------

async def licenses(conn: asyncpg.Connection, tenant_id: str, now: datetime, *, search: str = "",
                   product_id: int | None = None, status: str = "", page: int = 1) -> dict:
    """License keys, newest first; `search` matches the e-mail, the masked key's visible part or the product."""
    where: list[str] = ["l.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    if search:
        args.append(f"%{search.lower()}%")
        where.append(f"(lower(l.email) LIKE ${len(args)} OR lower(l.key_hint) LIKE ${len(args)} "
                     f"OR lower(p.name) LIKE ${len(args)})")
    if product_id is not None:
        args.append(product_id)
        where.append(f"l.product_id = ${len(args)}")
    if status == "revoked":
        where.append("l.revoked_at IS NOT NULL")
    elif status in ("active", "expired"):
        args.append(now)
        where.append("l.revoked_at IS NULL AND " + (f"(l.expires_at IS NULL OR l.expires_at > ${len(args)})"
                                                    if status == "active" else f"l.expires_at <= ${len(args)}"))
    clause = " AND ".join(where)
    total = await conn.fetchval(f"SELECT count(*) FROM licenses l JOIN products p ON p.id = l.product_id "
                                f"WHERE {clause}", *args)
    rows = await conn.fetch(
        f"""SELECT l.id, l.key_hint, l.kind, l.email, l.max_seats, l.expires_at, l.revoked_at, l.created_at,
                   p.name AS product_name,
                   (SELECT count(*) FROM activations a WHERE a.license_id = l.id AND a.deactivated_at IS NULL) AS seats
            FROM licenses l JOIN products p ON p.id = l.product_id WHERE {clause}
            ORDER BY l.id DESC LIMIT {PAGE_SIZE} OFFSET {(page - 1) * PAGE_SIZE}""", *args)
    return {"items": [{**dict(r), "status": license_status(r, now)} for r in rows], **_page(total, page)}


def license_status(row, now: datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


async def license_devices(conn: asyncpg.Connection, tenant_id: str, license_id: int) -> list[dict]:
    rows = await conn.fetch(
        """SELECT id, hardware_id, activated_at, deactivated_at, offline, client_version, country FROM activations
           WHERE tenant_id = $1 AND license_id = $2 ORDER BY deactivated_at IS NULL DESC, id DESC""",
        tenant_id, license_id)
    return [dict(r) for r in rows]


async def license_history(conn: asyncpg.Connection, tenant_id: str, license_id: int, limit: int = 100) -> list[dict]:
    rows = await conn.fetch(
        """SELECT action, at, hardware_id, details FROM device_history WHERE tenant_id = $1 AND license_id = $2
           ORDER BY id DESC LIMIT $3""", tenant_id, license_id, limit)
    return [{"action": r["action"], "at": r["at"], "hardwareId": r["hardware_id"],
             "country": (r["details"] or {}).get("country")} for r in rows]


# --- API keys ------------------------------------------------------------------------------------

async def api_keys(conn: asyncpg.Connection, tenant_id: str, now: datetime, *, search: str = "",
                   page: int = 1) -> dict:
    where: list[str] = ["l.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    if search:
        args.append(f"%{search.lower()}%")
        where.append(f"(lower(l.email) LIKE ${len(args)} OR lower(l.key_hint) LIKE ${len(args)} "
                     f"OR lower(l.client_name) LIKE ${len(args)} OR lower(l.client_identifier) LIKE ${len(args)} "
                     f"OR lower(p.name) LIKE ${len(args)})")
    clause = " AND ".join(where)
    total = await conn.fetchval(f"SELECT count(*) FROM api_licenses l JOIN products p ON p.id = l.product_id "
                                f"WHERE {clause}", *args)
    rows = await conn.fetch(
        f"""SELECT l.id, l.key_hint, l.email, l.client_name, l.client_identifier, l.max_api_calls, l.expires_at,
                   l.revoked_at, l.created_at, l.used_total - l.used_offset AS used, p.name AS product_name
            FROM api_licenses l JOIN products p ON p.id = l.product_id WHERE {clause}
            ORDER BY l.id DESC LIMIT {PAGE_SIZE} OFFSET {(page - 1) * PAGE_SIZE}""", *args)
    return {"items": [{**dict(r), "status": license_status(r, now)} for r in rows], **_page(total, page)}


# --- portal --------------------------------------------------------------------------------------

async def customer_licenses(conn: asyncpg.Connection, tenant_id: str, email: str, now: datetime) -> list[dict]:
    """Every license key issued to the address, with its features and live devices."""
    rows = await conn.fetch(
        """SELECT l.id, l.key_hint, l.kind, l.max_seats, l.features, l.expires_at, l.revoked_at, l.product_id,
                  p.name AS product_name, p.deactivation_cooldown_hours, l.last_deactivated_at
           FROM licenses l JOIN products p ON p.id = l.product_id
           WHERE l.tenant_id = $1 AND lower(l.email) = $2 ORDER BY l.id DESC""", tenant_id, email.lower())
    found = []
    for r in rows:
        features = list(r["features"]) if r["features"] is not None else [
            f["name"] for f in await conn.fetch("SELECT name FROM features WHERE product_id = $1 ORDER BY code",
                                                r["product_id"])]
        devices = await conn.fetch(
            """SELECT id, hardware_id, activated_at, country, offline FROM activations
               WHERE license_id = $1 AND deactivated_at IS NULL ORDER BY id""", r["id"])
        cooldown_until = None
        if r["deactivation_cooldown_hours"] and r["last_deactivated_at"] is not None:
            until = r["last_deactivated_at"] + timedelta(hours=r["deactivation_cooldown_hours"])
            cooldown_until = until if until > now else None
        found.append({**dict(r), "features": features, "devices": [dict(d) for d in devices],
                      "status": license_status(r, now), "cooldown_until": cooldown_until})
    return found


async def customer_history(conn: asyncpg.Connection, tenant_id: str, email: str, limit: int = 100) -> list[dict]:
    rows = await conn.fetch(
        """SELECT h.action, h.at, h.hardware_id, h.details, l.key_hint, p.name AS product_name
           FROM device_history h JOIN licenses l ON l.id = h.license_id JOIN products p ON p.id = l.product_id
           WHERE h.tenant_id = $1 AND lower(l.email) = $2 ORDER BY h.id DESC LIMIT $3""",
        tenant_id, email.lower(), limit)
    return [{"action": r["action"], "at": r["at"], "hardwareId": r["hardware_id"], "keyHint": r["key_hint"],
             "productName": r["product_name"], "country": (r["details"] or {}).get("country")} for r in rows]


async def customer_license_id(conn: asyncpg.Connection, tenant_id: str, email: str, license_id: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM licenses WHERE id = $1 AND tenant_id = $2 AND lower(email) = $3",
                                    license_id, tenant_id, email.lower()))


# --- branding ------------------------------------------------------------------------------------

async def branding(conn: asyncpg.Connection, tenant: dict) -> dict:
    row = await conn.fetchrow("SELECT display_name, colour, logo IS NOT NULL AS has_logo FROM tenant_branding "
                              "WHERE tenant_id = $1", tenant["id"])
    return {"displayName": (row["display_name"] if row else "") or tenant["name"],
            "colour": row["colour"] if row else "#1d4ed8", "hasLogo": bool(row and row["has_logo"])}


def _luminance(colour: str) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast_with_white(colour: str) -> float:
    return 1.05 / (_luminance(colour) + 0.05)


async def save_branding(conn: asyncpg.Connection, tenant_id: str, display_name: str, colour: str,
                        logo: bytes | None) -> None:
    """Display name, colour (white text on it must pass WCAG AA, 4.5:1) and an optional PNG/JPEG logo."""
    if len(display_name) > 100:
        raise ApiError(400, "invalid_field", "display name: at most 100 characters", field="displayName")
    if any(c < " " or c == "\x7f" for c in display_name):  # it heads pages and e-mails ({{TenantName}})
        raise ApiError(400, "invalid_field", "display name: one line, no control characters", field="displayName")
    if not _COLOUR.fullmatch(colour):
        raise ApiError(400, "invalid_field", "colour: #rrggbb", field="colour")
    if contrast_with_white(colour) < 4.5:
        raise ApiError(400, "low_contrast", f"colour {colour}: white text on it has contrast "
                       f"{contrast_with_white(colour):.1f}:1; WCAG AA needs 4.5:1 — pick a darker colour",
                       field="colour")
    logo_type = None
    if logo:
        if len(logo) > MAX_LOGO_BYTES:
            raise ApiError(400, "invalid_field", "logo: at most 200 KB", field="logo")
        logo_type = next((t for magic, t in LOGO_TYPES.items() if logo.startswith(magic)), None)
        if logo_type is None:
            raise ApiError(400, "invalid_field", "logo: a PNG or JPEG image", field="logo")
    await conn.execute(
        """INSERT INTO tenant_branding (tenant_id, display_name, colour, logo, logo_type) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id) DO UPDATE SET display_name = $2, colour = $3,
               logo = COALESCE($4, tenant_branding.logo), logo_type = COALESCE($5, tenant_branding.logo_type)""",
        tenant_id, display_name, colour.lower(), logo or None, logo_type)


async def logo(conn: asyncpg.Connection, tenant_id: str) -> tuple[bytes, str] | None:
    row = await conn.fetchrow("SELECT logo, logo_type FROM tenant_branding WHERE tenant_id = $1 AND logo IS NOT NULL",
                              tenant_id)
    return (bytes(row["logo"]), row["logo_type"]) if row else None

"""Tenants (publisher accounts): every other row in the system belongs to one."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from .. import crypto
from ..abuse import negative
from ..errors import ApiError

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


async def create_tenant(conn: asyncpg.Connection, slug: str, name: str, *, master_key: str | None) -> dict:
    if not _SLUG.fullmatch(slug):
        raise ApiError(400, "invalid_field", "slug: lowercase letters, digits and dashes, at most 63", field="slug")
    async with conn.transaction():
        try:
            row = await conn.fetchrow("INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING id, slug, name, created_at",
                                      slug, name)
        except asyncpg.UniqueViolationError:
            raise ApiError(409, "tenant_exists", f"a tenant with slug '{slug}' already exists") from None
        # Every tenant signs with its own RSA key pair (offline codes, leases).
        await crypto.create_key_pair(conn, str(row["id"]), master_key or "")
    return _tenant(row)


async def get_tenant(conn: asyncpg.Connection, tenant: str) -> dict | None:
    """By id or slug."""
    if "\x00" in tenant:  # no tenant has one, and PostgreSQL refuses it in text
        return None
    row = await conn.fetchrow("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1 OR id::text = $1", tenant)
    return _tenant(row) if row else None


async def find(pool: asyncpg.Pool, redis: Any, name: str) -> dict | None:
    """By id or slug, through the negative cache: a name no tenant has reaches PostgreSQL once per
    window (abuse.negative); `create_tenant`'s callers drop the entry (`negative.tenant`)."""
    missing = negative.tenant(name)
    if await negative.is_missing(redis, missing):
        return None
    async with pool.acquire() as conn:
        found = await get_tenant(conn, name)
    if found is None:
        await negative.remember_missing(redis, missing)
    return found


async def slug_of(conn: asyncpg.Connection, tenant_id: str) -> str:
    """The slug of an existing tenant (the caller's own: public URLs name the tenant by it)."""
    slug: str = await conn.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant_id)
    return slug


async def list_tenants(conn: asyncpg.Connection) -> list[dict]:
    return [_tenant(r) for r in await conn.fetch("SELECT id, slug, name, created_at FROM tenants ORDER BY created_at")]


def _tenant(row) -> dict:
    return {"id": str(row["id"]), "slug": row["slug"], "name": row["name"], "createdAt": row["created_at"]}

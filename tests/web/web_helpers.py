"""Helpers for the web tests: form tokens and secrets out of pages, a value from the database, admin
sign-in through a one-time link."""

from __future__ import annotations

import re

import asyncpg
import httpx
from conftest import TEST_MASTER_KEY

from quota_gateway.clock import Clock
from quota_gateway.web import signin
from quota_gateway.web.keys import WebKeys

KEYS = WebKeys.from_master(TEST_MASTER_KEY)
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
_SECRET = re.compile(r'<textarea id="secret"[^>]*>([^<]+)</textarea>')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no form token"
    return match.group(1)


def secret_of(html: str) -> str:
    """The secret a "shown once" page shows."""
    match = _SECRET.search(html)
    assert match, "page shows no secret"
    return match.group(1)


async def sql_value(settings, query: str, *args):
    """One value straight from the database (what a page did, seen from outside)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def make_admin_link(database_url: str, tenant_id: str, email: str, clock: Clock) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        admin = await signin.create_admin(conn, tenant_id, email, clock.utcnow())
        return await signin.create_link(conn, KEYS, clock.utcnow(), tenant_id, admin["id"])
    finally:
        await conn.close()


async def sign_in_admin(client: httpx.AsyncClient, database_url: str, tenant_id: str, slug: str, clock: Clock,
                        email: str = "owner@example.com") -> str:
    """Sign the client in through a one-time link; returns a form token for later POSTs."""
    token = await make_admin_link(database_url, tenant_id, email, clock)
    page = await client.get(f"/admin/{slug}/login/link", params={"token": token})
    assert page.status_code == 200
    r = await client.post(f"/admin/{slug}/login/link", data={"csrf_token": csrf_of(page.text), "token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/{slug}/", r.text
    return csrf_of(page.text)

"""Helpers for the web tests: form tokens and secrets out of pages, calls on a database connection of
their own, admin sign-in through a one-time link, a portal session, a device activating from an
address."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import httpx

from conftest import TEST_MASTER_KEY
from quota_gateway.clock import Clock
from quota_gateway.web import sessions, signin
from quota_gateway.web.keys import WebKeys

KEYS = WebKeys.from_master(TEST_MASTER_KEY)
_CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
_SECRET = re.compile(r'<textarea id="secret"[^>]*>([^<]+)</textarea>')
T = TypeVar("T")


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no form token"
    return match.group(1)


def secret_of(html: str) -> str:
    """The secret a "shown once" page shows."""
    match = _SECRET.search(html)
    assert match, "page shows no secret"
    return match.group(1)


async def with_db(database_url: str, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`call` on a connection of its own (the tests' view from outside the app)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await call(conn)
    finally:
        await conn.close()


async def sql_value(settings, query: str, *args):
    """One value straight from the database (what a page did, seen from outside)."""
    return await with_db(settings.database_url, lambda conn: conn.fetchval(query, *args))


async def make_admin_link(database_url: str, tenant_id: str, email: str, clock: Clock) -> str:
    async def link(conn: asyncpg.Connection) -> str:
        admin = await signin.create_admin(conn, tenant_id, email, clock.utcnow())
        return await signin.create_link(conn, KEYS, clock.utcnow(), tenant_id, admin["id"])
    return await with_db(database_url, link)


async def portal_cookie(database_url: str, tenant_id: str, clock: Clock, email: str) -> str:
    """A signed-in portal session of `email` (the value of the qg_portal cookie)."""
    return await with_db(database_url, lambda conn: sessions.start(conn, KEYS, clock.utcnow(), tenant_id=tenant_id,
                                                                   audience="portal", email=email))


async def activate_from(app, tenant, key: str, hardware: str, address: str, email: str,
                        product: str = "Desk App") -> None:
    """A device activates `key` from the client address `address` (whose country is recorded)."""
    transport = httpx.ASGITransport(app=app, client=(address, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as device:
        r = await device.post("/api/license/activate", headers=tenant.headers,
                              json={"activationKey": key, "email": email, "hardwareId": hardware,
                                    "productName": product})
        assert r.status_code == 200, r.text


async def sign_in_admin(client: httpx.AsyncClient, database_url: str, tenant_id: str, slug: str, clock: Clock,
                        email: str = "owner@example.com") -> str:
    """Sign the client in through a one-time link; returns a form token for later POSTs."""
    token = await make_admin_link(database_url, tenant_id, email, clock)
    page = await client.get(f"/admin/{slug}/login/link", params={"token": token})
    assert page.status_code == 200
    r = await client.post(f"/admin/{slug}/login/link", data={"csrf_token": csrf_of(page.text), "token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/{slug}/", r.text
    return csrf_of(page.text)

"""Browser sessions: a signed cookie naming a server-side row.

The cookie holds a random session id signed with the session key (itsdangerous); the row keeps
only a keyed digest of the id, the tenant, the audience (admin or portal), who signed in and
when the session was last used. So logout ends a session for real (the row is closed), the idle
timeout runs on the injectable clock, and a session of one tenant is refused on another's pages.
Cookies: HttpOnly, SameSite=Strict, Secure under TLS, path-scoped to the tenant's pages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from itsdangerous import BadSignature, Signer
from starlette.responses import Response

from .keys import WebKeys

IDLE_TIMEOUT = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)
COOKIES = {"admin": "qg_admin", "portal": "qg_portal"}


@dataclass(frozen=True)
class WebSession:
    tenant_id: str
    audience: str
    email: str
    admin_user_id: int | None
    id_digest: bytes


def cookie_path(audience: str, tenant_slug: str) -> str:
    return f"/{audience}/{tenant_slug}"


def _signer(keys: WebKeys) -> Signer:
    return Signer(keys.session, salt="qg-web-session")


async def start(conn: asyncpg.Connection, keys: WebKeys, now: datetime, *, tenant_id: str, audience: str, email: str,
                admin_user_id: int | None = None) -> str:
    """A new session row; returns the cookie value."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO web_sessions (id_digest, tenant_id, audience, admin_user_id, email, created_at, last_seen_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6)""",
        keys.mac("session", session_id), tenant_id, audience, admin_user_id, email, now)
    return _signer(keys).sign(session_id.encode()).decode()


def _session_id(keys: WebKeys, cookie: str | None) -> str | None:
    if not cookie or len(cookie) > 200:
        return None
    try:
        return _signer(keys).unsign(cookie.encode()).decode()
    except (BadSignature, UnicodeDecodeError):
        return None


async def load(conn: asyncpg.Connection, keys: WebKeys, now: datetime, cookie: str | None, *, tenant_id: str,
               audience: str) -> WebSession | None:
    """The live session the cookie names, for this tenant and audience; touching it keeps it alive.
    None when the cookie is missing, forged, ended, idle too long, too old, or another tenant's."""
    session_id = _session_id(keys, cookie)
    if session_id is None:
        return None
    row = await conn.fetchrow(
        """UPDATE web_sessions SET last_seen_at = $2
           WHERE id_digest = $1 AND ended_at IS NULL AND last_seen_at > $3 AND created_at > $4
             AND tenant_id = $5 AND audience = $6
           RETURNING tenant_id, audience, email, admin_user_id, id_digest""",
        keys.mac("session", session_id), now, now - IDLE_TIMEOUT, now - MAX_AGE, tenant_id, audience)
    if row is None:
        return None
    return WebSession(str(row["tenant_id"]), row["audience"], row["email"], row["admin_user_id"],
                      bytes(row["id_digest"]))


async def end(conn: asyncpg.Connection, keys: WebKeys, now: datetime, cookie: str | None) -> None:
    session_id = _session_id(keys, cookie)
    if session_id is not None:
        await conn.execute("UPDATE web_sessions SET ended_at = $2 WHERE id_digest = $1 AND ended_at IS NULL",
                           keys.mac("session", session_id), now)


def set_cookie(response: Response, audience: str, tenant_slug: str, value: str, secure: bool) -> None:
    response.set_cookie(COOKIES[audience], value, max_age=int(MAX_AGE.total_seconds()), httponly=True, secure=secure,
                        samesite="strict", path=cookie_path(audience, tenant_slug))


def clear_cookie(response: Response, audience: str, tenant_slug: str, secure: bool) -> None:
    response.delete_cookie(COOKIES[audience], path=cookie_path(audience, tenant_slug), httponly=True, secure=secure,
                           samesite="strict")

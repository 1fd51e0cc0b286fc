"""Passwordless sign-in: admin users, e-mailed 6-digit codes, one-time sign-in links.

Codes: valid 10 minutes, single use, at most MAX_TRIES wrong guesses each, at most
CODES_PER_ADDRESS_HOUR per e-mail address and CODES_PER_CLIENT_HOUR per client address each
hour; only keyed digests are stored and compared in constant time. So a guesser gets at most
5 x 5 = 25 tries an hour at one address against a million codes.

Links: a random token, single use, short expiry, stored as a keyed digest. Opening one (GET)
only shows a confirm page; the POST from that page signs in (mail scanners open links).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

import asyncpg

from ..errors import ApiError
from .keys import WebKeys

CODE_TTL = timedelta(minutes=10)
MAX_TRIES = 5
CODES_PER_ADDRESS_HOUR = 5
CODES_PER_CLIENT_HOUR = 20
LINK_TTL = timedelta(minutes=30)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def plausible_email(email: str) -> bool:
    local, _, domain = email.partition("@")
    return bool(local) and "." in domain.strip(".") and len(email) <= 254 and not any(c.isspace() for c in email)


# --- admin users ---------------------------------------------------------------------------------

async def create_admin(conn: asyncpg.Connection, tenant_id: str, email: str, now: datetime) -> dict:
    email = normalise_email(email)
    if not plausible_email(email):
        raise ApiError(400, "invalid_field", "email: not an e-mail address", field="email")
    row = await conn.fetchrow(
        """INSERT INTO admin_users (tenant_id, email, created_at) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, email) DO UPDATE SET email = EXCLUDED.email RETURNING id, email, created_at""",
        tenant_id, email, now)
    return {"id": row["id"], "email": row["email"], "createdAt": row["created_at"]}


async def find_admin(conn: asyncpg.Connection, tenant_id: str, email: str) -> int | None:
    return await conn.fetchval("SELECT id FROM admin_users WHERE tenant_id = $1 AND email = $2", tenant_id,
                               normalise_email(email))


async def list_admins(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT id, email, created_at, last_login_at FROM admin_users WHERE tenant_id = $1 "
                            "ORDER BY id", tenant_id)
    return [{"id": r["id"], "email": r["email"], "createdAt": r["created_at"], "lastLoginAt": r["last_login_at"]}
            for r in rows]


async def is_customer(conn: asyncpg.Connection, tenant_id: str, email: str) -> bool:
    """A portal customer is an address some license key of the tenant was issued to."""
    email = normalise_email(email)
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM licenses WHERE tenant_id = $1 AND lower(email) = $2)
               OR EXISTS (SELECT 1 FROM api_licenses WHERE tenant_id = $1 AND lower(email) = $2)""",
        tenant_id, email))


# --- codes ---------------------------------------------------------------------------------------

async def issue_code(conn: asyncpg.Connection, keys: WebKeys, now: datetime, *, tenant_id: str, audience: str,
                     email: str, client: str) -> tuple[int, str]:
    """A fresh code for the address: (code id, the 6 digits to mail). 429 past the hourly bounds."""
    email = normalise_email(email)
    client_digest = keys.mac("client", client)
    hour_ago = now - timedelta(hours=1)
    async with conn.transaction():
        # Serialise requests for one address, so two concurrent requests cannot both pass the count.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{tenant_id}:{audience}:{email}")
        by_address = await conn.fetchval(
            "SELECT count(*) FROM web_login_codes WHERE tenant_id = $1 AND audience = $2 AND email = $3 "
            "AND created_at > $4", tenant_id, audience, email, hour_ago)
        by_client = await conn.fetchval(
            "SELECT count(*) FROM web_login_codes WHERE client_digest = $1 AND created_at > $2", client_digest, hour_ago)
        if by_address >= CODES_PER_ADDRESS_HOUR or by_client >= CODES_PER_CLIENT_HOUR:
            raise ApiError(429, "too_many_codes", "too many sign-in codes were asked for; try again within an hour")
        code = f"{secrets.randbelow(1_000_000):06d}"
        code_id = await conn.fetchval(
            """INSERT INTO web_login_codes (tenant_id, audience, email, code_digest, client_digest, created_at,
                                            expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            tenant_id, audience, email, keys.mac("code", email, code), client_digest, now, now + CODE_TTL)
    return code_id, code


async def record_refused_request(conn: asyncpg.Connection, keys: WebKeys, now: datetime, *, tenant_id: str,
                                 audience: str, email: str, client: str) -> None:
    """A request for an address with no access still counts against the client's hourly bound,
    so probing many addresses is as limited as asking for one (nothing is mailed)."""
    await conn.execute(
        """INSERT INTO web_login_codes (tenant_id, audience, email, code_digest, client_digest, created_at, expires_at,
                                        used_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $6)""",
        tenant_id, audience, normalise_email(email), b"", keys.mac("client", client), now)


async def redeem_code(conn: asyncpg.Connection, keys: WebKeys, now: datetime, *, tenant_id: str, audience: str,
                      email: str, code: str) -> bool:
    """True once for the right code within its validity and tries; every wrong guess uses up a try
    of each live code of the address."""
    email = normalise_email(email)
    code = code.strip().replace(" ", "")
    submitted = keys.mac("code", email, code)
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT id, code_digest FROM web_login_codes
               WHERE tenant_id = $1 AND audience = $2 AND email = $3 AND used_at IS NULL AND expires_at > $4
                 AND attempts < $5 ORDER BY id FOR UPDATE""", tenant_id, audience, email, now, MAX_TRIES)
        # Compare against every live code, always, so timing tells nothing about which one matched.
        matched = None
        for row in rows:
            if hmac.compare_digest(bytes(row["code_digest"]), submitted) and len(code) == 6:
                matched = row["id"]
        if matched is not None:
            await conn.execute("UPDATE web_login_codes SET used_at = $2 WHERE id = $1", matched, now)
            return True
        if rows:
            await conn.execute("UPDATE web_login_codes SET attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                               [r["id"] for r in rows])
    return False


# --- one-time links ------------------------------------------------------------------------------

async def create_link(conn: asyncpg.Connection, keys: WebKeys, now: datetime, tenant_id: str,
                      admin_user_id: int) -> str:
    """A single-use sign-in token for an admin user (the caller builds the URL around it)."""
    token = secrets.token_urlsafe(32)
    await conn.execute("INSERT INTO web_signin_links (token_digest, tenant_id, admin_user_id, expires_at) "
                       "VALUES ($1, $2, $3, $4)", keys.mac("link", token), tenant_id, admin_user_id, now + LINK_TTL)
    return token


async def redeem_link(conn: asyncpg.Connection, keys: WebKeys, now: datetime, tenant_id: str,
                      token: str) -> tuple[int, str] | None:
    """(admin user id, e-mail) the first time a live token of this tenant is redeemed, else None."""
    if not token or len(token) > 100:
        return None
    row = await conn.fetchrow(
        """UPDATE web_signin_links l SET used_at = $3 FROM admin_users u
           WHERE l.token_digest = $1 AND l.tenant_id = $2 AND l.used_at IS NULL AND l.expires_at > $3
             AND u.id = l.admin_user_id
           RETURNING u.id, u.email""", keys.mac("link", token), tenant_id, now)
    return (row["id"], row["email"]) if row else None


async def note_admin_login(conn: asyncpg.Connection, admin_user_id: int, now: datetime) -> None:
    await conn.execute("UPDATE admin_users SET last_login_at = $2 WHERE id = $1", admin_user_id, now)

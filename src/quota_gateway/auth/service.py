"""Access tokens (format: formats/access_token.py): only SHA-256 of the secret is stored.

The secret carries ~190 random bits, so a fast digest is enough (no password hashing needed);
comparison is constant time.
"""

from __future__ import annotations

import hmac
import secrets
import string
from datetime import datetime

import asyncpg

from ..errors import ApiError
from ..formats import access_token
from ..formats.digests import sha256 as digest
from ..principal import ANY_TOKEN, Principal

__all__ = ["ANY_TOKEN", "SCOPES", "Principal", "check_scopes", "create_token", "digest", "list_tokens", "load_principal",
           "revoke_token", "secret_matches"]

SCOPES = ("verify", "generate", "email", "manage", "metrics", "admin")
_PUBLIC_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def _new_token() -> tuple[str, str, str]:
    public = "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(access_token.PUBLIC_LEN))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(access_token.SECRET_LEN))
    return public, secret, access_token.compose(public, secret)


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ApiError(400, "invalid_scopes", f"scopes must be a non-empty subset of {', '.join(SCOPES)}",
                       field="scopes")
    return sorted(set(scopes))


async def create_token(conn: asyncpg.Connection, tenant_id: str, name: str, scopes: list[str],
                       expires_at: datetime | None = None) -> dict:
    """Store a new token; the returned dict is the only place the full token ever appears."""
    scopes = check_scopes(scopes)
    public, secret, token = _new_token()
    row = await conn.fetchrow(
        """INSERT INTO access_tokens (tenant_id, public_id, secret_digest, name, scopes, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at""",
        tenant_id, public, digest(secret), name, scopes, expires_at,
    )
    return {"id": row["id"], "publicId": public, "token": token, "name": name, "scopes": scopes,
            "createdAt": row["created_at"], "expiresAt": expires_at}


async def list_tokens(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch(
        """SELECT id, public_id, name, scopes, created_at, expires_at, revoked_at, last_used_at
           FROM access_tokens WHERE tenant_id = $1 ORDER BY id""", tenant_id)
    return [{"id": r["id"], "publicId": r["public_id"], "token": access_token.masked(r["public_id"]), "name": r["name"],
             "scopes": list(r["scopes"]), "createdAt": r["created_at"], "expiresAt": r["expires_at"],
             "revokedAt": r["revoked_at"], "lastUsedAt": r["last_used_at"]} for r in rows]


async def revoke_token(conn: asyncpg.Connection, tenant_id: str, public_id: str) -> bool:
    """Mark revoked; False when the tenant has no such live token."""
    status = await conn.execute(
        "UPDATE access_tokens SET revoked_at = now() WHERE tenant_id = $1 AND public_id = $2 AND revoked_at IS NULL",
        tenant_id, public_id)
    return status.endswith(" 1")


async def load_principal(conn: asyncpg.Connection, public_id: str, secret: str) -> Principal | None:
    """The live token with this public id whose secret matches, else None."""
    row = await conn.fetchrow(
        """SELECT id, tenant_id, secret_digest, scopes, expires_at FROM access_tokens
           WHERE public_id = $1 AND revoked_at IS NULL""", public_id)
    if row is None or not secret_matches(secret, row["secret_digest"]):
        return None
    expires = row["expires_at"].timestamp() if row["expires_at"] else None
    return Principal(str(row["tenant_id"]), row["id"], public_id, frozenset(row["scopes"]), expires)

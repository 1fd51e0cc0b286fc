"""Access tokens `exo_at_<public>_<secret>`: only SHA-256 of the secret is stored.

The secret carries ~190 random bits, so a fast digest is enough (no password hashing needed);
comparison is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..errors import ApiError

SCOPES = ("verify", "generate", "email", "manage", "admin")
# An endpoint declared with this scope takes any valid token of the tenant (the SDK document's
# "valid token, no specific scope"); it is not a permission a token can be given.
ANY_TOKEN = "any"
_PUBLIC_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one tenant's token and what it may do."""

    tenant_id: str
    token_id: int
    public_id: str
    scopes: frozenset[str]
    expires_at: float | None = None

    def allows(self, scope: str) -> bool:
        return scope == ANY_TOKEN or "admin" in self.scopes or scope in self.scopes


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def mask_token(public_id: str) -> str:
    return f"exo_at_{public_id}_{'*' * 8}"


def _new_token() -> tuple[str, str, str]:
    public = "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(12))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    return public, secret, f"exo_at_{public}_{secret}"


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
    return [{"id": r["id"], "publicId": r["public_id"], "token": mask_token(r["public_id"]), "name": r["name"],
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

"""Tenant RSA key pairs: made with the tenant, private halves encrypted at rest, rotatable.

The private key is PKCS#8 DER, AES-256-GCM encrypted under a key that HKDF-SHA256 derives
from the master key (QG_MASTER_KEY) and the tenant id (the tenant id is also the associated
data, so a ciphertext cannot be moved to another tenant). Rotation makes a new active key;
old public keys keep verifying what was signed before.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ApiError

KEY_BITS = 2048
_CACHE_SECONDS = 5.0  # a rotation reaches every process within this
# tenant -> (valid until, kid, private key, its encrypted blob as stored)
_signing_cache: dict[str, tuple[float, str, rsa.RSAPrivateKey, bytes]] = {}
_verifying_cache: dict[str, tuple[float, list[str]]] = {}


def derive_from_master(master_key: str, info: bytes) -> bytes:
    """A 32-byte key for one purpose (`info`), derived from QG_MASTER_KEY (hex, or any text)."""
    try:
        material = bytes.fromhex(master_key)
    except ValueError:
        material = master_key.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _wrapping_key(master_key: str | None, tenant_id: str) -> bytes:
    if not master_key:
        raise ApiError(500, "master_key_missing", "QG_MASTER_KEY is not configured")
    return derive_from_master(master_key, b"quota_gateway tenant key " + tenant_id.encode())


def _encrypt_private(key: rsa.RSAPrivateKey, master_key: str | None, tenant_id: str) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    nonce = os.urandom(12)
    return nonce + AESGCM(_wrapping_key(master_key, tenant_id)).encrypt(nonce, der, tenant_id.encode())


def _decrypt_private(blob: bytes, master_key: str | None, tenant_id: str) -> rsa.RSAPrivateKey:
    der = AESGCM(_wrapping_key(master_key, tenant_id)).decrypt(blob[:12], blob[12:], tenant_id.encode())
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)  # tenant keys are RSA (made in create_key_pair)
    return key


async def create_key_pair(conn: asyncpg.Connection, tenant_id: str, master_key: str | None) -> str:
    """A new active key pair for the tenant (the previous one stays, inactive). Returns its kid."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    kid = secrets.token_hex(8)
    async with conn.transaction():
        await conn.execute("UPDATE tenant_keys SET active = false WHERE tenant_id = $1 AND active", tenant_id)
        await conn.execute("INSERT INTO tenant_keys (tenant_id, kid, public_pem, private_enc, active) "
                           "VALUES ($1, $2, $3, $4, true)", tenant_id, kid, public_pem,
                           _encrypt_private(key, master_key, tenant_id))
    _signing_cache.pop(tenant_id, None)
    _verifying_cache.pop(tenant_id, None)
    return kid


def _fresh(cache: dict[str, Any], tenant_id: str) -> Any:
    """The tenant's cache entry while it is fresh (its first item: valid until), else None."""
    entry = cache.get(tenant_id)
    return entry if entry is not None and entry[0] > time.monotonic() else None


async def signing_key(conn: asyncpg.Connection, tenant_id: str, master_key: str | None) -> tuple[str, rsa.RSAPrivateKey]:
    """(kid, private key) of the tenant's active pair. The active pair is re-read every few seconds
    (so a rotation reaches every process), but a pair is decrypted once per process: loading an
    RSA-2048 key checks it, ~0.1-0.3 s of CPU, which every lease obtain waiting on the re-read
    used to pay again, all at once."""
    cached = _fresh(_signing_cache, tenant_id)
    return (cached[1], cached[2]) if cached else await _read_signing_key(conn, tenant_id, master_key)


async def signing_key_in(pool: asyncpg.Pool, tenant_id: str, master_key: str | None) -> tuple[str, rsa.RSAPrivateKey]:
    """signing_key, taking a connection from `pool` only when the cache cannot answer (a pool
    connection's release costs a reset round trip)."""
    cached = _fresh(_signing_cache, tenant_id)
    if cached:
        return cached[1], cached[2]
    async with pool.acquire() as conn:
        return await _read_signing_key(conn, tenant_id, master_key)


async def _read_signing_key(conn: asyncpg.Connection, tenant_id: str,
                            master_key: str | None) -> tuple[str, rsa.RSAPrivateKey]:
    row = await conn.fetchrow("SELECT kid, private_enc FROM tenant_keys WHERE tenant_id = $1 AND active", tenant_id)
    if row is None:  # a tenant made before keys existed: give it one now
        await create_key_pair(conn, tenant_id, master_key)
        return await signing_key(conn, tenant_id, master_key)
    blob = bytes(row["private_enc"])
    cached = _signing_cache.get(tenant_id)  # again: a caller that read with us may have decrypted it
    if cached is not None and cached[1] == row["kid"] and cached[3] == blob:
        key = cached[2]
    else:
        key = _decrypt_private(blob, master_key, tenant_id)
    _signing_cache[tenant_id] = (time.monotonic() + _CACHE_SECONDS, row["kid"], key, blob)
    return row["kid"], key


async def public_keys(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    """Every public key of the tenant, active first, then newest first."""
    rows = await conn.fetch("SELECT kid, public_pem, active, created_at FROM tenant_keys WHERE tenant_id = $1 "
                            "ORDER BY active DESC, id DESC", tenant_id)
    return [{"kid": r["kid"], "publicKey": r["public_pem"], "active": r["active"], "createdAt": r["created_at"]}
            for r in rows]


async def verifying_pems(conn: asyncpg.Connection, tenant_id: str) -> list[str]:
    """The tenant's public keys (PEM), active first; cached per process for a few seconds."""
    cached = _fresh(_verifying_cache, tenant_id)
    return cached[1] if cached else await _read_verifying_pems(conn, tenant_id)


async def verifying_pems_in(pool: asyncpg.Pool, tenant_id: str) -> list[str]:
    """verifying_pems, taking a connection from `pool` only when the cache cannot answer."""
    cached = _fresh(_verifying_cache, tenant_id)
    if cached:
        return cached[1]
    async with pool.acquire() as conn:
        return await _read_verifying_pems(conn, tenant_id)


async def _read_verifying_pems(conn: asyncpg.Connection, tenant_id: str) -> list[str]:
    pems = [k["publicKey"] for k in await public_keys(conn, tenant_id)]
    _verifying_cache[tenant_id] = (time.monotonic() + _CACHE_SECONDS, pems)
    return pems


async def current_public_pem(conn: asyncpg.Connection, tenant_id: str) -> str:
    keys = await public_keys(conn, tenant_id)
    if not keys:
        raise ApiError(404, "no_key", "this tenant has no key pair yet")
    return keys[0]["publicKey"]


def sign_pkcs1v15_sha256(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def verify_pkcs1v15_sha256(public_pem: str, data: bytes, signature: bytes) -> bool:
    public = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    try:
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


async def decrypt_oaep(conn: asyncpg.Connection, tenant_id: str, master_key: str | None, ciphertext: bytes) -> bytes:
    """RSA-OAEP-SHA256 decryption with the active key, then older ones (clients may hold an old PEM)."""
    rows = await conn.fetch("SELECT private_enc FROM tenant_keys WHERE tenant_id = $1 ORDER BY active DESC, id DESC",
                            tenant_id)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    for row in rows:
        key = _decrypt_private(bytes(row["private_enc"]), master_key, tenant_id)
        try:
            return key.decrypt(ciphertext, oaep)
        except ValueError:
            continue
    raise ApiError(400, "decryption_failed", "the payload was not encrypted with this tenant's public key")



# --- small secrets at rest (SMTP passwords, webhook signing secrets) ------------------------------

def seal(master_key: str, tenant_id: str, purpose: str, plaintext: bytes) -> bytes:
    """AES-256-GCM under the tenant's wrapping key; `purpose` and the tenant id are the associated
    data, so a sealed value cannot be moved to another tenant or used as another kind of secret."""
    nonce = os.urandom(12)
    aad = f"{tenant_id}|{purpose}".encode()
    return nonce + AESGCM(_wrapping_key(master_key, tenant_id)).encrypt(nonce, plaintext, aad)


def unseal(master_key: str, tenant_id: str, purpose: str, blob: bytes) -> bytes:
    aad = f"{tenant_id}|{purpose}".encode()
    return AESGCM(_wrapping_key(master_key, tenant_id)).decrypt(blob[:12], blob[12:], aad)


def mask_secret(secret: str) -> str:
    """`whsec_****abcd`: enough to tell secrets apart, never enough to use one."""
    prefix = secret.split("_", 1)[0] + "_" if "_" in secret[:12] else ""
    return f"{prefix}****{secret[-4:]}" if len(secret) > 8 else "****"

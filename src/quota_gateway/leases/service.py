"""Floating licenses: organizations, pool keys, and the lease lifecycle (obtain, check, renew,
release), with their SQL. Business outcomes are answers with success/isValid false and an
errorCode, never errors (see routes.py)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from .. import catalogue, crypto, tenants
from ..abuse import negative
from ..clock import iso_utc
from ..errors import ApiError
from ..licensing import keys as key_format
from . import token as lease_token
from .pool import Changed, LeasePools, LiveLeases, PoolRef

_LEASE_CODES = {"LEASE_RELEASED": "LEASE_RELEASED", "LEASE_RENEWED": "LEASE_INVALID", "KEY_INVALID": "KEY_INVALID",
                "KEY_EXPIRED": "KEY_EXPIRED"}


async def organization(pool: asyncpg.Pool, redis: Any, known: dict[str, str], org: str) -> str:
    """Tenant id for an organizationId (an id or a slug), remembered in `known`; 404 when none
    (remembered in the negative cache: a guessed organization reaches Postgres once per window)."""
    tenant_id = known.get(org)
    if tenant_id is None:
        found = await tenants.find(pool, redis, org)
        if found is None:
            raise ApiError(404, "organization_not_found", "no such organization")
        tenant_id = known[org] = found["id"]
    return tenant_id


def pool_ref(raw_key: str) -> tuple[PoolRef, bytes] | None:
    """(pool, key digest) of a well-formed key, else None."""
    key = key_format.normalize(raw_key)
    if key is None:
        return None
    digest = key_format.digest(key)
    return PoolRef(digest.hex()), digest


_KEY_COLUMNS = "id, tenant_id, lease_limit, expires_at, revoked_at, products"


_KEY_ROW = f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest = $1 AND tenant_id = $2"


async def _key_row(pool: asyncpg.Pool, tenant_id: str, digest: bytes) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow(_KEY_ROW, digest, tenant_id)


async def _owner_row(pool: asyncpg.Pool, digest: bytes) -> Any:
    """The key's row whoever owns it: what the pool's Redis metadata caches (the scripts compare
    the owner with the asking organization, so one organization's answer never lands in another's)."""
    async with pool.acquire() as conn:
        return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest = $1", digest)


async def _pool_row(pool: asyncpg.Pool, pool_id: str) -> Any:
    """The row of the key whose digest starts with `pool_id` (16 hex digits, what a lease carries),
    found through the unique index on key_digest as a range of digests."""
    low = bytes.fromhex(pool_id)
    high = int(pool_id, 16) + 1
    async with pool.acquire() as conn:
        if high >= 1 << 64:
            return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest >= $1", low)
        return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest >= $1 "
                                   "AND key_digest < $2", low, high.to_bytes(8, "big"))


_LIVE_LEASES = """
    SELECT h.lease_id, h.expires_at FROM lease_history h
    WHERE h.floating_key_id = $1 AND h.action IN ('obtained', 'renewed') AND h.expires_at > $2
      AND NOT EXISTS (SELECT 1 FROM lease_history e WHERE e.floating_key_id = $1
                      AND ((e.lease_id = h.lease_id AND e.action IN ('released', 'expired'))
                           OR (e.action = 'renewed' AND e.previous_lease_id = h.lease_id)))"""


def _live_leases(pool: asyncpg.Pool, now: int) -> LiveLeases:
    """What restores a pool after Redis lost it: a key's leases that the written-behind history
    shows obtained or renewed, unexpired, and neither released, expired nor renewed away."""
    async def read(key_id: int) -> list[tuple[str, int]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_LIVE_LEASES, key_id, datetime.fromtimestamp(now, tz=UTC))
        return [(r["lease_id"], int(r["expires_at"].timestamp())) for r in rows]
    return read


def _live_leases_on(conn: asyncpg.Connection, now: int, key_id: int) -> Callable[[], Awaitable[list[tuple[str, int]]]]:
    """_live_leases of one key, read on a connection the caller holds."""
    async def read() -> list[tuple[str, int]]:
        rows = await conn.fetch(_LIVE_LEASES, key_id, datetime.fromtimestamp(now, tz=UTC))
        return [(r["lease_id"], int(r["expires_at"].timestamp())) for r in rows]
    return read


# Every answer carries each field the ExaLicense README lists for its endpoint, null where it does
# not apply (errorCode null on success); key/validate's validFor is "[Object] || []".

def _key_answer(error_code: str | None, *, expiry: Any = None, lease_limit: int | None = None,
                leases_used: int | None = None, valid_for: list | None = None) -> dict:
    return {"isValid": error_code is None, "errorCode": error_code, "expiry": expiry, "leaseLimit": lease_limit,
            "leasesUsed": leases_used, "validFor": valid_for or []}


def _obtained(error_code: str | None, *, lease: str | None = None, expiry: str | None = None,
              valid_for: list | None = None, leases_used: int | None = None, lease_limit: int | None = None) -> dict:
    return {"success": error_code is None, "errorCode": error_code, "lease": lease, "expiry": expiry,
            "validFor": valid_for, "leasesUsed": leases_used, "leaseLimit": lease_limit}


def _lease_answer(error_code: str | None, *, expiry: str | None = None, valid_for: list | None = None) -> dict:
    return {"isValid": error_code is None, "errorCode": error_code, "expiry": expiry, "validFor": valid_for}


def _renewed(error_code: str | None, *, lease: str | None = None, expiry: str | None = None) -> dict:
    return {"success": error_code is None, "errorCode": error_code, "expiry": expiry, "lease": lease}


def _missing_key(tenant_id: str, digest: bytes) -> str:
    """The negative-cache entry of a key this organization does not have (scoped to it)."""
    return negative.entry("fk", tenant_id, digest)


async def validate_key(pool: asyncpg.Pool, redis: Any, pools: LeasePools, tenant_id: str, raw_key: str,
                       now: int) -> dict:
    found = pool_ref(raw_key)
    if found is None or await negative.is_missing(redis, _missing_key(tenant_id, found[1])):
        return _key_answer("KEY_INVALID")
    row = await _key_row(pool, tenant_id, found[1])
    if row is None:
        await negative.remember_missing(redis, _missing_key(tenant_id, found[1]))
    if row is None or row["revoked_at"] is not None:
        return _key_answer("KEY_INVALID")
    if row["expires_at"] is not None and row["expires_at"].timestamp() <= now:
        return _key_answer("KEY_EXPIRED", expiry=row["expires_at"])
    key_id = row["id"]
    used = await pools.used(found[0], now, lambda: _live_leases(pool, now)(key_id))
    async with pool.acquire() as conn:
        valid_for = await _valid_for(conn, tenant_id, row["products"])
    return _key_answer(None, expiry=row["expires_at"], lease_limit=row["lease_limit"], leases_used=used,
                       valid_for=valid_for)


async def _valid_for(conn: asyncpg.Connection, tenant_id: str, products: list[dict]) -> list[dict]:
    out = []
    for entry in products:
        try:
            product = await catalogue.get_product(conn, tenant_id, entry["productId"])
        except ApiError:
            continue  # the product was removed since
        described = {f["name"]: f["description"] for f in await catalogue.product_features(conn, tenant_id,
                                                                                          product["id"])}
        out.append({"product": product["name"], "productDescription": product["description"],
                    "features": [{"feature": name, "featureDescription": described.get(name, "")}
                                 for name in entry["features"]]})
    return out


async def _sign(pool: asyncpg.Pool, master_key: str | None, tenant_id: str, payload: dict) -> str:
    _, private = await crypto.signing_key_in(pool, tenant_id, master_key)
    return lease_token.issue(private, payload)


async def obtain(pool: asyncpg.Pool, pools: LeasePools, master_key: str | None, tenant_id: str, raw_key: str,
                 seconds: int, client_id: str, now: int) -> dict:
    """A signed lease from the key's pool (never more than leaseLimit live leases)."""
    found = pool_ref(raw_key)
    if found is None:
        return _obtained("KEY_INVALID")
    ref, digest = found
    lease_id = secrets.token_hex(12)

    async def load() -> Any:
        return await _owner_row(pool, digest)

    obtained = await pools.obtain(ref, tenant_id, load, now, seconds, lease_id, client_id,
                                  live_leases=_live_leases(pool, now))
    if obtained.code == "LEASE_LIMIT_REACHED":  # the pool's counts are what this failure is about
        return _obtained(obtained.code, leases_used=obtained.used, lease_limit=obtained.limit)
    if obtained.code != "OK":
        return _obtained(obtained.code)
    lease = await _sign(pool, master_key, tenant_id, {"lid": lease_id, "key": ref.pool, "org": tenant_id,
                                                      "cid": client_id, "iat": now, "exp": obtained.expiry})
    async with pool.acquire() as conn:  # one connection (one reset on release) for the row and validFor
        row = await conn.fetchrow(_KEY_ROW, digest, tenant_id)
        valid_for = await _valid_for(conn, tenant_id, row["products"]) if row is not None else []
    return _obtained(None, lease=lease, expiry=iso_utc(obtained.expiry), valid_for=valid_for,
                     leases_used=obtained.used, lease_limit=obtained.limit)


async def _verified_lease(pool: asyncpg.Pool, tenant_id: str, lease: str) -> dict | None:
    parsed = lease_token.read(lease)
    if parsed is None:
        return None
    payload, signed, signature = parsed
    if payload.get("org") != tenant_id:
        return None
    pems = await crypto.verifying_pems_in(pool, tenant_id)
    return payload if lease_token.verify(pems, signed, signature) else None


async def _change(pool: asyncpg.Pool, pools: LeasePools, tenant_id: str, payload: dict, action: str, now: int,
                  new_id: str = "", seconds: int = 0) -> Changed:
    pool_id = payload["key"]
    if not isinstance(pool_id, str) or len(pool_id) != 16 or any(c not in "0123456789abcdef" for c in pool_id):
        return Changed("KEY_INVALID", 0)  # signed by this organization, yet not a pool id it issues

    async def load() -> Any:
        return await _pool_row(pool, pool_id)

    return await pools.change(PoolRef(pool_id), action, now, payload["lid"], new_id, seconds, tenant_id=tenant_id,
                              loader=load, live_leases=_live_leases(pool, now))


def _lease_failure(code: str, payload: dict, now: int) -> str:
    if code == "LEASE_GONE":
        return "LEASE_EXPIRED" if int(payload["exp"]) <= now else "LEASE_INVALID"
    return _LEASE_CODES[code]


async def validate_lease(pool: asyncpg.Pool, pools: LeasePools, tenant_id: str, lease: str, now: int) -> dict:
    payload = await _verified_lease(pool, tenant_id, lease)
    if payload is None:
        return _lease_answer("LEASE_INVALID")
    changed = await _change(pool, pools, tenant_id, payload, "check", now)
    if changed.code != "OK":
        return _lease_answer(_lease_failure(changed.code, payload, now))
    row = await _pool_row(pool, payload["key"])
    valid_for = []
    if row is not None and str(row["tenant_id"]) == tenant_id:
        async with pool.acquire() as conn:
            valid_for = await _valid_for(conn, tenant_id, row["products"])
    return _lease_answer(None, expiry=iso_utc(changed.expiry), valid_for=valid_for)


async def renew(pool: asyncpg.Pool, pools: LeasePools, master_key: str | None, tenant_id: str, lease: str,
                seconds: int, now: int) -> dict:
    """A new lease in place of a live one (the old lease stops being valid)."""
    payload = await _verified_lease(pool, tenant_id, lease)
    if payload is None:
        return _renewed("LEASE_INVALID")
    new_id = secrets.token_hex(12)
    changed = await _change(pool, pools, tenant_id, payload, "renew", now, new_id, seconds)
    if changed.code != "OK":
        return _renewed(_lease_failure(changed.code, payload, now))
    renewed = await _sign(pool, master_key, tenant_id, {**payload, "lid": new_id, "iat": now, "exp": changed.expiry})
    return _renewed(None, lease=renewed, expiry=iso_utc(changed.expiry))


async def release(pool: asyncpg.Pool, pools: LeasePools, tenant_id: str, lease: str, now: int) -> dict:
    payload = await _verified_lease(pool, tenant_id, lease)
    if payload is None:
        return {"success": False, "errorCode": "LEASE_INVALID"}
    await _change(pool, pools, tenant_id, payload, "release", now)
    return {"success": True, "errorCode": None}


# --- management ----------------------------------------------------------------------------------

def _customer_json(row: Any) -> dict:
    return {"id": row["id"], "name": row["name"], "contact": row["contact"], "createdAt": row["created_at"]}


async def create_customer(conn: asyncpg.Connection, tenant_id: str, name: str, contact: str, now: datetime) -> dict:
    row = await conn.fetchrow("INSERT INTO customers (tenant_id, name, contact, created_at) VALUES ($1, $2, $3, $4) "
                              "RETURNING id, name, contact, created_at", tenant_id, name, contact, now)
    return _customer_json(row)


async def list_customers(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT id, name, contact, created_at FROM customers WHERE tenant_id = $1 ORDER BY id",
                            tenant_id)
    return [_customer_json(r) for r in rows]


async def create_floating_key(pool: asyncpg.Pool, redis: Any, pools: LeasePools, tenant_id: str, now: datetime,
                              body: dict) -> dict:
    """A floating key with a lease limit and the products/features it grants; shown in full once."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT 1 FROM customers WHERE id = $1 AND tenant_id = $2", body["customerId"],
                                   tenant_id):
            raise ApiError(404, "customer_not_found", f"no customer {body['customerId']}")
        for entry in body["products"]:
            await catalogue.get_product(conn, tenant_id, entry["productId"])
            known = {f["name"] for f in await catalogue.product_features(conn, tenant_id, entry["productId"])}
            unknown = sorted(set(entry["features"]) - known)
            if unknown:
                raise ApiError(400, "unknown_feature", f"not features of product {entry['productId']}: "
                               f"{', '.join(unknown)}")
        key = key_format.generate()
        expires = now + timedelta(days=body["validityDays"]) if body["validityDays"] else None
        row = await conn.fetchrow(
            """INSERT INTO floating_keys (tenant_id, customer_id, key_digest, key_hint, lease_limit, products, expires_at,
                                         created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, lease_limit, expires_at, products, created_at""",
            tenant_id, body["customerId"], key_format.digest(key), key_format.hint(key), body["leaseLimit"],
            body["products"], expires, now)
    await pools.invalidate(PoolRef(key_format.digest(key).hex()))
    await negative.forget(redis, _missing_key(tenant_id, key_format.digest(key)))
    return {"id": row["id"], "key": key, "customerId": body["customerId"], "leaseLimit": row["lease_limit"],
            "expiresAt": row["expires_at"], "products": row["products"]}


async def list_floating_keys(conn: asyncpg.Connection, tenant_id: str) -> list[dict]:
    rows = await conn.fetch("SELECT id, customer_id, key_hint, lease_limit, expires_at, revoked_at, products "
                            "FROM floating_keys WHERE tenant_id = $1 ORDER BY id", tenant_id)
    return [{"id": r["id"], "key": r["key_hint"], "customerId": r["customer_id"], "leaseLimit": r["lease_limit"],
             "expiresAt": r["expires_at"], "revokedAt": r["revoked_at"], "products": r["products"]} for r in rows]


async def revoke_floating_key(pool: asyncpg.Pool, pools: LeasePools, tenant_id: str, raw_key: str,
                              now: datetime) -> dict:
    """No new leases, and live ones stop validating; 404 when the tenant has no such key."""
    found = pool_ref(raw_key)
    if found is None:
        raise ApiError(404, "not_found", "no such floating key")
    async with pool.acquire() as conn:
        status = await conn.execute("UPDATE floating_keys SET revoked_at = COALESCE(revoked_at, $3) "
                                    "WHERE key_digest = $1 AND tenant_id = $2", found[1], tenant_id, now)
    if not status.endswith(" 1"):
        raise ApiError(404, "not_found", "no such floating key")
    await pools.invalidate(found[0])
    return {"revoked": True}


async def floating_keys_overview(conn: asyncpg.Connection, pools: LeasePools, tenant_id: str,
                                 now: int) -> list[dict]:
    """Every floating key of the tenant with its customer's name and how many leases are live now
    (for the admin pages; the key itself is never stored, only its visible part)."""
    rows = await conn.fetch(
        """SELECT k.id, k.key_digest, k.key_hint, k.lease_limit, k.expires_at, k.revoked_at, k.products,
                  k.created_at, c.id AS customer_id, c.name AS customer_name
           FROM floating_keys k JOIN customers c ON c.id = k.customer_id
           WHERE k.tenant_id = $1 ORDER BY k.id DESC""", tenant_id)
    found = []
    for r in rows:
        live = 0 if r["revoked_at"] else await pools.used(PoolRef(bytes(r["key_digest"]).hex()), now,
                                                          _live_leases_on(conn, now, r["id"]))
        found.append({**{k: v for k, v in dict(r).items() if k != "key_digest"}, "live": live})
    return found


async def floating_key_with_leases(conn: asyncpg.Connection, pools: LeasePools, tenant_id: str, key_id: int,
                                   now: int, limit: int = 200) -> dict:
    """One floating key of the tenant and its live leases, soonest expiry first, each with the
    client that obtained it when the lease history knows it; 404 when the tenant has no such key."""
    row = await conn.fetchrow(
        """SELECT k.id, k.key_digest, k.key_hint, k.lease_limit, k.expires_at, k.revoked_at, k.products,
                  k.created_at, c.id AS customer_id, c.name AS customer_name, c.contact AS customer_contact
           FROM floating_keys k JOIN customers c ON c.id = k.customer_id
           WHERE k.id = $1 AND k.tenant_id = $2""", key_id, tenant_id)
    if row is None:
        raise ApiError(404, "not_found", "There is no such floating key.")
    leases = []
    if row["revoked_at"] is None:
        ref = PoolRef(bytes(row["key_digest"]).hex())
        await pools.used(ref, now, _live_leases_on(conn, now, key_id))   # restores a pool Redis lost
        leases = await pools.live(ref, now, limit)
    # Obtained entries name the client; history reaches Postgres within the flush interval.
    obtained = {r["lease_id"]: (r["client_id"], r["at"]) for r in await conn.fetch(
        "SELECT lease_id, client_id, at FROM lease_history WHERE floating_key_id = $1 AND tenant_id = $2 "
        "AND lease_id = ANY($3::text[])", key_id, tenant_id, [lease.lease_id for lease in leases])}
    return {**{k: v for k, v in dict(row).items() if k != "key_digest"},
            "leases": [{"leaseId": lease.lease_id, "expiresAt": lease.expiry,
                        "clientId": obtained.get(lease.lease_id, ("", None))[0] or None,
                        "since": obtained.get(lease.lease_id, ("", None))[1]} for lease in leases]}


async def revoke_floating_key_by_id(pool: asyncpg.Pool, pools: LeasePools, tenant_id: str, key_id: int,
                                    now: datetime) -> None:
    """As revoke_floating_key, by the key's id (the admin pages never hold the key itself)."""
    async with pool.acquire() as conn:
        digest = await conn.fetchval("UPDATE floating_keys SET revoked_at = COALESCE(revoked_at, $3) "
                                     "WHERE id = $1 AND tenant_id = $2 RETURNING key_digest", key_id, tenant_id, now)
    if digest is None:
        raise ApiError(404, "not_found", "There is no such floating key.")
    await pools.invalidate(PoolRef(bytes(digest).hex()))

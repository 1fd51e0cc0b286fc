"""Floating-license endpoints.

Client side, under /licensing/{organizationId}/ (ExaLicense's shape): authenticated by what the
client holds, not by an access token. The license key itself proves the right to obtain a lease
(it must belong to that organization), and a lease is a token signed by the organization's key.
Management (customers, pool keys) uses access tokens with the manage permission.

Business outcomes answer 200 with success/isValid false and an errorCode (KEY_INVALID,
KEY_EXPIRED, LEASE_LIMIT_REACHED, LEASE_INVALID, LEASE_RELEASED, LEASE_EXPIRED); malformed input
is 400, an unknown organization 404.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from starlette.responses import Response

from .. import catalogue, crypto, tenants
from ..autopipeline import AutoPipeline, ClusterAutoPipeline
from ..errors import ApiError
from ..jsonio import JSONResponse
from ..licensing import keys as key_format
from ..routing import Call, endpoint
from ..schema import Int, List, Query, Str, obj
from . import token as lease_token
from .history import HistoryDrainer
from .pool import LeasePools, PoolRef

DEFAULT_LEASE_SECONDS = 600
MAX_LEASE_SECONDS = 30 * 86400

_OBTAIN = obj(key=Str(required=True, min_len=1, max_len=64),
              expiry=Int(minimum=1, maximum=MAX_LEASE_SECONDS, default=DEFAULT_LEASE_SECONDS,
                         description="lease length in seconds"),
              clientId=Str(max_len=200, default=""))
_RENEW = obj(lease=Str(required=True, min_len=1, max_len=4096),
             expiry=Int(minimum=1, maximum=MAX_LEASE_SECONDS, default=DEFAULT_LEASE_SECONDS))
_RELEASE = obj(lease=Str(required=True, min_len=1, max_len=4096))
_KEY_QUERY = Query({"key": Str(required=True, min_len=1, max_len=64)})
_LEASE_QUERY = Query({"lease": Str(required=True, min_len=1, max_len=4096)})
_CUSTOMER = obj(name=Str(required=True, min_len=1, max_len=200), contact=Str(max_len=500, default=""))
_FLOATING_KEY = obj(
    customerId=Int(required=True, minimum=1),
    leaseLimit=Int(required=True, minimum=1, maximum=1_000_000),
    validityDays=Int(minimum=1, maximum=36500, description="omit for no expiry"),
    products=List(required=True, max_items=100,
                  item=obj(productId=Int(required=True, minimum=1),
                           features=List(item=Str(min_len=1, max_len=100), max_items=500, default=[]))),
)
_ERRORS = ("KEY_INVALID", "KEY_EXPIRED", "LEASE_LIMIT_REACHED", "LEASE_INVALID", "LEASE_RELEASED", "LEASE_EXPIRED")
_org_cache: dict[str, str] = {}


def _pools(call: Call) -> LeasePools:
    return call.services.domains["leases"]


async def _organization(call: Call) -> str:
    """Tenant id for the path's organizationId (an id or a slug)."""
    org = call.path["org"]
    tenant_id = _org_cache.get(org)
    if tenant_id is None:
        async with call.services.pool.acquire() as conn:
            found = await tenants.get_tenant(conn, org)
        if found is None:
            raise ApiError(404, "organization_not_found", "no such organization")
        tenant_id = _org_cache[org] = found["id"]
    return tenant_id


def _pool_ref(raw_key: str) -> tuple[PoolRef, bytes] | None:
    key = key_format.normalize(raw_key)
    if key is None:
        return None
    digest = key_format.digest(key)
    return PoolRef(digest.hex()), digest


_KEY_COLUMNS = "id, tenant_id, lease_limit, expires_at, revoked_at, products"


async def _key_row(call: Call, tenant_id: str, digest: bytes):
    async with call.services.pool.acquire() as conn:
        return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest = $1 AND tenant_id = $2",
                                   digest, tenant_id)


async def _owner_row(call: Call, digest: bytes):
    """The key's row whoever owns it: what the pool's Redis metadata caches (the scripts compare
    the owner with the asking organization, so one organization's answer never lands in another's)."""
    async with call.services.pool.acquire() as conn:
        return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest = $1", digest)


async def _pool_row(call: Call, pool: str):
    """The row of the key whose digest starts with `pool` (16 hex digits, what a lease carries),
    found through the unique index on key_digest as a range of digests."""
    low = bytes.fromhex(pool)
    high = int(pool, 16) + 1
    async with call.services.pool.acquire() as conn:
        if high >= 1 << 64:
            return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest >= $1", low)
        return await conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM floating_keys WHERE key_digest >= $1 "
                                   "AND key_digest < $2", low, high.to_bytes(8, "big"))


def _now(call: Call) -> int:
    return int(call.services.clock.now())


def _iso(ts: int) -> str:
    from ..clock import iso_utc

    return iso_utc(ts)


async def validate_key(call: Call) -> dict:
    """Is this license key valid here, and what does it grant?"""
    tenant_id = await _organization(call)
    found = _pool_ref(call.query["key"])
    row = await _key_row(call, tenant_id, found[1]) if found else None
    now = _now(call)
    if row is None or row["revoked_at"] is not None:
        return {"isValid": False, "errorCode": "KEY_INVALID"}
    if row["expires_at"] is not None and row["expires_at"].timestamp() <= now:
        return {"isValid": False, "errorCode": "KEY_EXPIRED", "expiry": row["expires_at"]}
    used = await _pools(call).used(found[0], now)
    return {"isValid": True, "expiry": row["expires_at"], "leaseLimit": row["lease_limit"], "leasesUsed": used,
            "validFor": await _valid_for(call, tenant_id, row["products"])}


async def _valid_for(call: Call, tenant_id: str, products: list[dict]) -> list[dict]:
    out = []
    async with call.services.pool.acquire() as conn:
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


async def obtain(call: Call) -> dict:
    """Take a lease from the key's pool (never more than leaseLimit live leases)."""
    tenant_id = await _organization(call)
    b = call.body
    found = _pool_ref(b["key"])
    if found is None:
        return {"success": False, "errorCode": "KEY_INVALID"}
    ref, digest = found
    now = _now(call)
    lease_id = secrets.token_hex(12)

    async def load():
        return await _owner_row(call, digest)

    reply = await _pools(call).obtain(ref, tenant_id, load, now, b["expiry"], lease_id, b["clientId"])
    code = reply[0]
    if code == "LEASE_LIMIT_REACHED":
        return {"success": False, "errorCode": code, "leasesUsed": int(reply[1]), "leaseLimit": int(reply[2])}
    if code != "OK":
        return {"success": False, "errorCode": code}
    expiry = int(reply[3])
    async with call.services.pool.acquire() as conn:
        _, private = await crypto.signing_key(conn, tenant_id, call.services.settings.master_key)
    lease = lease_token.issue(private, {"lid": lease_id, "key": ref.pool, "org": tenant_id, "cid": b["clientId"],
                                        "iat": now, "exp": expiry})
    return {"success": True, "lease": lease, "expiry": _iso(expiry), "leasesUsed": int(reply[1]),
            "leaseLimit": int(reply[2])}


async def _verified_lease(call: Call, tenant_id: str, lease: str) -> dict | None:
    parsed = lease_token.read(lease)
    if parsed is None:
        return None
    payload, signed, signature = parsed
    if payload.get("org") != tenant_id:
        return None
    async with call.services.pool.acquire() as conn:
        pems = await crypto.verifying_pems(conn, tenant_id)
    return payload if lease_token.verify(pems, signed, signature) else None


async def _change(call: Call, tenant_id: str, payload: dict, action: str, now: int, new_id: str = "",
                  seconds: int = 0) -> tuple[str, int]:
    pool = payload["key"]
    if not isinstance(pool, str) or len(pool) != 16 or any(c not in "0123456789abcdef" for c in pool):
        return "KEY_INVALID", 0  # signed by this organization, yet not a pool id it issues

    async def load():
        return await _pool_row(call, pool)

    return await _pools(call).change(PoolRef(pool), action, now, payload["lid"], new_id, seconds, tenant_id=tenant_id,
                                     loader=load)


_LEASE_CODES = {"LEASE_RELEASED": "LEASE_RELEASED", "LEASE_RENEWED": "LEASE_INVALID", "KEY_INVALID": "KEY_INVALID",
                "KEY_EXPIRED": "KEY_EXPIRED"}


def _lease_failure(code: str, payload: dict, now: int) -> str:
    if code == "LEASE_GONE":
        return "LEASE_EXPIRED" if int(payload["exp"]) <= now else "LEASE_INVALID"
    return _LEASE_CODES[code]


async def validate_lease(call: Call) -> dict:
    """Is this lease live? (Its signature can also be checked offline against signature.pem.)"""
    tenant_id = await _organization(call)
    payload = await _verified_lease(call, tenant_id, call.query["lease"])
    if payload is None:
        return {"isValid": False, "errorCode": "LEASE_INVALID"}
    now = _now(call)
    code, expiry = await _change(call, tenant_id, payload, "check", now)
    if code != "OK":
        return {"isValid": False, "errorCode": _lease_failure(code, payload, now)}
    return {"isValid": True, "expiry": _iso(expiry)}


async def renew(call: Call) -> dict:
    """Replace a live lease by a new one (the old lease stops being valid)."""
    tenant_id = await _organization(call)
    payload = await _verified_lease(call, tenant_id, call.body["lease"])
    if payload is None:
        return {"success": False, "errorCode": "LEASE_INVALID"}
    now = _now(call)
    new_id = secrets.token_hex(12)
    code, expiry = await _change(call, tenant_id, payload, "renew", now, new_id, call.body["expiry"])
    if code != "OK":
        return {"success": False, "errorCode": _lease_failure(code, payload, now)}
    async with call.services.pool.acquire() as conn:
        _, private = await crypto.signing_key(conn, tenant_id, call.services.settings.master_key)
    lease = lease_token.issue(private, {**payload, "lid": new_id, "iat": now, "exp": expiry})
    return {"success": True, "lease": lease, "expiry": _iso(expiry)}


async def release(call: Call) -> dict:
    """Give a lease back; releasing twice is fine."""
    tenant_id = await _organization(call)
    payload = await _verified_lease(call, tenant_id, call.body["lease"])
    if payload is None:
        return {"success": False, "errorCode": "LEASE_INVALID"}
    await _change(call, tenant_id, payload, "release", _now(call))
    return {"success": True}


async def signature_pem(call: Call) -> Response:
    """The organization's public key: verifies leases offline."""
    tenant_id = await _organization(call)
    async with call.services.pool.acquire() as conn:
        pem = await crypto.current_public_pem(conn, tenant_id)
    return Response(pem, media_type="application/x-pem-file")


# --- management ----------------------------------------------------------------------------------

async def create_customer(call: Call) -> JSONResponse:
    """Add a customer (who holds floating keys)."""
    async with call.services.pool.acquire() as conn:
        row = await conn.fetchrow("INSERT INTO customers (tenant_id, name, contact) VALUES ($1, $2, $3) "
                                  "RETURNING id, name, contact, created_at", call.tenant_id, call.body["name"],
                                  call.body["contact"])
    return JSONResponse(_customer_json(row), status_code=201)


async def list_customers(call: Call) -> dict:
    """List customers."""
    async with call.services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, name, contact, created_at FROM customers WHERE tenant_id = $1 ORDER BY id",
                                call.tenant_id)
    return {"items": [_customer_json(r) for r in rows]}


def _customer_json(row) -> dict:
    return {"id": row["id"], "name": row["name"], "contact": row["contact"], "createdAt": row["created_at"]}


async def create_floating_key(call: Call) -> JSONResponse:
    """Issue a floating license key with a lease limit and the products/features it grants."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        if not await conn.fetchval("SELECT 1 FROM customers WHERE id = $1 AND tenant_id = $2", b["customerId"],
                                   call.tenant_id):
            raise ApiError(404, "customer_not_found", f"no customer {b['customerId']}")
        for entry in b["products"]:
            await catalogue.get_product(conn, call.tenant_id, entry["productId"])
            known = {f["name"] for f in await catalogue.product_features(conn, call.tenant_id, entry["productId"])}
            unknown = sorted(set(entry["features"]) - known)
            if unknown:
                raise ApiError(400, "unknown_feature", f"not features of product {entry['productId']}: "
                               f"{', '.join(unknown)}")
        key = key_format.generate()
        expires = call.services.clock.utcnow() + timedelta(days=b["validityDays"]) if b["validityDays"] else None
        row = await conn.fetchrow(
            """INSERT INTO floating_keys (tenant_id, customer_id, key_digest, key_hint, lease_limit, products, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, lease_limit, expires_at, products, created_at""",
            call.tenant_id, b["customerId"], key_format.digest(key), key_format.hint(key), b["leaseLimit"],
            b["products"], expires)
    await _pools(call).invalidate(_pool_ref(key)[0])
    return JSONResponse({"id": row["id"], "key": key, "customerId": b["customerId"], "leaseLimit": row["lease_limit"],
                         "expiresAt": row["expires_at"], "products": row["products"]}, status_code=201)


async def list_floating_keys(call: Call) -> dict:
    """List floating keys (masked)."""
    async with call.services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, customer_id, key_hint, lease_limit, expires_at, revoked_at, products "
                                "FROM floating_keys WHERE tenant_id = $1 ORDER BY id", call.tenant_id)
    return {"items": [{"id": r["id"], "key": r["key_hint"], "customerId": r["customer_id"],
                       "leaseLimit": r["lease_limit"], "expiresAt": r["expires_at"], "revokedAt": r["revoked_at"],
                       "products": r["products"]} for r in rows]}


async def revoke_floating_key(call: Call) -> dict:
    """Revoke a floating key: no new leases, live ones stop validating."""
    found = _pool_ref(call.path["key"])
    async with call.services.pool.acquire() as conn:
        status = await conn.execute("UPDATE floating_keys SET revoked_at = COALESCE(revoked_at, now()) "
                                    "WHERE key_digest = $1 AND tenant_id = $2", found[1] if found else b"",
                                    call.tenant_id)
    if not status.endswith(" 1"):
        raise ApiError(404, "not_found", "no such floating key")
    await _pools(call).invalidate(found[0])
    return {"revoked": True}


async def start(services) -> None:
    settings = services.settings
    runner = ClusterAutoPipeline(settings.redis_url) if settings.redis_cluster else AutoPipeline(settings.redis_url)
    pools = LeasePools(services, runner)
    services.domains["leases"] = pools
    drainer = HistoryDrainer(services, pools, settings.flush_interval)
    services.domains["leases.history"] = drainer
    drainer.start()


async def stop(services) -> None:
    await services.domains["leases.history"].stop()
    await services.domains["leases"].runner.aclose()


_ORG = "/licensing/{org}"
routes = [
    endpoint("GET", f"{_ORG}/key/validate", validate_key, scope=None, query=_KEY_QUERY, tag="floating",
             errors=_ERRORS, responses={200: "isValid, leaseLimit, leasesUsed, validFor", 404: "no such organization"}),
    endpoint("POST", f"{_ORG}/lease/obtain", obtain, scope=None, body=_OBTAIN, tag="floating", errors=_ERRORS,
             responses={200: "success with a signed lease, or an errorCode", 404: "no such organization"}),
    endpoint("GET", f"{_ORG}/lease/validate", validate_lease, scope=None, query=_LEASE_QUERY, tag="floating",
             errors=_ERRORS, responses={200: "isValid or an errorCode", 404: "no such organization"}),
    endpoint("POST", f"{_ORG}/lease/renew", renew, scope=None, body=_RENEW, tag="floating", errors=_ERRORS,
             responses={200: "a new lease, or an errorCode", 404: "no such organization"}),
    endpoint("POST", f"{_ORG}/lease/release", release, scope=None, body=_RELEASE, tag="floating", errors=_ERRORS,
             responses={200: "success", 404: "no such organization"}),
    endpoint("GET", f"{_ORG}/signature.pem", signature_pem, scope=None, tag="floating",
             responses={200: "PEM", 404: "no such organization"}),
    endpoint("POST", "/api/customers", create_customer, scope="manage", body=_CUSTOMER, tag="floating",
             responses={201: "created"}),
    endpoint("GET", "/api/customers", list_customers, scope="manage", tag="floating"),
    endpoint("POST", "/api/floating/keys", create_floating_key, scope="manage", body=_FLOATING_KEY, tag="floating",
             errors=("customer_not_found", "product_not_found", "unknown_feature"),
             responses={201: "created; the key is shown once", 404: "no such customer or product"}),
    endpoint("GET", "/api/floating/keys", list_floating_keys, scope="manage", tag="floating"),
    endpoint("DELETE", "/api/floating/keys/{key}", revoke_floating_key, scope="manage", tag="floating",
             errors=("not_found",), responses={200: "revoked", 404: "no such key"}),
]

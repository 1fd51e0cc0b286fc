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

import functools
from collections.abc import Awaitable, Callable

from starlette.responses import Response

from .. import crypto
from ..abuse.clientlimit import note_failed_lookup
from ..answers import BOOLEAN, INTEGER, STRING, TEXT, TIMESTAMP, answer, array, component, items, nullable, one_of
from ..jsonio import JSONResponse
from ..routing import Call, Handler, endpoint
from ..schema import Int, List, Query, Str, obj
from . import service

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
_FAILED_LOOKUPS = frozenset(("KEY_INVALID", "LEASE_INVALID"))
_ERRORS = ("KEY_INVALID", "KEY_EXPIRED", "LEASE_LIMIT_REACHED", "LEASE_INVALID", "LEASE_RELEASED", "LEASE_EXPIRED")

# Answers: each member the ExaLicense README lists, null where it does not apply (leases.service).
_ERROR_CODE = nullable(one_of(*_ERRORS))
_VALID_FOR = component("LeaseValidFor", array(answer(
    product=STRING, productDescription=STRING,
    features=array(answer(feature=STRING, featureDescription=STRING)))))
_KEY_VALIDATED = answer(isValid=BOOLEAN, errorCode=_ERROR_CODE, expiry=nullable(TIMESTAMP), leaseLimit=nullable(INTEGER),
                        leasesUsed=nullable(INTEGER), validFor=_VALID_FOR)
_OBTAINED = answer(success=BOOLEAN, errorCode=_ERROR_CODE, lease=nullable(STRING), expiry=nullable(TIMESTAMP),
                   validFor=nullable(_VALID_FOR), leasesUsed=nullable(INTEGER), leaseLimit=nullable(INTEGER))
_LEASE_VALIDATED = answer(isValid=BOOLEAN, errorCode=_ERROR_CODE, expiry=nullable(TIMESTAMP), validFor=nullable(_VALID_FOR))
_RENEWED = answer(success=BOOLEAN, errorCode=_ERROR_CODE, expiry=nullable(TIMESTAMP), lease=nullable(STRING))
_RELEASED = answer(success=BOOLEAN, errorCode=_ERROR_CODE)
_CUSTOMER_SHOWN = answer(id=INTEGER, name=STRING, contact=STRING, createdAt=TIMESTAMP)
_GRANTS = array(answer(productId=INTEGER, features=array(STRING)))
_NEW_FLOATING_KEY = answer(id=INTEGER, key=STRING, customerId=INTEGER, leaseLimit=INTEGER, expiresAt=nullable(TIMESTAMP),
                           products=_GRANTS)
_FLOATING_KEY_SHOWN = answer(id=INTEGER, key=STRING, customerId=INTEGER, leaseLimit=INTEGER, expiresAt=nullable(TIMESTAMP),
                       revokedAt=nullable(TIMESTAMP), products=_GRANTS)


async def _organization(call: Call) -> str:
    """Tenant id for the path's organizationId (an id or a slug)."""
    return await service.organization(call.services.pool, call.services.redis, call.services.lease_orgs,
                                      call.path["org"])


def _client_side(handler: Callable[[Call, str, int], Awaitable[dict]]) -> Handler:
    """A client-side endpoint: `handler(call, tenant id, now)` once the path's organization is
    found; an answer naming a key or lease that matched nothing counts against the client's address."""
    @functools.wraps(handler)
    async def answer(call: Call) -> dict:
        tenant_id = await _organization(call)
        found = await handler(call, tenant_id, int(call.services.clock.now()))
        if found.get("errorCode") in _FAILED_LOOKUPS:
            note_failed_lookup(call.request.scope)
        return found
    return answer


@_client_side
async def validate_key(call: Call, tenant_id: str, now: int) -> dict:
    """Is this license key valid here, and what does it grant?"""
    s = call.services
    return await service.validate_key(s.pool, s.redis, s.lease_pools, tenant_id, call.query["key"], now)


@_client_side
async def obtain(call: Call, tenant_id: str, now: int) -> dict:
    """Take a lease from the key's pool (never more than leaseLimit live leases)."""
    s, b = call.services, call.body
    return await service.obtain(s.pool, s.lease_pools, s.settings.master_key, tenant_id, b["key"], b["expiry"],
                                b["clientId"], now)


@_client_side
async def validate_lease(call: Call, tenant_id: str, now: int) -> dict:
    """Is this lease live? (Its signature can also be checked offline against signature.pem.)"""
    return await service.validate_lease(call.services.pool, call.services.lease_pools, tenant_id, call.query["lease"],
                                        now)


@_client_side
async def renew(call: Call, tenant_id: str, now: int) -> dict:
    """Replace a live lease by a new one (the old lease stops being valid)."""
    s, b = call.services, call.body
    return await service.renew(s.pool, s.lease_pools, s.settings.master_key, tenant_id, b["lease"], b["expiry"], now)


@_client_side
async def release(call: Call, tenant_id: str, now: int) -> dict:
    """Give a lease back; releasing twice is fine."""
    return await service.release(call.services.pool, call.services.lease_pools, tenant_id, call.body["lease"], now)


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
        made = await service.create_customer(conn, call.tenant_id, call.body["name"], call.body["contact"],
                                              call.services.clock.utcnow())
    return JSONResponse(made, status_code=201)


async def list_customers(call: Call) -> dict:
    """List customers."""
    async with call.services.pool.acquire() as conn:
        return {"items": await service.list_customers(conn, call.tenant_id)}


async def create_floating_key(call: Call) -> JSONResponse:
    """Issue a floating license key with a lease limit and the products/features it grants."""
    made = await service.create_floating_key(call.services.pool, call.services.redis, call.services.lease_pools,
                                             call.tenant_id,
                                             call.services.clock.utcnow(), call.body)
    return JSONResponse(made, status_code=201)


async def list_floating_keys(call: Call) -> dict:
    """List floating keys (masked)."""
    async with call.services.pool.acquire() as conn:
        return {"items": await service.list_floating_keys(conn, call.tenant_id)}


async def revoke_floating_key(call: Call) -> dict:
    """Revoke a floating key: no new leases, live ones stop validating."""
    return await service.revoke_floating_key(call.services.pool, call.services.lease_pools, call.tenant_id,
                                             call.path["key"], call.services.clock.utcnow())


_ORG = "/licensing/{org}"
routes = [
    endpoint("GET", f"{_ORG}/key/validate", validate_key, scope=None, query=_KEY_QUERY, tag="floating",
             errors=_ERRORS, responses={200: "isValid, leaseLimit, leasesUsed, validFor", 404: "no such organization"},
             returns=_KEY_VALIDATED),
    endpoint("POST", f"{_ORG}/lease/obtain", obtain, scope=None, body=_OBTAIN, tag="floating", errors=_ERRORS,
             responses={200: "success with a signed lease, or an errorCode", 404: "no such organization"},
             returns=_OBTAINED),
    endpoint("GET", f"{_ORG}/lease/validate", validate_lease, scope=None, query=_LEASE_QUERY, tag="floating",
             errors=_ERRORS, responses={200: "isValid or an errorCode", 404: "no such organization"},
             returns=_LEASE_VALIDATED),
    endpoint("POST", f"{_ORG}/lease/renew", renew, scope=None, body=_RENEW, tag="floating", errors=_ERRORS,
             responses={200: "a new lease, or an errorCode", 404: "no such organization"}, returns=_RENEWED),
    endpoint("POST", f"{_ORG}/lease/release", release, scope=None, body=_RELEASE, tag="floating", errors=_ERRORS,
             responses={200: "success", 404: "no such organization"}, returns=_RELEASED),
    endpoint("GET", f"{_ORG}/signature.pem", signature_pem, scope=None, tag="floating",
             responses={200: "PEM", 404: "no such organization"}, media_type="application/x-pem-file", returns=TEXT),
    endpoint("POST", "/api/customers", create_customer, scope="manage", body=_CUSTOMER, tag="floating",
             responses={201: "created"}, returns=_CUSTOMER_SHOWN),
    endpoint("GET", "/api/customers", list_customers, scope="manage", tag="floating", returns=items(_CUSTOMER_SHOWN)),
    endpoint("POST", "/api/floating/keys", create_floating_key, scope="manage", body=_FLOATING_KEY, tag="floating",
             errors=("customer_not_found", "product_not_found", "unknown_feature"),
             responses={201: "created; the key is shown once", 404: "no such customer or product"},
             returns=_NEW_FLOATING_KEY),
    endpoint("GET", "/api/floating/keys", list_floating_keys, scope="manage", tag="floating",
             returns=items(_FLOATING_KEY_SHOWN)),
    endpoint("DELETE", "/api/floating/keys/{key}", revoke_floating_key, scope="manage", tag="floating",
             errors=("not_found",), responses={200: "revoked", 404: "no such key"}, returns=answer(revoked=BOOLEAN)),
]

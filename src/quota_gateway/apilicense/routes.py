"""Management endpoints of API-key licensing (the hot validate route: hotroute.py)."""

from __future__ import annotations

from starlette.responses import Response

from ..answers import BOOLEAN, INTEGER, STRING, TIMESTAMP, answer, array, component, nullable, one_of, page
from ..formats import times
from ..jsonio import JSONResponse
from ..listing import PAGE_FIELDS
from ..routing import Call, endpoint
from ..schema import UNSET, Email, Int, List, Query, Str, obj
from . import service
from .hotroute import (
    DENIAL_OR_ERROR_SCHEMA,
    DENIAL_SCHEMA,
    ERROR_CODES,
    MAX_UNITS,
    QUOTA_SCHEMA,
    RATE_LIMITS_SCHEMA,
    VALID_SCHEMA,
)

_CREATE = obj(
    productId=Int(required=True, minimum=1),
    email=Email(default=""),
    clientName=Str(max_len=200, default=""),
    clientIdentifier=Str(max_len=200, default=""),
    validityDays=Int(minimum=1, maximum=36500, description="omit for no expiry"),
    maxApiCalls=Int(minimum=1, maximum=2**53 - 1, description="lifetime quota in units; omit for none"),
)
_UPDATE = obj(
    maxApiCalls=Int(minimum=1, maximum=2**53 - 1, nullable=True, default=UNSET, description="null removes the lifetime quota"),
    expirationDate=Str(max_len=40, nullable=True, default=UNSET, description="ISO-8601 UTC; null removes the expiry"),
)
_IMPORT = obj(
    productId=Int(required=True, minimum=1, description="the product (and so the rules) every imported key gets"),
    keys=List(required=True, max_items=1000, item=obj(
        apiKey=Str(required=True, min_len=1, max_len=128,
                   description="the key as issued elsewhere, e.g. XXXX-XXXX-XXXX-XXXX (matched ignoring case, dashes "
                               "and spaces)"),
        email=Email(default=""),
        clientName=Str(max_len=200, default=""),
        clientIdentifier=Str(max_len=200, default=""),
        maxApiCalls=Int(minimum=1, maximum=2**53 - 1, description="lifetime quota in units; omit for none"),
        usedApiCalls=Int(minimum=0, maximum=2**53 - 1, default=0, description="units already used elsewhere"),
        expirationDate=Str(max_len=40, description="ISO-8601 UTC; omit for no expiry"),
    )),
)
_LIST = Query({**PAGE_FIELDS, "productId": Int(minimum=1), "status": Str(choices=("active", "revoked", "expired")),
               "clientIdentifier": Str(max_len=200)})
_CHECK = Query({"units": Int(minimum=1, maximum=MAX_UNITS, default=1)})
_RESET = Query({"periodType": Str(choices=("all", "lifetime", *service.PERIODS), default="all")})

# Answers. service.license_json: a key as listed and shown (masked).
_LICENSE = component("ApiLicense", answer(
    id=INTEGER, apiKey=STRING, productId=INTEGER, productName=STRING, email=STRING, clientName=STRING,
    clientIdentifier=STRING, maxApiCalls=nullable(INTEGER), expirationDate=nullable(TIMESTAMP),
    status=one_of("active", "revoked", "expired"), createdAt=TIMESTAMP, revokedAt=nullable(TIMESTAMP), imported=BOOLEAN))
_CREATED = answer(id=INTEGER, apiKey=STRING, expirationDate=nullable(TIMESTAMP), maxApiCalls=nullable(INTEGER),
                  productId=INTEGER, productName=STRING, clientName=STRING, clientIdentifier=STRING, email=STRING)
_IMPORTED = answer(imported=INTEGER, productId=INTEGER, productName=STRING, items=array(answer(
    id=INTEGER, apiKey=STRING, expirationDate=nullable(TIMESTAMP), maxApiCalls=nullable(INTEGER), usedApiCalls=INTEGER)))
_USAGE = answer(apiKey=STRING, quota=QUOTA_SCHEMA, rateLimits=RATE_LIMITS_SCHEMA,
                history=array(answer(date={"type": "string", "format": "date"}, units=INTEGER)))


async def create(call: Call) -> JSONResponse:
    """Issue an API key for a product (the full key is shown in this response only)."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        made = await service.create_key(conn, call.services.quota, call.tenant_id, call.services.clock.utcnow(),
                                        product_id=b["productId"], email=b["email"], client_name=b["clientName"],
                                        client_identifier=b["clientIdentifier"], validity_days=b["validityDays"],
                                        max_api_calls=b["maxApiCalls"])
    return JSONResponse(made, status_code=201)


async def import_keys(call: Call) -> JSONResponse:
    """Register API keys issued by another licensing server (stored as digests, like ours) with
    their terms; validate accepts them from then on. All or nothing."""
    keys = []
    for i, item in enumerate(call.body["keys"]):
        expires = item["expirationDate"]
        field = f"keys[{i}].expirationDate"
        keys.append({**item, "expiresAt": times.parse_field(expires, field, naive_is_utc=True) if expires else None})
    async with call.services.pool.acquire() as conn:
        made = await service.import_keys(conn, call.services.quota, call.tenant_id, call.body["productId"], keys)
    return JSONResponse(made, status_code=201)


async def listing(call: Call) -> dict:
    """List API keys (masked), paginated, filtered by product, status or client identifier."""
    async with call.services.pool.acquire() as conn:
        return await service.listing(conn, call.tenant_id, call.services.clock.utcnow(), call.query)


async def show(call: Call) -> dict:
    """One API key's settings (masked key)."""
    async with call.services.pool.acquire() as conn:
        row = await service.find(conn, call.tenant_id, call.path["api_key"])
    return service.license_json(row, call.services.clock.now())


async def update(call: Call) -> dict:
    """Change the lifetime quota or expiry; every gateway sees it on the next request."""
    b = call.body
    expires = b["expirationDate"]
    if isinstance(expires, str):
        expires = times.parse_field(expires, "expirationDate", naive_is_utc=True)
    async with call.services.pool.acquire() as conn:
        row = await service.find(conn, call.tenant_id, call.path["api_key"])
        row = await service.update(conn, call.services.quota, row, b["maxApiCalls"], expires)
    return service.license_json(row, call.services.clock.now())


async def revoke(call: Call) -> dict:
    """Revoke an API key; refused on every gateway from the next request."""
    async with call.services.pool.acquire() as conn:
        row = await service.find(conn, call.tenant_id, call.path["api_key"])
        return await service.revoke_key(conn, call.services.quota, row, call.services.clock.utcnow())


async def check(call: Call) -> Response:
    """Validate without consuming: the same answer POST validate would give."""
    status, body, headers = await call.services.quota.validate(call.tenant_id, call.path["api_key"],
                                                               call.query["units"], False, None)
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


async def usage(call: Call) -> dict:
    """Lifetime and per-window usage now, and usage history by day (written behind, ≤ flush interval late)."""
    async with call.services.pool.acquire() as conn:
        row = await service.find(conn, call.tenant_id, call.path["api_key"])
        return await service.usage(conn, call.services.quota, call.tenant_id, row)


async def reset(call: Call) -> dict:
    """Reset the lifetime counter and/or the current window of a period."""
    async with call.services.pool.acquire() as conn:
        row = await service.find(conn, call.tenant_id, call.path["api_key"])
    return await service.reset(call.services.pool, call.services.quota, call.tenant_id, row, call.query["periodType"])


routes = [
    endpoint("GET", "/api/apilicense/validate/{api_key}", check, scope="verify", query=_CHECK, tag="apilicense",
             errors=ERROR_CODES, responses={200: "valid", 404: "not_found", 403: "revoked or expired",
                                            429: "would exceed a limit"},
             bodies={403: DENIAL_OR_ERROR_SCHEMA, 404: DENIAL_SCHEMA, 429: DENIAL_OR_ERROR_SCHEMA}, returns=VALID_SCHEMA),
    endpoint("POST", "/api/apilicense", create, scope="manage", body=_CREATE, tag="apilicense",
             errors=("product_not_found",), responses={201: "created; the key is shown once", 404: "no such product"},
             returns=_CREATED),
    endpoint("POST", "/api/apilicense/import", import_keys, scope="manage", body=_IMPORT, tag="apilicense",
             errors=("invalid_key_format", "duplicate_key", "product_not_found", "key_exists"),
             responses={201: "imported", 404: "no such product", 409: "a key is already registered"}, returns=_IMPORTED),
    endpoint("GET", "/api/apilicense", listing, scope="manage", query=_LIST, tag="apilicense", returns=page(_LICENSE)),
    endpoint("GET", "/api/apilicense/{api_key}", show, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "the key", 404: "no such key"}, returns=_LICENSE),
    endpoint("PATCH", "/api/apilicense/{api_key}", update, scope="manage", body=_UPDATE, tag="apilicense",
             errors=("not_found",), responses={200: "updated", 404: "no such key"}, returns=_LICENSE),
    endpoint("DELETE", "/api/apilicense/{api_key}", revoke, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "revoked", 404: "no such key"}, returns=answer(revoked=BOOLEAN, apiKey=STRING)),
    endpoint("GET", "/api/apilicense/{api_key}/usage", usage, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "usage", 404: "no such key"}, returns=_USAGE),
    endpoint("POST", "/api/apilicense/{api_key}/reset", reset, scope="manage", query=_RESET, tag="apilicense",
             errors=("not_found",), responses={200: "reset", 404: "no such key"},
             returns=answer(apiKey=STRING, reset=_RESET.params["periodType"])),
]

"""Endpoints of API-key licensing (the hot validate route lives in hotroute.py)."""

from __future__ import annotations


from starlette.responses import Response

from .. import catalogue, fastpath
from ..autopipeline import AutoPipeline, ClusterAutoPipeline
from ..clock import parse_iso_utc
from ..errors import ApiError
from ..jsonio import JSONResponse
from ..redisconn import RedisPyRunner
from ..routing import Call, EndpointSpec, endpoint
from ..schema import UNSET, Email, Int, Query, Str, obj
from . import service
from .engine import MAX_UNITS, QuotaEngine, key_digest
from .hotroute import PATH as VALIDATE_PATH
from .hotroute import VALIDATE_BODY, validate_endpoint
from .service import COLUMNS as _COLUMNS
from .service import PERIODS
from .service import license_json as _license_json
from .service import ref_of as _ref
from .writebehind import UsageFlusher

_ERROR_CODES = ("not_found", "revoked", "expired", "quota_exhausted", "rate_limit_minute", "rate_limit_hour",
                "rate_limit_day", "rate_limit_month")

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
_LIST = Query({"page": Int(minimum=1, default=1), "pageSize": Int(minimum=1, maximum=500, default=50),
               "productId": Int(minimum=1), "status": Str(choices=("active", "revoked", "expired")),
               "clientIdentifier": Str(max_len=200)})
_CHECK = Query({"units": Int(minimum=1, maximum=MAX_UNITS, default=1)})
_RESET = Query({"periodType": Str(choices=("all", "lifetime", *PERIODS), default="all")})


def _engine(call: Call) -> QuotaEngine:
    return call.services.domains["apilicense"]


async def _find(call: Call, conn, raw_key: str):
    key = fastpath.normalize_api_key(raw_key)
    row = None
    if key is not None:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_licenses l JOIN products p ON p.id = l.product_id "
                                  "WHERE l.key_digest = $1 AND l.tenant_id = $2", key_digest(key), call.tenant_id)
    if row is None:
        raise ApiError(404, "not_found", "no such API key")
    return row


async def create(call: Call) -> JSONResponse:
    """Issue an API key for a product (the full key is shown in this response only)."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        made = await service.create_key(conn, _engine(call), call.tenant_id, call.services.clock.utcnow(),
                                        product_id=b["productId"], email=b["email"], client_name=b["clientName"],
                                        client_identifier=b["clientIdentifier"], validity_days=b["validityDays"],
                                        max_api_calls=b["maxApiCalls"])
    return JSONResponse(made, status_code=201)


async def listing(call: Call) -> dict:
    """List API keys (masked), paginated, filtered by product, status or client identifier."""
    q = call.query
    now = call.services.clock.utcnow()
    where, args = ["l.tenant_id = $1"], [call.tenant_id]
    if q["productId"] is not None:
        args.append(q["productId"])
        where.append(f"l.product_id = ${len(args)}")
    if q["clientIdentifier"] is not None:
        args.append(q["clientIdentifier"])
        where.append(f"l.client_identifier = ${len(args)}")
    if q["status"] == "revoked":
        where.append("l.revoked_at IS NOT NULL")
    elif q["status"] in ("active", "expired"):
        args.append(now)
        where.append("l.revoked_at IS NULL AND " + (f"(l.expires_at IS NULL OR l.expires_at > ${len(args)})"
                     if q["status"] == "active" else f"l.expires_at <= ${len(args)}"))
    clause = " AND ".join(where)
    async with call.services.pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM api_licenses l WHERE {clause}", *args)
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM api_licenses l JOIN products p ON p.id = l.product_id WHERE {clause} "
            f"ORDER BY l.id DESC LIMIT {q['pageSize']} OFFSET {(q['page'] - 1) * q['pageSize']}", *args)
    return {"items": [_license_json(r, now.timestamp()) for r in rows], "page": q["page"], "pageSize": q["pageSize"],
            "totalCount": total, "totalPages": (total + q["pageSize"] - 1) // q["pageSize"]}


async def show(call: Call) -> dict:
    """One API key's settings (masked key)."""
    async with call.services.pool.acquire() as conn:
        row = await _find(call, conn, call.path["api_key"])
    return _license_json(row, call.services.clock.now())


async def update(call: Call) -> dict:
    """Change the lifetime quota or expiry; every gateway sees it on the next request."""
    b = call.body
    expires = b["expirationDate"]
    if isinstance(expires, str):
        try:
            expires = parse_iso_utc(expires, naive_is_utc=True)
        except ValueError as exc:
            raise ApiError(400, "invalid_field", f"expirationDate: {exc}", field="expirationDate") from None
    async with call.services.pool.acquire() as conn:
        row = await _find(call, conn, call.path["api_key"])
        # An absent field keeps its value; an explicit null clears it.
        row = await conn.fetchrow(
            f"""UPDATE api_licenses l
                SET max_api_calls = CASE WHEN $4 THEN l.max_api_calls ELSE $2 END,
                    expires_at = CASE WHEN $5 THEN l.expires_at ELSE $3 END
                FROM products p WHERE l.id = $1 AND p.id = l.product_id RETURNING {_COLUMNS}""",
            row["id"], None if b["maxApiCalls"] is UNSET else b["maxApiCalls"], None if expires is UNSET else expires,
            b["maxApiCalls"] is UNSET, expires is UNSET)
    await _engine(call).invalidate(_ref(row))
    return _license_json(row, call.services.clock.now())


async def revoke(call: Call) -> dict:
    """Revoke an API key; refused on every gateway from the next request."""
    async with call.services.pool.acquire() as conn:
        row = await _find(call, conn, call.path["api_key"])
        return await service.revoke_key(conn, _engine(call), row, call.services.clock.utcnow())


async def check(call: Call) -> Response:
    """Validate without consuming: the same answer POST validate would give."""
    status, body, headers = await _engine(call).validate(call.tenant_id, call.path["api_key"], call.query["units"],
                                                          False, None)
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in headers})


async def usage(call: Call) -> dict:
    """Lifetime and per-window usage now, and usage history by day (written behind, ≤ flush interval late)."""
    async with call.services.pool.acquire() as conn:
        row = await _find(call, conn, call.path["api_key"])
        return await service.usage(conn, _engine(call), call.tenant_id, row)


async def reset(call: Call) -> dict:
    """Reset the lifetime counter and/or the current window of a period."""
    async with call.services.pool.acquire() as conn:
        row = await _find(call, conn, call.path["api_key"])
    return await service.reset(call.services.pool, _engine(call), call.tenant_id, row, call.query["periodType"])


async def features_changed(services, tenant_id: str, product_id: int) -> None:
    """Catalogue hook: drop cached rules of every key of the product."""
    engine = services.domains.get("apilicense")
    if engine is None:
        return
    async with services.pool.acquire() as conn:
        rows = await conn.fetch("SELECT key_digest, bucket FROM api_licenses WHERE tenant_id = $1 AND product_id = $2",
                                tenant_id, product_id)
    for row in rows:
        await engine.invalidate(_ref(row))


catalogue.FEATURE_CHECKS.append(fastpath.check_rule_feature)
catalogue.ON_FEATURES_CHANGED.append(features_changed)


def _runner(services):
    """Auto-pipelining: one connection to a single Redis, or one per master of a cluster."""
    transport = services.settings.redis_transport
    if transport == "redis-py":
        return RedisPyRunner(services.settings.redis_url, cluster=services.settings.redis_cluster)
    if transport != "autopipeline":
        raise ValueError(f"QG_REDIS_TRANSPORT must be autopipeline or redis-py, not {transport!r}")
    if services.settings.redis_cluster:
        return ClusterAutoPipeline(services.settings.redis_url)
    return AutoPipeline(services.settings.redis_url)


async def start(services) -> None:
    runner = _runner(services)
    engine = QuotaEngine(services, runner)
    flusher = UsageFlusher(services, runner, services.settings.flush_interval)
    flusher.dirty = engine.dirty
    services.domains["apilicense"] = engine
    services.domains["apilicense.flusher"] = flusher
    flusher.start()


async def stop(services) -> None:
    await services.domains["apilicense.flusher"].stop()
    await services.domains["apilicense"].runner.aclose()


hot_routes = {("POST", VALIDATE_PATH): validate_endpoint}
hot_specs = [EndpointSpec("POST", VALIDATE_PATH, "Validate an API key and consume units (the hot path)", "verify",
                          body=VALIDATE_BODY, errors=_ERROR_CODES, tag="apilicense",
                          responses={200: "valid", 404: "not_found", 403: "revoked or expired",
                                     429: "quota_exhausted or rate_limit_*; carries Retry-After and RateLimit fields",
                                     503: "quota store unavailable"})]

routes = [
    endpoint("GET", "/api/apilicense/validate/{api_key}", check, scope="verify", query=_CHECK, tag="apilicense",
             errors=_ERROR_CODES, responses={200: "valid", 404: "not_found", 403: "revoked or expired",
                                             429: "would exceed a limit"}),
    endpoint("POST", "/api/apilicense", create, scope="manage", body=_CREATE, tag="apilicense",
             errors=("product_not_found",), responses={201: "created; the key is shown once", 404: "no such product"}),
    endpoint("GET", "/api/apilicense", listing, scope="manage", query=_LIST, tag="apilicense"),
    endpoint("GET", "/api/apilicense/{api_key}", show, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "the key", 404: "no such key"}),
    endpoint("PATCH", "/api/apilicense/{api_key}", update, scope="manage", body=_UPDATE, tag="apilicense",
             errors=("not_found",), responses={200: "updated", 404: "no such key"}),
    endpoint("DELETE", "/api/apilicense/{api_key}", revoke, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "revoked", 404: "no such key"}),
    endpoint("GET", "/api/apilicense/{api_key}/usage", usage, scope="manage", tag="apilicense", errors=("not_found",),
             responses={200: "usage", 404: "no such key"}),
    endpoint("POST", "/api/apilicense/{api_key}/reset", reset, scope="manage", query=_RESET, tag="apilicense",
             errors=("not_found",), responses={200: "reset", 404: "no such key"}),
]

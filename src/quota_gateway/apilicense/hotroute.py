"""POST /api/apilicense/validate as a raw ASGI handler: no router, no Request object, no middleware.

Token from the in-process cache, body parsed once by orjson, one engine call, prebuilt headers.
The handler, its body spec and its registration (`hot_routes`, `hot_specs`) live here together;
the engine is reached through `services.quota`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from .. import directanswer
from ..abuse.clientlimit import resolve_token
from ..abuse.failures import ACCESS_TOKEN, API_KEY
from ..answers import INTEGER, STRING, TIMESTAMP, answer, array, component, nullable, optional
from ..errors import ApiError
from ..fastpath import WINDOW_NAMES
from ..jsonio import refuse_duplicate_members, too_large
from ..logs import ThrottledWarning
from ..openapi import ERROR_SCHEMA
from ..principal import TokenMiss
from ..routing import EndpointSpec
from ..schema import Bool, Int, Str, obj

if TYPE_CHECKING:
    from ..services import Services

log = logging.getLogger("quota_gateway.apilicense")
_store_failed = ThrottledWarning(log)

PATH = "/api/apilicense/validate"
ROUTE_LABEL = PATH
MAX_UNITS = 1_000_000
ERROR_CODES = ("not_found", "revoked", "expired", "quota_exhausted", "rate_limit_minute", "rate_limit_hour",
               "rate_limit_day", "rate_limit_month")
_KEY_MAX_LEN = 128
VALIDATE_BODY = obj(
    apiKey=Str(required=True, min_len=1, max_len=_KEY_MAX_LEN, description="the API key presented by the end-user's request"),
    units=Int(minimum=1, maximum=MAX_UNITS, default=1, description="units this request costs"),
    consumeUnits=Bool(default=True, description="false: check only, consume nothing"),
)
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def validate_endpoint(services: Services, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    status = 500
    try:
        status, body, extra = await _handle(services, scope, receive)
    except ApiError as exc:
        status, body, extra = exc.status, orjson.dumps(exc.body()), _error_headers(exc)
    except Exception as exc:  # Redis or Postgres unreachable: a clear 503, never a 500
        _store_failed.warning("validate failed: %s: %s", type(exc).__name__, exc)
        services.metrics.redis_errors.inc(("validate",))
        status, body, extra = 503, orjson.dumps({"error": "unavailable", "message": "quota store unavailable; retry"}), \
            [(b"retry-after", b"1")]
    headers = _JSON_HEADERS + [(b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    if not directanswer.write(send, status, headers, body):  # every field above is ours: no checks needed
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    services.metrics.observe_request(ROUTE_LABEL, "POST", status, time.perf_counter() - started)


async def _handle(services: Services, scope: Scope, receive: Receive) -> tuple[int, bytes, list]:
    authorization = idempotency_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"idempotency-key":
            idempotency_key = value.decode("latin-1")
    principal = services.tokens.probe(authorization)
    if type(principal) is TokenMiss:  # a token this process has not verified, or a wrong one: guarded per address
        principal = await resolve_token(services, scope, principal)
    failures = services.failed_lookups
    if principal is None:
        failures.record(None, ACCESS_TOKEN)
        raise ApiError(401, "unauthorized", "missing, malformed, unknown, expired or revoked access token")
    if not principal.allows("verify"):
        raise ApiError(403, "forbidden", "this access token lacks the 'verify' permission")
    if failures.limit:
        failures.check(principal)
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise ApiError(400, "invalid_header", "Idempotency-Key must be 1 to 200 characters")

    raw = await _read_body(receive, services.settings.max_body_bytes)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    api_key, units, consume = _parse_body(data, raw)
    answer = await services.quota.validate(principal.tenant_id, api_key, units, consume, idempotency_key)
    if answer[0] == 404:  # counted in-process only: nothing added to a successful validation
        failures.record(principal, API_KEY)
    return answer


def _error_headers(exc: ApiError) -> list:
    if not exc.headers:
        return []
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in exc.headers.items()]


def _parse_body(data: Any, raw: bytes) -> tuple[str, int, bool]:
    """A well-formed body passes a few type checks; anything else gets the schema's precise error.
    (What passes here, the schema accepts too, with the same values once the key is normalised.)

    Duplicate members are refused without a second parse in the common case: with no escapes,
    every string puts exactly two quotes in the body, so a body whose only string value is the
    key has 2 * members + 2 quotes, and any repeated member (or other string) would add more."""
    if type(data) is dict:
        api_key, units, consume = data.get("apiKey"), data.get("units", 1), data.get("consumeUnits", True)
        if (type(api_key) is str and 0 < len(api_key) <= _KEY_MAX_LEN and "\x00" not in api_key and not api_key.isspace()
                and type(units) is int and 0 < units <= MAX_UNITS and type(consume) is bool
                and raw.count(b'"') == 2 * len(data) + 2 and b"\\" not in raw):
            return api_key, units, consume
    refuse_duplicate_members(raw)
    request = VALIDATE_BODY.parse(data)
    return request["apiKey"], request["units"], request["consumeUnits"]


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# The answers (fastpath.render_validation). A refused validation is an answer, not an error:
# {isValid: false, errorCode, errorMessage, ...}. 403 and 429 may also be the {error, message} of a
# token lacking 'verify' or a token over its failed-lookup limit.
QUOTA_SCHEMA = component("Quota", answer(limit=nullable(INTEGER), used=INTEGER, remaining=nullable(INTEGER)))
RATE_LIMITS_SCHEMA = component("RateLimits", {
    "type": "object", "propertyNames": {"enum": list(WINDOW_NAMES)}, "description": "only the windows the product limits",
    "additionalProperties": answer(limit=INTEGER, used=INTEGER, remaining=INTEGER, resetsAt=TIMESTAMP)})
VALID_SCHEMA = component("ApiKeyValid", answer(
    isValid={"const": True}, unitsConsumed=INTEGER, quota=QUOTA_SCHEMA, rateLimits=RATE_LIMITS_SCHEMA,
    features=array(STRING), expiresAt=nullable(TIMESTAMP)))
DENIAL_SCHEMA = _DENIAL = component("ApiKeyDenial", answer(
    isValid={"const": False}, errorCode={"enum": list(ERROR_CODES)}, errorMessage=STRING,
    quota=optional(QUOTA_SCHEMA), rateLimits=optional(RATE_LIMITS_SCHEMA),
    retryAfterSeconds=optional({"type": "integer", "minimum": 0})))
DENIAL_OR_ERROR_SCHEMA = _DENIAL_OR_ERROR = {"anyOf": [_DENIAL, ERROR_SCHEMA]}
hot_routes = {("POST", PATH): validate_endpoint}
hot_specs = [EndpointSpec("POST", PATH, "Validate an API key and consume units (the hot path)", "verify",
                          body=VALIDATE_BODY, errors=ERROR_CODES, tag="apilicense", returns=VALID_SCHEMA,
                          responses={200: "valid", 404: "not_found", 403: "revoked or expired",
                                     429: "quota_exhausted or rate_limit_*; carries Retry-After and RateLimit fields",
                                     503: "quota store unavailable"},
                          bodies={403: _DENIAL_OR_ERROR, 404: _DENIAL, 429: _DENIAL_OR_ERROR})]

"""Endpoints of activation-key licensing, plans, offline codes, encrypted validation, tenant keys."""

from __future__ import annotations

from starlette.responses import PlainTextResponse, Response

from .. import crypto, geo
from ..abuse.failures import ACTIVATION_KEY
from ..answers import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    TEXT,
    TIMESTAMP,
    answer,
    array,
    component,
    items,
    nullable,
    one_of,
    optional,
    page,
)
from ..errors import ApiError
from ..jsonio import JSONResponse
from ..listing import PAGE_FIELDS
from ..principal import ANY_TOKEN
from ..routing import Call, endpoint
from ..schema import Bool, Email, Int, List, Query, Str, obj
from . import envelope, service

_KEY = Str(required=True, min_len=1, max_len=4000, description="activation key (or offline code)")
_HARDWARE = Str(required=True, min_len=1, max_len=256, description="opaque hardware id, compared case-insensitively")
_VERSION = Str(max_len=32, nullable=True)
_PRODUCT_NAME = Str(min_len=1, max_len=100)
_ACTIVATE = obj(activationKey=_KEY, email=Email(required=True), hardwareId=_HARDWARE,
                productName=Str(required=True, min_len=1, max_len=100), version=_VERSION)
_VALIDATE = obj(activationKey=Str(max_len=4000, default=""), hardwareId=_HARDWARE, productName=_PRODUCT_NAME,
                version=_VERSION)
_DEACTIVATE = obj(licenseKey=_KEY, hardwareId=_HARDWARE, productName=_PRODUCT_NAME)
_GENERATE = obj(productName=Str(required=True, min_len=1, max_len=100), email=Email(required=True),
                planId=Int(minimum=1), validityDays=Int(minimum=1, maximum=36500))
_CREATE = obj(productId=Int(required=True, minimum=1), email=Email(default=""),
              kind=Str(choices=("standard", "corporate"), default="standard"),
              maxSeats=Int(minimum=1, maximum=1_000_000, description="corporate only; omit for unlimited"),
              planId=Int(minimum=1), validityDays=Int(minimum=1, maximum=36500),
              features=List(item=Str(min_len=1, max_len=100), max_items=500))
_PLAN = obj(id=Int(minimum=1), name=Str(required=True, min_len=1, max_len=100),
            durationDays=Int(minimum=1, maximum=36500, nullable=True), isActive=Bool(default=True))
_FEATURES_SET = obj(activationKey=_KEY, features=List(required=True, item=Str(min_len=1, max_len=100), max_items=500))
_FEATURES_CSV = obj(activationKey=_KEY)
_OFFLINE = obj(activationKey=_KEY, hardwareId=_HARDWARE, version=_VERSION)
_ENCRYPTED = obj(payload=Str(required=True, min_len=1, max_len=60_000, strip=False))
_PAGE = Query(PAGE_FIELDS)
_LIST = Query({**PAGE_FIELDS, "productId": Int(minimum=1), "kind": Str(choices=("standard", "corporate"))})

# Answers (licensing.service, licensing.envelope, crypto).
_KIND = one_of("standard", "corporate")
_LICENSE_FIELDS = dict(id=INTEGER, activationKey=STRING, productId=INTEGER, productName=STRING, planId=nullable(INTEGER),
                       licenseType=_KIND, maxSeats=nullable(INTEGER), email=STRING,
                       features=nullable(array(STRING)), expirationDate=nullable(TIMESTAMP),
                       revokedAt=nullable(TIMESTAMP), createdAt=TIMESTAMP)
_LICENSE = component("License", answer(**_LICENSE_FIELDS, seatsUsed=INTEGER))
_NEW_LICENSE = answer(**_LICENSE_FIELDS)
_LICENSE_SHOWN = answer(**_LICENSE_FIELDS, seatsUsed=INTEGER,
                        activations=array(answer(hardwareId=STRING, activatedAt=TIMESTAMP, offline=BOOLEAN)))
_VERSIONS = dict(serverVersion=STRING, minimumRequiredVersion=nullable(STRING))
_VALIDATION = component("LicenseValidation", answer(
    isValid=BOOLEAN, status=one_of("licensed", "not_activated", "expired", "revoked", "invalid", "version_outdated",
                                   "trial", "trial_expired"),
    expirationDate=nullable(TIMESTAMP), features=array(STRING), licenseType=optional(_KIND), **_VERSIONS))
_ACTIVATED = answer(success={"const": True}, licenseType=_KIND, expirationDate=nullable(TIMESTAMP),
                    features=array(STRING), seatsUsed=INTEGER, maxSeats=nullable(INTEGER), **_VERSIONS)
_ENCRYPTED_ANSWER = {"anyOf": [answer(payload=STRING), answer(payload=STRING, signature=STRING, kid=STRING,
                                                              alg={"const": "RS256"})]}
_PLAN_SHOWN = component("Plan", answer(id=INTEGER, name=STRING, durationDays=nullable(INTEGER), isActive=BOOLEAN))
_PUBLIC_KEY = answer(kid=STRING, publicKey=STRING, active=BOOLEAN, createdAt=TIMESTAMP)
_HISTORY_ENTRY = answer(action=STRING, at=TIMESTAMP, activationKey=nullable(STRING), productName=nullable(STRING),
                        details=nullable(ANY_OBJECT))
_SEATS = answer(currentSeats=INTEGER, maxSeats=nullable(INTEGER), hasCapacity=BOOLEAN, isUnlimited=BOOLEAN)
_PEM = "application/x-pem-file"


def _now(call: Call):
    return call.services.clock.utcnow()


async def activate(call: Call) -> dict:
    """Bind a hardware id to an activation key (a seat, for corporate keys)."""
    async with call.services.pool.acquire() as conn:
        client = call.request.client
        return await service.activate(conn, call.tenant_id, _now(call), call.services.server_version, call.body,
                                      country=geo.country_of(client.host if client else None))


async def validate(call: Call) -> dict:
    """Validate a key (or an offline code) for a hardware id; a blank key means trial mode. Always 200."""
    async with call.services.pool.acquire() as conn:
        answer = await service.validate_license(conn, call.tenant_id, _now(call), call.services.server_version,
                                                call.body)
    _count_unknown_key(call, call.body, answer)
    return answer


def _count_unknown_key(call: Call, body: dict, answer: dict) -> None:
    """An activation key that matched nothing, in /metrics per token (abuse.failures)."""
    if answer["status"] == "invalid" and (body.get("activationKey") or "").strip():
        call.services.failed_lookups.record(call.principal, ACTIVATION_KEY)


async def deactivate(call: Call) -> dict:
    """Release the seat of a hardware id (only from that hardware; the product's cooldown applies)."""
    async with call.services.pool.acquire() as conn:
        return await service.deactivate(conn, call.tenant_id, _now(call), call.body)


async def generate(call: Call) -> PlainTextResponse:
    """Generate a standard activation key; the body is the key as plain text."""
    async with call.services.pool.acquire() as conn:
        return PlainTextResponse(await service.generate(conn, call.services.settings, call.services.redis, call.tenant_id, _now(call), call.body))


async def create_license(call: Call) -> JSONResponse:
    """Create a standard (one device) or corporate (N seats, or unlimited) license key."""
    b = call.body
    if b["kind"] == "standard" and b["maxSeats"] not in (None, 1):
        raise ApiError(400, "invalid_field", "maxSeats: a standard key has exactly one seat", field="maxSeats")
    async with call.services.pool.acquire() as conn:
        _, made = await service.create_license(conn, call.services.settings, call.services.redis, call.tenant_id, _now(call), product_id=b["productId"],
                                               email=b["email"], kind=b["kind"], max_seats=b["maxSeats"],
                                               plan_id=b["planId"], validity_days=b["validityDays"],
                                               features=b["features"])
    return JSONResponse(made, status_code=201)


async def list_licenses(call: Call) -> dict:
    """List license keys (masked), newest first."""
    async with call.services.pool.acquire() as conn:
        return await service.list_licenses(conn, call.tenant_id, call.query)


async def show_license(call: Call) -> dict:
    """One license key with its live activations."""
    async with call.services.pool.acquire() as conn:
        return await service.show_license(conn, call.tenant_id, call.path["key"])


async def revoke_license(call: Call) -> dict:
    """Revoke a license key."""
    async with call.services.pool.acquire() as conn:
        return await service.revoke(conn, call.tenant_id, call.path["key"], _now(call))


async def seat_usage(call: Call) -> dict:
    """Seat usage of a corporate key (404 for other keys)."""
    async with call.services.pool.acquire() as conn:
        return await service.seat_usage(conn, call.tenant_id, call.path["key"])


async def device_history(call: Call) -> dict:
    """What happened to a hardware id, newest first."""
    async with call.services.pool.acquire() as conn:
        return await service.device_history(conn, call.tenant_id, call.path["hardware_id"], call.query["page"],
                                            call.query["pageSize"])


async def features_set(call: Call) -> dict:
    """Give one license an explicit feature set (names of the product's features)."""
    async with call.services.pool.acquire() as conn:
        names = await service.set_features(conn, call.tenant_id, call.body["activationKey"], call.body["features"])
    return {"features": names}


async def features_csv(call: Call) -> dict:
    """A license's feature names, comma-separated."""
    async with call.services.pool.acquire() as conn:
        return {"features": ",".join(await service.features_of(conn, call.tenant_id, call.body["activationKey"]))}


async def list_plans(call: Call) -> dict:
    """List plans."""
    async with call.services.pool.acquire() as conn:
        return {"items": await service.list_plans(conn, call.tenant_id)}


async def save_plan(call: Call) -> JSONResponse:
    """Create a plan (id null) or update one (id set)."""
    async with call.services.pool.acquire() as conn:
        plan, created = await service.save_plan(conn, call.tenant_id, call.body)
    return JSONResponse(plan, status_code=201 if created else 200)


async def make_offline_code(call: Call) -> dict:
    """Sign an offline activation code (ExisOne format) binding a key to a hardware id."""
    b = call.body
    async with call.services.pool.acquire() as conn:
        return await service.offline_code(conn, call.tenant_id, call.services.settings.master_key, _now(call),
                                          b["activationKey"], b["hardwareId"], b["version"])


async def validate_encrypted(call: Call) -> dict:
    """Validation inside an encrypted envelope (see licensing/envelope.py)."""
    master_key = call.services.settings.master_key
    async with call.services.pool.acquire() as conn:
        request, key = await envelope.open_request(conn, call.tenant_id, master_key, call.body["payload"])
        body = _VALIDATE.parse(request)
        answer = await service.validate_license(conn, call.tenant_id, _now(call), call.services.server_version, body)
        _count_unknown_key(call, body, answer)
        if key is None:  # the document's single-block form: a signed answer
            return await envelope.sign_response(conn, call.tenant_id, master_key, answer)
    return {"payload": envelope.seal_response(key, answer)}


async def public_key(call: Call) -> Response:
    """The tenant's current public key (PEM): verifies offline codes and leases."""
    async with call.services.pool.acquire() as conn:
        pem = await crypto.current_public_pem(conn, call.tenant_id)
    return Response(pem, media_type="application/x-pem-file")


async def list_keys(call: Call) -> dict:
    """Every public key of the tenant (old ones still verify what they signed)."""
    async with call.services.pool.acquire() as conn:
        return {"items": await crypto.public_keys(conn, call.tenant_id)}


async def rotate_key(call: Call) -> JSONResponse:
    """Make a new active key pair; the old public key stays listed."""
    async with call.services.pool.acquire() as conn:
        kid = await crypto.create_key_pair(conn, call.tenant_id, call.services.settings.master_key)
        pem = await crypto.current_public_pem(conn, call.tenant_id)
    return JSONResponse({"kid": kid, "publicKey": pem}, status_code=201)


routes = [
    endpoint("POST", "/api/license/activate", activate, scope=ANY_TOKEN, body=_ACTIVATE, tag="licensing",
             errors=("product_not_found", "invalid_key", "product_mismatch", "license_revoked", "license_expired",
                     "already_activated", "seat_limit_reached", "version_outdated"),
             responses={200: "activated", 400: "product_not_found / product_mismatch", 403: "revoked or expired",
                        404: "unknown key",
                        409: "already_activated / seat_limit_reached", 426: "version_outdated"}, returns=_ACTIVATED),
    endpoint("POST", "/api/license/validate", validate, scope="verify", body=_VALIDATE, tag="licensing",
             key_lookup=True, responses={200: "always, with isValid and status"}, returns=_VALIDATION),
    endpoint("POST", "/api/license/validate-encrypted", validate_encrypted, scope="verify", body=_ENCRYPTED,
             tag="licensing", errors=("invalid_payload", "decryption_failed"), key_lookup=True,
             responses={200: "the answer: sealed (hybrid envelope) or signed (one RSA-OAEP block)"},
             returns=_ENCRYPTED_ANSWER),
    endpoint("POST", "/api/license/deactivate", deactivate, scope=ANY_TOKEN, body=_DEACTIVATE, tag="licensing",
             errors=("invalid_key", "product_mismatch", "not_activated", "deactivation_cooldown"),
             responses={200: "deactivated", 404: "unknown key or not activated here", 429: "deactivation_cooldown"},
             returns=answer(success={"const": True})),
    endpoint("POST", "/api/activationkey/generate", generate, scope="generate", body=_GENERATE, tag="licensing",
             errors=("product_not_found", "plan_not_found"), responses={200: "the key, text/plain", 404: "no product"},
             media_type="text/plain", returns=TEXT),
    endpoint("POST", "/api/license/features/set", features_set, scope="manage", body=_FEATURES_SET, tag="licensing",
             errors=("invalid_key", "unknown_feature"), responses={200: "set", 404: "unknown key"},
             returns=answer(features=array(STRING))),
    endpoint("POST", "/api/license/features/csv", features_csv, scope="verify", body=_FEATURES_CSV, tag="licensing",
             errors=("invalid_key",), responses={200: "features", 404: "unknown key"},
             returns=answer(features={"type": "string", "description": "comma-separated names"})),
    endpoint("POST", "/api/license/offline-code", make_offline_code, scope="manage", body=_OFFLINE, tag="licensing",
             errors=("invalid_key", "license_revoked", "license_expired", "already_activated", "seat_limit_reached"),
             responses={200: "offline code", 403: "revoked or expired", 404: "unknown key", 409: "no free seat"},
             returns=answer(offlineCode=STRING, expirationDate=TIMESTAMP, hardwareId=STRING)),
    endpoint("GET", "/api/license/device-history/{hardware_id}", device_history, scope="manage", query=_PAGE,
             tag="licensing", returns=page(_HISTORY_ENTRY)),
    endpoint("GET", "/api/license/{key}/usage", seat_usage, scope="verify", tag="licensing", errors=("not_corporate",),
             responses={200: "seat usage", 404: "not a corporate key"}, returns=_SEATS),
    endpoint("POST", "/api/licenses", create_license, scope="manage", body=_CREATE, tag="licensing",
             errors=("product_not_found", "plan_not_found", "unknown_feature"),
             responses={201: "created; the key is shown once", 404: "no product or plan"}, returns=_NEW_LICENSE),
    endpoint("GET", "/api/licenses", list_licenses, scope="manage", query=_LIST, tag="licensing", returns=page(_LICENSE)),
    endpoint("GET", "/api/licenses/{key}", show_license, scope="manage", tag="licensing", errors=("invalid_key",),
             responses={200: "the license", 404: "unknown key"}, returns=_LICENSE_SHOWN),
    endpoint("DELETE", "/api/licenses/{key}", revoke_license, scope="manage", tag="licensing", errors=("invalid_key",),
             responses={200: "revoked", 404: "unknown key"}, returns=answer(revoked=BOOLEAN, activationKey=STRING)),
    endpoint("GET", "/api/plan", list_plans, scope="manage", tag="plans", returns=items(_PLAN_SHOWN)),
    endpoint("POST", "/api/plan", save_plan, scope="manage", body=_PLAN, tag="plans",
             errors=("plan_not_found", "plan_exists"), responses={200: "updated", 201: "created", 404: "no plan",
                                                                  409: "duplicate name"}, returns=_PLAN_SHOWN),
    endpoint("GET", "/api/crypto/keys/public", public_key, scope="verify", tag="crypto",
             responses={200: "PEM", 404: "no key"}, media_type=_PEM, returns=TEXT),
    endpoint("GET", "/api/crypto/keys", list_keys, scope="manage", tag="crypto", returns=items(_PUBLIC_KEY)),
    endpoint("POST", "/api/crypto/keys/rotate", rotate_key, scope="admin", tag="crypto", responses={201: "rotated"},
             returns=answer(kid=STRING, publicKey=STRING)),
]

"""QuotaMiddleware in Starlette and FastAPI apps, validating against the real gateway in-process."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import make_api_key, make_product
from quota_gateway.client import (
    ApiKeyValidation,
    AsyncQuotaClient,
    QuotaMiddleware,
    RetryPolicy,
)
from quota_gateway.embedded import free_port


async def _no_wait(seconds: float) -> None:
    pass


def _starlette_app() -> Starlette:
    async def hello(request: Request) -> JSONResponse:
        result: ApiKeyValidation = request.state.quota
        return JSONResponse({"used": result.quota.used if result.quota else None, "cached": result.from_cache,
                             "degraded": result.degraded, "features": list(result.features)})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"]), Route("/healthz", health)])


def _gateway_client(app, token: str) -> AsyncQuotaClient:
    return AsyncQuotaClient("http://gateway", token, transport=httpx.ASGITransport(app=app))


def _dead_client() -> AsyncQuotaClient:
    return AsyncQuotaClient(f"http://127.0.0.1:{free_port()}", "exo_at_a_b", sleep=_no_wait,
                            retry=RetryPolicy(attempts=2))


def _http(asgi_app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://backend")


@pytest.fixture
async def key_of(client, tenant):
    async def make(*features: str, **fields) -> str:
        product = await make_product(client, tenant.headers, name=f"P{len(features)}{sorted(fields)}",
                                     features=features)
        return await make_api_key(client, tenant.headers, product, **fields)
    return make


async def test_starlette_allow_deny_and_state(app, tenant, key_of):
    key = await key_of("api:rate:minute:2", "api:tier:gold", maxApiCalls=100)
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, tenant.token),
                              units=lambda scope: 5 if scope["method"] == "POST" else 1,
                              exclude_paths=("/healthz",))
    async with _http(guarded) as backend:
        missing = await backend.get("/hello")
        assert missing.status_code == 401 and missing.json()["error"] == "missing_api_key"
        unknown = await backend.get("/hello", headers={"x-api-key": "qgk_" + "0" * 28})
        assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_api_key"
        too_long = await backend.get("/hello", headers={"x-api-key": "k" * 500})
        assert too_long.status_code == 401

        ok = await backend.get("/hello", headers={"x-api-key": key})
        assert ok.status_code == 200 and ok.json()["used"] == 1
        assert (ok.json()["cached"], ok.json()["degraded"]) == (False, False)
        assert "api:tier:gold" in ok.json()["features"]
        costly = await backend.post("/hello", headers={"x-api-key": key})
        assert costly.json()["used"] == 6  # the per-request units function charged 5
        limited = await backend.get("/hello", headers={"x-api-key": key})
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limit_minute"
        assert int(limited.headers["retry-after"]) > 0
        assert limited.headers["ratelimit"].startswith('"calls_minute";r=0;t=')
        assert limited.headers["ratelimit-policy"] == '"calls_minute";q=2;w=60'
        assert limited.headers["x-ratelimit-limit"] == "2"
        assert (await backend.get("/healthz")).status_code == 200  # excluded: no key needed


async def test_revoked_and_expired_keys_are_403(app, client, tenant, key_of, clock):
    key = await key_of()
    expiring = await key_of(validityDays=1)
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, tenant.token))
    async with _http(guarded) as backend:
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 200
        await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)
        revoked = await backend.get("/hello", headers={"x-api-key": key})
        assert revoked.status_code == 403 and revoked.json()["error"] == "revoked"
        clock.set(clock.now() + 2 * 86400)
        expired = await backend.get("/hello", headers={"x-api-key": expiring})
        assert expired.status_code == 403 and expired.json()["error"] == "expired"


async def test_fastapi_with_bearer_scheme_and_query_parameter(app, tenant, key_of):
    key = await key_of(maxApiCalls=3)
    api = FastAPI()

    @api.get("/items")
    async def items(request: FastAPIRequest) -> dict:
        return {"remaining": request.state.quota.quota.remaining}

    api.add_middleware(QuotaMiddleware, client=_gateway_client(app, tenant.token), header="authorization",
                       scheme="Bearer", query_param="api_key")
    async with _http(api) as backend:
        assert (await backend.get("/items", headers={"authorization": f"Bearer {key}"})).json() == {"remaining": 2}
        assert (await backend.get("/items", params={"api_key": key})).json() == {"remaining": 1}
        assert (await backend.get("/items", headers={"authorization": f"Basic {key}"})).status_code == 401
        assert (await backend.get("/items", params={"api_key": key})).json() == {"remaining": 0}
        exhausted = await backend.get("/items", params={"api_key": key})
        assert exhausted.status_code == 429 and exhausted.json()["error"] == "quota_exhausted"
        assert exhausted.headers["ratelimit-policy"] == '"quota";q=3'


async def test_idempotency_header_is_forwarded(app, tenant, key_of):
    key = await key_of(maxApiCalls=10)
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, tenant.token), units=4,
                              idempotency_header="Idempotency-Key")
    async with _http(guarded) as backend:
        headers = {"x-api-key": key, "idempotency-key": "upload-1"}
        assert (await backend.get("/hello", headers=headers)).json()["used"] == 4
        assert (await backend.get("/hello", headers=headers)).json()["used"] == 4  # the retry is not charged


async def test_unreachable_gateway_closed_grace_and_open(app, tenant, key_of):
    key = await key_of()
    now = [1000.0]
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, tenant.token), grace_seconds=30,
                              clock=lambda: now[0])
    async with _http(guarded) as backend:
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 200
        guarded.client = _dead_client()  # the gateway goes away
        graced = await backend.get("/hello", headers={"x-api-key": key})
        assert graced.status_code == 200 and graced.json()["cached"] is True
        other = await backend.get("/hello", headers={"x-api-key": "qgk_" + "1" * 28})
        assert other.status_code == 503 and other.json()["error"] == "quota_unavailable"
        assert other.headers["retry-after"] == "1"
        now[0] += 31
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 503
        assert guarded.guard.stats == {"allowed_open": 0, "allowed_grace": 1, "refused_unavailable": 2}

    open_guard = QuotaMiddleware(_starlette_app(), client=_dead_client(), on_error="open")
    async with _http(open_guard) as backend:
        passed = await backend.get("/hello", headers={"x-api-key": key})
        assert passed.status_code == 200 and passed.json()["degraded"] is True
        assert open_guard.guard.stats["allowed_open"] == 1


async def test_a_refusal_forgets_the_grace_entry(app, client, tenant, key_of):
    key = await key_of()
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, tenant.token))
    async with _http(guarded) as backend:
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 200
        await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 403
        guarded.client = _dead_client()
        assert (await backend.get("/hello", headers={"x-api-key": key})).status_code == 503


async def test_misconfigured_token_is_500_never_open(app, key_of):
    await key_of()
    guarded = QuotaMiddleware(_starlette_app(), client=_gateway_client(app, "exo_at_bad_bad"), on_error="open")
    async with _http(guarded) as backend:
        r = await backend.get("/hello", headers={"x-api-key": "qgk_" + "0" * 28})
        assert r.status_code == 500 and r.json()["error"] == "quota_misconfigured"


def test_options_are_checked():
    with pytest.raises(ValueError):
        QuotaMiddleware(_starlette_app(), base_url="https://g", token="t", on_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        QuotaMiddleware(_starlette_app(), base_url="https://g", token="t", header=None)
    with pytest.raises(ValueError):
        QuotaMiddleware(_starlette_app())

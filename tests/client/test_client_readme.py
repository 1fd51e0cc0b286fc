"""The README's client examples, executed as written, against a gateway over a real TLS socket."""

from __future__ import annotations

import re
import ssl
import sys
import types
from pathlib import Path

import httpx
import pytest

from conftest import make_api_key, make_product, make_tenant
from quota_gateway.client import QuotaMiddleware

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example(name: str) -> str:
    """The code block that follows `<!-- example: name -->` in the README."""
    found = re.search(rf"<!-- example: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", README.read_text(), re.DOTALL)
    assert found, f"README has no example {name!r}"
    return found.group(1)


def run_example(name: str, **names: object) -> types.ModuleType:
    module = types.ModuleType(f"readme_{name.replace('-', '_')}")
    module.__dict__.update(names)
    sys.modules[module.__name__] = module  # Django resolves ROOT_URLCONF = __name__ by import
    exec(compile(readme_example(name), f"README.md:{name}", "exec"), module.__dict__)
    return module


async def close_asgi_clients(app) -> None:
    """Close the pools of the app's QuotaMiddleware: an idle TLS connection left open would hold
    the gateway's graceful shutdown until its TLS close times out."""
    layer = app.middleware_stack
    while layer is not None:
        if isinstance(layer, QuotaMiddleware):
            await layer.client.aclose()
        layer = getattr(layer, "app", None)


@pytest.fixture
async def gateway_env(tls_gateway, settings, monkeypatch):
    tenant = await make_tenant(settings.database_url, "readme")
    admin = httpx.AsyncClient(base_url=tls_gateway.url, verify=ssl.create_default_context(cafile=tls_gateway.ca_file),
                               headers=tenant.headers)
    monkeypatch.setenv("QG_GATEWAY_URL", tls_gateway.url)
    monkeypatch.setenv("QG_GATEWAY_TOKEN", tenant.token)
    monkeypatch.setenv("SSL_CERT_FILE", tls_gateway.ca_file)  # trust the dev certificate, as httpx reads it

    async def new_key(max_calls: int) -> str:
        product = await make_product(admin, tenant.headers, name=f"Weather {max_calls}")
        return await make_api_key(admin, tenant.headers, product, maxApiCalls=max_calls)

    yield new_key
    await admin.aclose()


async def test_readme_examples(gateway_env, capsys):
    # the plain client
    key = await gateway_env(5)
    run_example("python-client", api_key=key)
    assert capsys.readouterr().out == "allowed; 2 units left\n"
    run_example("python-client", api_key=key).quota.close()
    assert capsys.readouterr().out == "allowed; 2 units left\n"  # same Idempotency-Key: not charged again

    # Starlette: limits reached answer 429 with the gateway's fields
    key = await gateway_env(2)
    starlette_app = run_example("starlette").app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=starlette_app), base_url="http://b") as backend:
        assert (await backend.get("/forecast")).status_code == 401
        assert (await backend.get("/forecast", headers={"x-api-key": key})).json() == {"forecast": "sunny",
                                                                                      "remaining": 1}
        await backend.get("/forecast", headers={"x-api-key": key})
        refused = await backend.get("/forecast", headers={"x-api-key": key})
        assert refused.status_code == 429 and refused.json()["error"] == "quota_exhausted"
        assert refused.headers["ratelimit-policy"] == '"quota";q=2' and "retry-after" in refused.headers
    await close_asgi_clients(starlette_app)

    # FastAPI: units computed per request, key from the query string
    key = await gateway_env(100)
    api = run_example("fastapi").api
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://b") as backend:
        assert (await backend.get("/forecast", params={"api_key": key})).json()["remaining"] == 99
        assert (await backend.get("/bulk/forecast", params={"api_key": key})).json()["remaining"] == 89
    await close_asgi_clients(api)

    # Flask (WSGI, sync client), Bearer scheme
    key = await gateway_env(3)
    flask_app = run_example("flask").app
    with flask_app.test_client() as backend:
        assert backend.get("/forecast", headers={"authorization": f"Bearer {key}"}).json["remaining"] == 2
        assert backend.get("/forecast", headers={"authorization": key}).status_code == 401
        assert backend.get("/forecast", headers={"authorization": "Bearer qgk_" + "0" * 28}).status_code == 401
    flask_app.wsgi_app.client.close()

    # Django
    key = await gateway_env(10)
    application = run_example("django").application
    with httpx.Client(transport=httpx.WSGITransport(app=application), base_url="http://b") as backend:
        assert backend.get("/forecast", headers={"x-api-key": key}).json() == {"forecast": "sunny", "remaining": 9}
        assert backend.get("/forecast").status_code == 401
    application.client.close()

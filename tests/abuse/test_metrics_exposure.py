"""/metrics: the public listener serves the whole server's series to the operator's credential
(QG_METRICS_TOKEN) only, never to a tenant's access token, whatever its permissions; the metrics
listener (QG_METRICS_BIND) serves them without one."""

from __future__ import annotations

import httpx
import pytest

from conftest import METRICS_HEADERS, TEST_METRICS_TOKEN, make_api_key, make_product, running_app
from quota_gateway.app import create_app
from quota_gateway.metricsserver import parse_bind

VALIDATE = "/api/apilicense/validate"


async def _tenant_a_uses_a_secret_product(client, tenant) -> None:
    product = await make_product(client, tenant.headers, name="SecretProductOfA")
    key = await make_api_key(client, tenant.headers, product)
    r = await client.post(VALIDATE, json={"apiKey": key}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["isValid"] is True


async def test_no_tenant_token_reads_server_metrics(client, tenant, other_tenant, settings):
    await _tenant_a_uses_a_secret_product(client, tenant)
    # tenant B's tokens: admin (every permission), metrics, and any other; neither scheme nor permission helps
    b_tokens = [other_tenant.headers, await other_tenant.token_with(settings.database_url, ["metrics"]),
                await other_tenant.token_with(settings.database_url, ["verify"])]
    for headers in b_tokens:
        bearer = {"Authorization": "Bearer " + headers["Authorization"].split(" ", 1)[1]}
        for sent in (headers, bearer):
            r = await client.get("/metrics", headers=sent)
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "unauthorized" and "SecretProductOfA" not in r.text
            assert r.headers["www-authenticate"] == 'Bearer realm="metrics"'
    # tenant A's own admin token neither
    r = await client.get("/metrics", headers=tenant.headers)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    for wrong in ({}, {"Authorization": "Bearer " + TEST_METRICS_TOKEN[:-1] + "x"},
                  {"Authorization": "Bearer " + TEST_METRICS_TOKEN + "x"},
                  {"Authorization": "Basic " + TEST_METRICS_TOKEN}, {"Authorization": TEST_METRICS_TOKEN}):
        r = await client.get("/metrics", headers=wrong)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", wrong
    # the operator's credential reads everything
    r = await client.get("/metrics", headers=METRICS_HEADERS)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'product="SecretProductOfA"' in r.text and "qg_http_requests_total" in r.text
    r = await client.get("/metrics", headers={"Authorization": "bearer  " + TEST_METRICS_TOKEN})
    assert r.status_code == 200  # the scheme is case-insensitive (RFC 9110)


async def test_without_an_operator_credential_the_public_route_refuses_everyone(settings, tenant, clock):
    async with running_app(settings.with_(metrics_token=""), clock) as (_, client):
        await _tenant_a_uses_a_secret_product(client, tenant)
        for headers in ({}, tenant.headers, METRICS_HEADERS, {"Authorization": "Bearer "}):
            r = await client.get("/metrics", headers=headers)
            assert r.status_code == 403 and r.json()["error"] == "metrics_disabled", headers
            assert "SecretProductOfA" not in r.text


def test_a_short_operator_credential_is_refused_at_start(settings):
    with pytest.raises(ValueError, match="QG_METRICS_TOKEN"):
        create_app(settings.with_(metrics_token="short"))


async def test_openapi_declares_the_operator_credential(client):
    spec = (await client.get("/openapi.json")).json()
    op = spec["paths"]["/metrics"]["get"]
    assert op["security"] == [{"MetricsOperator": []}]
    assert spec["components"]["securitySchemes"]["MetricsOperator"] == {
        "type": "http", "scheme": "bearer", "description": "the operator's QG_METRICS_TOKEN (GET /metrics only)"}
    assert {"200", "401", "403"} <= set(op["responses"])


async def test_metrics_listener_on_its_own_socket(settings, tenant, clock):
    async with running_app(settings.with_(metrics_bind="127.0.0.1:0"), clock) as (app, client):
        await client.get("/metrics")  # refused on the public side, counted all the same
        listener = app.state.services.metrics_listener
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as scraper:
            r = await scraper.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert 'qg_http_requests_total{method="GET",route="/metrics",status="401"} 1.0' in r.text
            r = await scraper.get("/api/customers")
            assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_bind_parsing():
    assert parse_bind("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_bind("[::1]:9") == ("::1", 9)
    assert parse_bind(":9464") == ("127.0.0.1", 9464)

"""/metrics: never on the public listener without a token with the 'metrics' permission; the
metrics listener (QG_METRICS_BIND) serves it without one."""

from __future__ import annotations

import httpx

from conftest import running_app
from quota_gateway.metricsserver import parse_bind


async def test_public_metrics_need_the_metrics_permission(client, tenant, settings):
    assert (await client.get("/metrics")).status_code == 401
    verify_only = await tenant.token_with(settings.database_url, ["verify"])
    r = await client.get("/metrics", headers=verify_only)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await client.get("/metrics", headers=await tenant.token_with(settings.database_url, ["metrics"]))
    assert r.status_code == 200 and "qg_http_requests_total" in r.text


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

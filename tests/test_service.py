"""Service basics: JSON errors for every kind of bad input, probes, metrics, OpenAPI, migrations."""

from __future__ import annotations

import asyncio

import pytest

from conftest import METRICS_HEADERS, db_connection
from quota_gateway import db

BAD_BODIES = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[]", 400, "invalid_body"),
    (b'"text"', 400, "invalid_body"),
    (b'{"name": 5, "scopes": ["verify"]}', 400, "invalid_field"),
    (b'{"scopes": ["verify"]}', 400, "missing_field"),
    (b'{"name": "x", "scopes": "verify"}', 400, "invalid_field"),
    (b'{"name": "x", "scopes": ["root"]}', 400, "invalid_field"),
    (b'{"name": "x", "scopes": []}', 400, "invalid_scopes"),
    (b'{"name": "x", "scopes": ["verify"], "expiresAt": "soon"}', 400, "invalid_field"),
    (b'{"name": "' + b"x" * 300 + b'", "scopes": ["verify"]}', 400, "invalid_field"),
    (b'\xff\xfe', 400, "invalid_json"),
]


@pytest.mark.parametrize("raw,status,code", BAD_BODIES, ids=[c + str(i) for i, (_, _, c) in enumerate(BAD_BODIES)])
async def test_bad_bodies_get_json_errors(client, tenant, raw, status, code):
    r = await client.post("/api/tokens", content=raw, headers={**tenant.headers, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"] == code and r.json()["message"]


async def test_oversized_body_is_413(client, tenant, settings):
    raw = b'{"name": "' + b"x" * (settings.max_body_bytes + 10) + b'", "scopes": ["verify"]}'
    r = await client.post("/api/tokens", content=raw, headers=tenant.headers)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


async def test_oversized_chunked_body_is_413(client, tenant, settings):
    async def chunks():
        for _ in range(settings.max_body_bytes // 1000 + 2):
            yield b" " * 1000

    r = await client.post("/api/tokens", content=chunks(), headers=tenant.headers)
    assert r.status_code == 413


async def test_unknown_route_and_method_are_json(client):
    r = await client.get("/no/such/thing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.put("/api/tokens")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


async def test_health_ready_metrics(client, tenant, settings):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"redis": "ok", "postgres": "ok"}
    text = (await client.get("/metrics", headers=METRICS_HEADERS)).text
    assert 'qg_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "qg_http_request_duration_seconds_bucket" in text


async def test_openapi_lists_every_api_route(app, client):
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    from quota_gateway.routing import ApiRoute

    for route in app.router.routes:
        if isinstance(route, ApiRoute):
            assert route.spec.method.lower() in spec["paths"][route.spec.path], route.spec.path
    for method, path in app.hot_routes:
        assert method.lower() in spec["paths"][path]


async def test_migrations_on_empty_and_migrated_database(pg_server):
    async with db_connection(pg_server.url) as admin:
        await admin.execute("DROP DATABASE IF EXISTS migrate_check")
        await admin.execute("CREATE DATABASE migrate_check")
    url = pg_server.url.rsplit("/", 1)[0] + "/migrate_check"
    first = await db.migrate_url(url)
    assert first == [v for v, _, _ in db.migrations()]
    assert await db.migrate_url(url) == []  # idempotent
    async with db_connection(url) as conn:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
    assert versions == first


def test_latency_histogram_exports_cumulative_buckets():
    from quota_gateway.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.0001, 0.003, 0.003, 7.0):  # 7 s is beyond the last bound: only +Inf counts it
        metrics.observe_request("/r", "POST", 200, seconds)
    text = metrics.render().decode()
    assert 'qg_http_requests_total{method="POST",route="/r",status="200"} 4.0' in text
    assert 'qg_http_request_duration_seconds_bucket{le="0.0005",route="/r"} 1.0' in text
    assert 'qg_http_request_duration_seconds_bucket{le="0.005",route="/r"} 3.0' in text
    assert 'qg_http_request_duration_seconds_bucket{le="2.5",route="/r"} 3.0' in text
    assert 'qg_http_request_duration_seconds_bucket{le="+Inf",route="/r"} 4.0' in text
    assert 'qg_http_request_duration_seconds_count{route="/r"} 4.0' in text


async def test_closing_the_pool_never_hangs_on_a_held_connection(migrated_db):
    pool = await db.create_pool(migrated_db, min_size=1, max_size=2)
    await pool.acquire()  # e.g. a request stuck in a query when the process stops
    await asyncio.wait_for(db.close_pool(pool, timeout=0.5), 5)  # pool.close() alone would wait forever
    assert pool.is_closing()


async def test_workers_share_metrics_through_the_metrics_directory(tmp_path, monkeypatch):
    import os

    from quota_gateway.metrics import Metrics

    worker_a, worker_b = Metrics(str(tmp_path)), Metrics(str(tmp_path))
    worker_a.observe_request("/r", "POST", 200, 0.003)
    worker_a.redis_errors.inc(("validate",))
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # worker A writes its snapshot as another process
    worker_a.write_snapshot()
    monkeypatch.undo()
    worker_b.observe_request("/r", "POST", 200, 0.0001)
    text = worker_b.render().decode()  # any worker answers for all of them
    assert 'qg_http_requests_total{method="POST",route="/r",status="200"} 2.0' in text
    assert 'qg_http_request_duration_seconds_bucket{le="0.0005",route="/r"} 1.0' in text
    assert 'qg_http_request_duration_seconds_count{route="/r"} 2.0' in text
    assert 'qg_redis_errors_total{operation="validate"} 1.0' in text

"""Real Redis and PostgreSQL, started once per test session on free ports in temporary directories.

State is reset between tests (FLUSHALL, TRUNCATE). Apps run their lifespan for real and are
driven in-process through httpx's ASGI transport; tests that need a real socket start uvicorn.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import redis as redis_sync

import doc_conformance
from doc_conformance import DocumentCheck
from quota_gateway import db
from quota_gateway.app import create_app
from quota_gateway.auth.service import create_token
from quota_gateway.clock import ManualClock
from quota_gateway.config import Settings
from quota_gateway.embedded import PostgresServer, RedisServer
from quota_gateway.tenants import create_tenant

# Test master key for tenant private keys at rest; never used outside tests.
TEST_MASTER_KEY = "00" * 32
# The operator's credential for the public /metrics (QG_METRICS_TOKEN) in tests.
TEST_METRICS_TOKEN = "operator-metrics-credential-for-tests"
METRICS_HEADERS = {"Authorization": f"Bearer {TEST_METRICS_TOKEN}"}


# --- a temp root of this run's own -------------------------------------------------------------

def pytest_configure(config):
    """Give each pytest run its own base temp dir outside /tmp/pytest-of-<user>.

    The embedded PostgreSQL runs as an unprivileged user, so the launcher opens the parents of its
    data dir for traversal; a second pytest run starting on the machine resets
    /tmp/pytest-of-<user> to 0700 and the first run's PostgreSQL could no longer reach its files.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="qg-pytest-")
        config._qg_basetemp = config.option.basetemp


def pytest_terminal_summary(terminalreporter):
    if doc_conformance.OPERATIONS:
        unchecked = sorted(doc_conformance.OPERATIONS - doc_conformance.SUCCESSES_CHECKED)
        terminalreporter.write_line(
            f"/openapi.json: {len(doc_conformance.OPERATIONS) - len(unchecked)} of {len(doc_conformance.OPERATIONS)} "
            f"operations' success bodies met a real answer (doc_conformance); not: {', '.join(unchecked) or 'none'}")


def pytest_unconfigure(config):
    basetemp = getattr(config, "_qg_basetemp", None)
    if basetemp:
        shutil.rmtree(basetemp, ignore_errors=True)


# --- the fast path, twice (compiled and pure), like multidict's implementation fixture ---------

def _fastpath_params():
    return [pytest.param("python", id="py"), pytest.param("compiled", id="c", marks=pytest.mark.compiled)]


@pytest.fixture(scope="session", params=_fastpath_params())
def fastpath_impl(request):
    """The `_fastpath` module under test: the pure-Python twin, then the compiled one."""
    if request.param == "python":
        return importlib.import_module("quota_gateway._fastpath_py")
    try:
        return importlib.import_module("quota_gateway._fastpath")
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the compiled fast path is missing in CI (the build should have compiled it)")
        pytest.skip("compiled fast path not built")


# --- servers -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    server = PostgresServer(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def migrated_db(pg_server):
    await db.migrate_url(pg_server.url)
    return pg_server.url


@contextlib.asynccontextmanager
async def db_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database (outside any app), closed after the block."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def clean_state(redis_server, migrated_db):
    """Empty Redis and empty tables (schema kept) before each test that touches them."""
    redis_sync.Redis.from_url(redis_server.url).flushall()
    async with db_connection(migrated_db) as conn:
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'")]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    yield


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def settings(redis_server, migrated_db, clean_state):
    # Webhook receivers in the tests listen on loopback, which production refuses (SSRF guard).
    return Settings(redis_url=redis_server.url, database_url=migrated_db, master_key=TEST_MASTER_KEY,
                    flush_interval=0.05, token_cache_ttl=60.0, webhook_allow_private=True,
                    # per-address limits and the metrics listener are off here; tests/abuse turns them on
                    client_requests_per_minute=0, client_failures_per_minute=0, metrics_bind="",
                    metrics_token=TEST_METRICS_TOKEN)


@contextlib.asynccontextmanager
async def running_app(settings: Settings, clock=None) -> AsyncIterator[tuple]:
    """(app, client): lifespan started, an httpx client speaking ASGI to it."""
    app = create_app(settings, clock=clock)
    async with app.router.router.lifespan_context(app.router):
        await app.state.services.tokens.ready.wait()
        # The document is fetched from an address of its own: /openapi.json counts in the
        # per-address window, which the tests' own client must find untouched.
        fetcher = httpx.ASGITransport(app=app, client=("192.0.2.250", 1))
        async with httpx.AsyncClient(transport=fetcher, base_url="http://testserver") as own:
            check = DocumentCheck((await own.get("/openapi.json")).json())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.event_hooks["response"].append(check.on_response)
            yield app, client
        assert not check.violations, "answers that break /openapi.json:\n" + "\n".join(check.violations[:20])


@pytest.fixture
async def app_client(settings, clock):
    async with running_app(settings, clock) as (app, client):
        yield app, client


@pytest.fixture
def app(app_client):
    return app_client[0]


@pytest.fixture
def client(app_client):
    return app_client[1]


@dataclass
class TenantCtx:
    id: str
    slug: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"ExisOneApi {self.token}"}

    async def token_with(self, database_url: str, scopes: list[str]) -> dict[str, str]:
        async with db_connection(database_url) as conn:
            made = await create_token(conn, self.id, "test", scopes)
        return {"Authorization": f"ExisOneApi {made['token']}"}


async def make_tenant(database_url: str, slug: str) -> TenantCtx:
    async with db_connection(database_url) as conn:
        tenant = await create_tenant(conn, slug, slug.title(), master_key=TEST_MASTER_KEY)
        token = await create_token(conn, tenant["id"], "admin", ["admin"])
    return TenantCtx(tenant["id"], slug, token["token"])


@pytest.fixture
async def tenant(settings) -> TenantCtx:
    return await make_tenant(settings.database_url, "acme")


@pytest.fixture
async def other_tenant(settings) -> TenantCtx:
    return await make_tenant(settings.database_url, "globex")


# --- API-key licensing helpers -----------------------------------------------------------------

async def make_product(client, headers, name: str = "Weather API", features: tuple[str, ...] = ()) -> int:
    r = await client.post("/api/product", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    product_id = r.json()["id"]
    for feature in features:
        f = await client.post(f"/api/product/{product_id}/features", json={"name": feature}, headers=headers)
        assert f.status_code == 201, f.text
    return product_id


async def make_api_key(client, headers, product_id: int, **fields) -> str:
    r = await client.post("/api/apilicense", json={"productId": product_id, "email": "dev@example.com",
                                                   "clientName": "Client", "clientIdentifier": "c-1", **fields},
                          headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["apiKey"]


# --- the gateway over a real socket -------------------------------------------------------------

@dataclass
class LiveGateway:
    url: str          # https://127.0.0.1:<port>
    ca_file: str      # the self-signed certificate `serve --dev-tls` wrote; trust it to connect
    log_file: str


@pytest.fixture
def tls_gateway(settings, tmp_path) -> Iterator[LiveGateway]:
    """`quota-gateway serve --dev-tls` on a free port against the test Redis and PostgreSQL."""
    import ssl
    import subprocess
    import sys
    import time

    from quota_gateway.embedded import free_port

    port = free_port()
    data_dir = tmp_path / "gateway-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QG_")}
    env.update(settings.to_env())
    env.update(QG_MASTER_KEY=TEST_MASTER_KEY, QG_DATA_DIR=str(data_dir), QG_LOG_LEVEL="warning")
    log_file = tmp_path / "gateway.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "quota_gateway.cli", "serve", "--dev-tls", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    ca_file = data_dir / "tls" / "dev-cert.pem"
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if ca_file.exists() and httpx.get(f"{url}/healthz", timeout=1,
                                              verify=ssl.create_default_context(cafile=str(ca_file))).status_code == 200:
                break
        except (httpx.HTTPError, ssl.SSLError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the gateway did not start:\n{log_file.read_text()[-3000:]}")
        time.sleep(0.1)
    try:
        yield LiveGateway(url, str(ca_file), str(log_file))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- e-mail: a real SMTP server on loopback ----------------------------------------------------

@pytest.fixture(scope="session")
def smtp_server_session():
    from smtp_capture import SmtpCapture

    server = SmtpCapture().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_server_session):
    """A real aiosmtpd server on 127.0.0.1 (`.host`, `.port`): `.messages`, `await .wait_for(n)`,
    `.fail_next(n)`, `.passwords[user] = password`. Emptied before each test."""
    smtp_server_session.reset()
    return smtp_server_session


# --- webhooks: a real HTTP receiver on loopback ------------------------------------------------

@pytest.fixture
def webhook_receiver():
    """A real HTTP server on 127.0.0.1 (`.url`) that verifies signatures with `.secrets`, fails on
    command (`.fail_next(n, status)`, `.status`, `.delay`) and records `.arrivals` in order."""
    from webhook_receiver import Receiver

    receiver = Receiver().start()
    yield receiver
    receiver.stop()

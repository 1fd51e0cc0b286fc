"""QuotaClient / AsyncQuotaClient against the real gateway: typed answers, idempotency, retries."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from typing import ClassVar

import httpx
import pytest

from conftest import make_api_key, make_product
from quota_gateway.client import (
    ApiKeyValidation,
    AsyncQuotaClient,
    GatewayError,
    GatewayUnavailable,
    Quota,
    QuotaClient,
    RetryPolicy,
)
from quota_gateway.embedded import free_port


def _client(app, token: str, **kwargs) -> AsyncQuotaClient:
    return AsyncQuotaClient("http://gateway", token, transport=httpx.ASGITransport(app=app), **kwargs)


async def test_typed_answers_of_validate_check_and_usage(app, client, tenant):
    product = await make_product(client, tenant.headers, features=("api:rate:minute:3", "api:tier:gold"))
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=10)
    async with _client(app, tenant.token) as quota:
        first = await quota.validate(key, units=4)
        assert isinstance(first, ApiKeyValidation)
        assert first.is_valid and first.status == 200 and first.units_consumed == 4
        assert first.quota == Quota(limit=10, used=4, remaining=6)
        assert "api:tier:gold" in first.features  # every product feature, rules included
        window = first.rate_limits["calls_minute"]
        assert (window.limit, window.used, window.remaining) == (3, 1, 2) and window.resets_at.endswith("Z")

        looked = await quota.check(key, units=6)
        assert looked.is_valid and looked.units_consumed == 0 and looked.quota.used == 4
        too_many = await quota.check(key, units=7)
        assert not too_many.is_valid and too_many.error_code == "quota_exhausted" and too_many.status == 429

        await quota.validate(key)
        await quota.validate(key)
        full = await quota.validate(key)
        assert not full.is_valid and full.status == 429 and full.error_code == "rate_limit_minute"
        assert full.retry_after and full.headers["retry-after"] == str(full.retry_after)
        assert full.headers["ratelimit"].startswith('"calls_minute";r=0')
        assert full.headers["ratelimit-policy"] == '"calls_minute";q=3;w=60'

        usage = await quota.usage(key)
        assert usage.quota == Quota(limit=10, used=6, remaining=4) and usage.rate_limits["calls_minute"].used == 3

        unknown = await quota.validate("qgk_" + "0" * 28)
        assert not unknown.is_valid and unknown.status == 404 and unknown.error_code == "not_found"


async def test_idempotency_key_consumes_once(app, client, tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product, maxApiCalls=100)
    async with _client(app, tenant.token) as quota:
        first = await quota.validate(key, units=5, idempotency_key="order-17")
        again = await quota.validate(key, units=5, idempotency_key="order-17")
        assert first == again and first.quota.used == 5
        assert (await quota.validate(key, units=5, idempotency_key="order-18")).quota.used == 10


async def test_revoked_key_is_a_403_verdict_and_bad_tokens_raise(app, client, tenant, other_tenant):
    product = await make_product(client, tenant.headers)
    key = await make_api_key(client, tenant.headers, product)
    assert (await client.delete(f"/api/apilicense/{key}", headers=tenant.headers)).status_code == 200
    async with _client(app, tenant.token) as quota:
        revoked = await quota.validate(key)
        assert (revoked.is_valid, revoked.status, revoked.error_code) == (False, 403, "revoked")
        with pytest.raises(GatewayError) as raised:
            await quota.validate(key, units=0)
        assert raised.value.status == 400
    async with _client(app, "exo_at_nope_nope") as quota:
        with pytest.raises(GatewayError) as raised:
            await quota.validate(key)
        assert (raised.value.status, raised.value.error) == (401, "unauthorized")
    # another tenant's token does not see the key (isolation)
    async with _client(app, other_tenant.token) as quota:
        assert (await quota.validate(key)).error_code == "not_found"
    verify_only = (await tenant.token_with(app.state.services.settings.database_url, ["verify"]))
    async with _client(app, verify_only["Authorization"].split()[1]) as quota:
        with pytest.raises(GatewayError) as raised:
            await quota.usage(key)
        assert (raised.value.status, raised.value.error) == (403, "forbidden")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for a gateway that answers 503 (Redis down) before it recovers."""

    answers: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []  # shared by the handler instances
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).seen.append(self.headers.get("idempotency-key", ""))
        status, headers, body = type(self).answers.pop(0)
        self.send_response(status)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_gateway():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    _Flaky.answers, _Flaky.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Flaky
    server.shutdown()
    server.server_close()


OK_BODY = b'{"isValid":true,"unitsConsumed":1,"quota":{"limit":null,"used":1,"remaining":null},' \
          b'"rateLimits":{},"features":[],"expiresAt":null}'
UNAVAILABLE = (503, {"retry-after": "1", "content-type": "application/json"}, b'{"error":"unavailable"}')


def test_sync_client_retries_503_honouring_retry_after(flaky_gateway):
    url, handler = flaky_gateway
    handler.answers = [UNAVAILABLE, UNAVAILABLE, (200, {"content-type": "application/json"}, OK_BODY)]
    waits: list[float] = []
    with QuotaClient(url, "exo_at_a_b", sleep=waits.append) as quota:
        assert quota.validate("qgk_x", idempotency_key="k1").is_valid
    assert waits == [1.0, 1.0] and handler.seen == ["k1", "k1"] + ["k1"]

    handler.answers = [UNAVAILABLE] * 3
    with QuotaClient(url, "exo_at_a_b", sleep=waits.append, retry=RetryPolicy(attempts=3)) as quota, \
            pytest.raises(GatewayUnavailable):
        quota.validate("qgk_x")

    # a Retry-After longer than the policy allows ends the retries at once
    handler.answers = [(503, {"retry-after": "30"}, b"{}")]
    waits.clear()
    with QuotaClient(url, "exo_at_a_b", sleep=waits.append) as quota, pytest.raises(GatewayUnavailable):
        quota.validate("qgk_x")
    assert waits == []


async def test_unreachable_gateway_is_retried_with_backoff_then_raises():
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    quota = AsyncQuotaClient(f"http://127.0.0.1:{free_port()}", "exo_at_a_b", sleep=record,
                             retry=RetryPolicy(attempts=4, backoff=0.1, max_backoff=0.25))
    with pytest.raises(GatewayUnavailable):
        await quota.validate("qgk_x")
    await quota.aclose()
    assert waits == [0.1, 0.2, 0.25]


def test_client_package_imports_nothing_of_the_server():
    code = ("import sys, quota_gateway.client; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'asyncpg', 'redis', 'uvicorn'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_one_pool_per_process_after_fork(flaky_gateway):
    import os

    url, handler = flaky_gateway
    handler.answers = [(200, {"content-type": "application/json"}, OK_BODY)] * 2
    quota = QuotaClient(url, "exo_at_a_b")
    assert quota.validate("qgk_x").is_valid
    parent_pool = quota._http
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must open its own pool, not reuse the parent's sockets
        try:
            ok = quota.validate("qgk_x").is_valid and quota._http is not parent_pool
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert quota._http is parent_pool
    quota.close()

"""The client middleware's own cost per request, measured in-process.

A tiny app is called directly through its ASGI (or WSGI) interface, bare and wrapped in the
middleware, turn by turn. The middleware's client gets the gateway's answer from an in-process
transport that returns canned bytes of a real validate answer, so what is measured is the
middleware and its HTTP client (key lookup, request building, httpx's machinery, parsing the
answer into typed results, request state), not the network or the gateway. The client call is
also timed alone, to split the overhead between httpx and the middleware's own logic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from quota_gateway.client import (
    AsyncQuotaClient,
    QuotaClient,
    QuotaMiddleware,
    QuotaWSGIMiddleware,
)

KEY = "qgk_" + "7" * 28
ANSWER = (b'{"isValid":true,"unitsConsumed":1,"quota":{"limit":1000000,"used":17,"remaining":999983},'
          b'"rateLimits":{"calls_minute":{"limit":600,"used":3,"remaining":597,"resetsAt":"2026-03-14T15:10:00Z"}},'
          b'"features":["api:tier:premium"],"expiresAt":null}')
_HEADERS = [("content-type", "application/json"), ("content-length", str(len(ANSWER)))]


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers=_HEADERS, content=ANSWER)


async def _asgi_app(scope: dict, receive: Callable, send: Callable) -> None:
    body = b'{"forecast":"sunny"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")]})
    await send({"type": "http.response.body", "body": body})


def _scope() -> dict:
    return {"type": "http", "method": "GET", "path": "/forecast", "raw_path": b"/forecast", "query_string": b"",
            "headers": [(b"host", b"backend"), (b"x-api-key", KEY.encode()), (b"accept", b"*/*")]}


async def _asgi_turn(app: Any, n: int) -> float:
    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(n):
        await app(_scope(), receive, send)
    elapsed = time.perf_counter() - started
    assert statuses.count(200) == n, statuses[:3]
    return elapsed / n * 1e6


async def _client_turn(client: AsyncQuotaClient, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await client.validate(KEY)
    return (time.perf_counter() - started) / n * 1e6


def _wsgi_app(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("content-type", "application/json"), ("content-length", "20")])
    return [b'{"forecast":"sunny"}']


def _wsgi_turn(app: Any, n: int) -> float:
    statuses: list[str] = []

    def start_response(status: str, headers: list) -> None:
        statuses.append(status)

    started = time.perf_counter()
    for _ in range(n):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/forecast", "QUERY_STRING": "", "HTTP_X_API_KEY": KEY}
        b"".join(app(environ, start_response))
    elapsed = time.perf_counter() - started
    assert statuses.count("200 OK") == n, statuses[:3]
    return elapsed / n * 1e6


def run(n: int = 3000, rounds: int = 5) -> dict[str, float]:
    """Best µs per request of each target over `rounds` alternating turns of `n` requests."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    client = AsyncQuotaClient("https://gateway.test", "exo_at_bench_bench", transport=httpx.MockTransport(_answer))
    wrapped = QuotaMiddleware(_asgi_app, client=client)
    sync_client = QuotaClient("https://gateway.test", "exo_at_bench_bench", transport=httpx.MockTransport(_answer))
    wsgi_wrapped = QuotaWSGIMiddleware(_wsgi_app, client=sync_client)
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = min(best.get(name, value), value)

    try:
        loop.run_until_complete(_asgi_turn(wrapped, 200))  # warm-up: pools, caches
        _wsgi_turn(wsgi_wrapped, 200)
        for turn in range(rounds):
            order = [("asgi_bare", _asgi_app), ("asgi_middleware", wrapped)]
            for name, app in order if turn % 2 == 0 else reversed(order):
                keep(name, loop.run_until_complete(_asgi_turn(app, n)))
            keep("async_client", loop.run_until_complete(_client_turn(client, n)))
            order_w = [("wsgi_bare", _wsgi_app), ("wsgi_middleware", wsgi_wrapped)]
            for name, app in order_w if turn % 2 == 0 else reversed(order_w):
                keep(name, _wsgi_turn(app, n))
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
        sync_client.close()
    return best


def report(best: dict[str, float]) -> str:
    asgi = best["asgi_middleware"] - best["asgi_bare"]
    wsgi = best["wsgi_middleware"] - best["wsgi_bare"]
    own = asgi - best["async_client"]
    return "\n".join([
        f"{'target':34} {'µs/request':>10}",
        f"{'ASGI app, bare':34} {best['asgi_bare']:10.1f}",
        f"{'ASGI app + QuotaMiddleware':34} {best['asgi_middleware']:10.1f}",
        f"{'  AsyncQuotaClient.validate alone':34} {best['async_client']:10.1f}",
        f"{'WSGI app, bare':34} {best['wsgi_bare']:10.1f}",
        f"{'WSGI app + QuotaWSGIMiddleware':34} {best['wsgi_middleware']:10.1f}",
        (f"middleware overhead per request: ASGI {asgi:.0f} µs, WSGI {wsgi:.0f} µs (the gateway round trip "
        f"not included); the client call alone is {best['async_client']:.0f} µs, so the middleware's own "
        f"logic adds {own:+.0f} µs (within noise when near zero)"),
    ])


if __name__ == "__main__":
    print(report(run()))

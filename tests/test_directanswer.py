"""directanswer: an answer written straight onto uvicorn's httptools connection is byte for byte the
answer ASGI `send` writes, over a real uvicorn server: kept-alive and closing connections,
pipelined requests, and every case where it must step aside (h11, a wrapped `send`)."""

from __future__ import annotations

import asyncio
import contextlib
import re

import httpx
import pytest
import uvicorn

from conftest import make_api_key, make_product
from quota_gateway import directanswer
from quota_gateway.abuse.headers import BoundedHttpToolsProtocol
from quota_gateway.app import create_app
from quota_gateway.embedded import free_port

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11"),
            (b"ratelimit", b'"minute";r=9;t=42'), (b"ratelimit-policy", b'"minute";q=10;w=60'),
            (b"x-ratelimit-limit", b"10"), (b"x-ratelimit-remaining", b"9"), (b"x-ratelimit-reset", b"1800000042")]
_BODY = b'{"ok":true}'
_DATE = re.compile(rb"date: [^\r]*\r\n")


async def _answer(scope, receive, send):
    """/direct writes through directanswer (and records whether it could), anything else through ASGI."""
    if scope["type"] != "http":
        return
    await receive()
    status = 429 if scope["path"].endswith("/429") else 200
    if scope["path"].startswith("/direct"):
        scope["state"]["wrote_directly"].append(directanswer.write(send, status, _HEADERS, _BODY))
        if scope["state"]["wrote_directly"][-1]:
            return
    elif scope["path"].startswith("/wrapped"):
        inner = send

        async def wrapped(message):
            await inner(message)
        scope["state"]["wrote_directly"].append(directanswer.write(wrapped, status, _HEADERS, _BODY))
        send = wrapped
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


@contextlib.asynccontextmanager
async def _served(app, http="httptools", access_log=False):
    """uvicorn as `serve` runs it (no uvicorn access log: the gateway writes its own)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, lifespan="off", log_level="error",
                            access_log=access_log)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, server
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


class _StateApp:
    """The answer app with its own lifespan-free state: the record of which road each answer took."""

    def __init__(self) -> None:
        self.wrote_directly: list[bool] = []

    async def __call__(self, scope, receive, send):
        scope.setdefault("state", {})["wrote_directly"] = self.wrote_directly
        await _answer(scope, receive, send)


async def _exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` on one connection and read until the server closes it (or 1 s of silence)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 1.0):
            received += chunk
    except TimeoutError:
        pass
    finally:
        writer.close()
    return received


def _request(path: str, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST " + path.encode() + b" HTTP/" + version + b"\r\nhost: t\r\ncontent-length: 2\r\n" + extra + b"\r\n{}"


@pytest.mark.parametrize("protocol", ["httptools", BoundedHttpToolsProtocol], ids=["uvicorn", "bounded"])
@pytest.mark.parametrize("status", [200, 429])
async def test_direct_answer_is_byte_identical_to_asgi_send(protocol, status):
    app = _StateApp()
    suffix = "/429" if status == 429 else ""
    async with _served(app, http=protocol) as (port, _):
        direct = await _exchange(port, _request("/direct" + suffix, b"connection: close\r\n"))
        through_asgi = await _exchange(port, _request("/asgi" + suffix, b"connection: close\r\n"))
    assert app.wrote_directly == [True]
    assert _DATE.sub(b"", direct) == _DATE.sub(b"", through_asgi)
    assert direct.startswith(b"HTTP/1.1 %d " % status) and direct.endswith(b"\r\n\r\n" + _BODY)
    assert b"\r\nratelimit: \"minute\";r=9;t=42\r\n" in direct and b"\r\nconnection: close\r\n" in direct


async def test_kept_alive_and_pipelined_requests_are_answered_in_order():
    app = _StateApp()
    async with _served(app) as (port, _):
        pipelined = _request("/direct") + _request("/asgi") + _request("/direct") \
            + _request("/direct", b"connection: close\r\n")
        received = await _exchange(port, pipelined)
    assert app.wrote_directly == [True, True, True]
    answers = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 4 and all(answer.endswith(_BODY) for answer in answers)
    assert [b"connection: close" in answer for answer in answers] == [False, False, False, True]


async def test_an_http_1_0_request_gets_its_connection_closed():
    app = _StateApp()
    async with _served(app) as (port, _):
        received = await _exchange(port, _request("/direct", version=b"1.0"))  # read until EOF: the server closed
    assert app.wrote_directly == [True]
    assert b"connection: close\r\n" in received and received.endswith(_BODY)


async def test_kept_alive_connection_serves_the_next_request_after_a_direct_answer():
    app = _StateApp()
    async with _served(app) as (port, _), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            r = await client.post("/direct", content=b"{}")
            assert r.status_code == 200 and r.content == _BODY and r.headers["x-ratelimit-remaining"] == "9"
    assert app.wrote_directly == [True, True, True]


async def test_steps_aside_for_h11_uvicorns_access_log_and_a_wrapped_send():
    app = _StateApp()
    async with _served(app, http="h11") as (port, _):
        received = await _exchange(port, _request("/direct", b"connection: close\r\n"))
    async with _served(app, access_log=True) as (port, _):
        logged = await _exchange(port, _request("/direct", b"connection: close\r\n"))
    async with _served(app) as (port, _):
        wrapped = await _exchange(port, _request("/wrapped", b"connection: close\r\n"))
    assert app.wrote_directly == [False, False, False]
    for answer in (received, logged, wrapped):
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(_BODY)


async def test_steps_aside_once_an_answer_started_or_for_an_unknown_status():
    app = _StateApp()

    async def started_first(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        app.wrote_directly.append(directanswer.write(send, 200, _HEADERS, _BODY))
        app.wrote_directly.append(directanswer.write(send, 299, _HEADERS, _BODY))
        await send({"type": "http.response.body", "body": _BODY})

    async with _served(started_first) as (port, _):
        received = await _exchange(port, _request("/", b"connection: close\r\n"))
    assert app.wrote_directly == [False, False] and received.endswith(_BODY)


async def test_validate_over_a_real_socket_answers_as_through_asgi(settings, tenant, clock):
    """The hot route writes directly under uvicorn; its answer equals the ASGI road's, fields included
    (the clock stands still, so the fields' seconds are the same)."""
    app = create_app(settings, clock=clock)
    async with app.router.router.lifespan_context(app.router):
        await app.state.services.tokens.ready.wait()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as asgi:
            product = await make_product(asgi, tenant.headers, features=("api:rate:minute:10",))
            key = await make_api_key(asgi, tenant.headers, product, maxApiCalls=100)
            through_asgi = await asgi.post("/api/apilicense/validate", json={"apiKey": key, "consumeUnits": False},
                                           headers=tenant.headers)
        async with _served(app) as (port, _), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as real:
            answers = [await real.post("/api/apilicense/validate", json={"apiKey": key, "consumeUnits": False},
                                       headers=tenant.headers) for _ in range(2)]
            refused = await real.post("/api/apilicense/validate", json={"apiKey": key}, headers={})
    for direct in answers:
        assert direct.status_code == through_asgi.status_code == 200
        assert direct.content == through_asgi.content
        assert [(k, v) for k, v in direct.headers.items() if k not in ("date", "server")] == \
            list(through_asgi.headers.items())
        assert re.fullmatch(r'"calls_minute";r=10;t=\d+', direct.headers["ratelimit"])
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"

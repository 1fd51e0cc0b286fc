"""Bounded request heads on the real HTTP stack (uvicorn + httptools, as `serve` runs it):
431 with a JSON body past the size or count limit, normal requests untouched."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
import uvicorn

from quota_gateway.abuse.headers import BoundedHttpToolsProtocol
from quota_gateway.embedded import free_port


async def _hello(scope, receive, send):
    if scope["type"] != "http":
        return
    body = orjson.dumps({"headers": len(scope["headers"])})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
                                                                   (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server(monkeypatch):
    monkeypatch.setattr(BoundedHttpToolsProtocol, "limits", (4096, 20))
    port = free_port()
    config = uvicorn.Config(_hello, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol, lifespan="off",
                            log_level="error")
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    while not instance.started:
        await asyncio.sleep(0.01)
    yield port
    instance.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)


async def _exchange(port: int, head: bytes, *, chunks: int = 1) -> tuple[int, dict | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        step = max(len(head) // chunks, 1)
        for i in range(0, len(head), step):
            writer.write(head[i:i + step])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1]
    return int(status_line.split()[1]), orjson.loads(body) if body else None


def _request(*headers: bytes, target: bytes = b"/") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + b"".join(
        h + b"\r\n" for h in headers) + b"\r\n"


async def test_normal_requests_pass(server):
    status, body = await _exchange(server, _request(b"x-a: 1", b"x-b: 2"))
    assert status == 200 and body == {"headers": 4}


async def test_a_huge_header_gets_431_json(server):
    status, body = await _exchange(server, _request(b"x-big: " + b"a" * 1_000_000), chunks=50)
    assert status == 431
    assert body["error"] == "headers_too_large"


async def test_too_many_headers_get_431(server):
    status, body = await _exchange(server, _request(*(b"x-h%d: 1" % i for i in range(30))))
    assert status == 431 and body["error"] == "headers_too_large"


async def test_a_huge_request_target_gets_431(server):
    status, _ = await _exchange(server, _request(target=b"/" + b"p" * 10_000))
    assert status == 431


async def test_just_under_the_limit_passes(server):
    status, _ = await _exchange(server, _request(b"x-big: " + b"a" * 3500))
    assert status == 200

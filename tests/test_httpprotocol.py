"""Trusted answer heads (httpprotocol) on the real HTTP stack: the bytes on the wire are the
bytes uvicorn's own path writes, keep-alive, pipelining and HTTP/1.0 included."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import uvicorn

from quota_gateway.abuse.headers import BoundedHttpToolsProtocol
from quota_gateway.embedded import free_port
from quota_gateway.httpprotocol import TRUSTED_HEAD, GatewayHttpProtocol

_BODY = b'{"isValid":true}'
_HEAD = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
         (b"ratelimit", b'"minute";r=99;t=42'), (b"ratelimit-policy", b'"minute";q=100;w=60'),
         (b"x-ratelimit-limit", b"100"), (b"x-ratelimit-remaining", b"99"), (b"x-ratelimit-reset", b"42")]
seen_extensions: list = []


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen_extensions.append(scope.get("extensions"))
    start = {"type": "http.response.start", "status": 200, "headers": list(_HEAD)}
    if scope["path"] == "/trusted":
        start[TRUSTED_HEAD] = True
    await send(start)
    await send({"type": "http.response.body", "body": _BODY})


@contextlib.asynccontextmanager
async def _serving(protocol):
    port = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="error",
                            access_log=False)
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    while not instance.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        instance.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def _exchange(port: int, raw: bytes, answers: int) -> list[bytes]:
    """Send `raw` (one or more requests) and read `answers` complete answers (Content-Length framed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        out = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            out.append(head + await reader.readexactly(length))
        return out
    finally:
        writer.close()


def _without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"date: "))


def _get(target: bytes, version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\nhost: x\r\n" + extra + b"\r\n"


@pytest.mark.parametrize("request_bytes, answers", [
    (_get(b"%s"), 1),
    (_get(b"%s", extra=b"connection: close\r\n"), 1),
    (_get(b"%s", version=b"1.0"), 1),
    (_get(b"%s") * 3, 3),  # pipelined on one keep-alive connection
], ids=["keep-alive", "connection-close", "http-1.0", "pipelined"])
async def test_a_trusted_head_is_written_as_uvicorn_writes_it(request_bytes, answers):
    async with _serving(GatewayHttpProtocol) as port:
        trusted = await _exchange(port, request_bytes.replace(b"%s", b"/trusted"), answers)
        plain = await _exchange(port, request_bytes.replace(b"%s", b"/plain"), answers)
    assert [_without_date(a) for a in trusted] == [_without_date(a) for a in plain]
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\ndate: ") for a in trusted)
    assert b"ratelimit-policy: \"minute\";q=100;w=60\r\n" in trusted[0]
    if b"close" in request_bytes or b"HTTP/1.0" in request_bytes:
        assert b"connection: close\r\n" in trusted[0]


async def test_only_the_gateway_protocol_advertises_the_extension():
    seen_extensions.clear()
    async with _serving(GatewayHttpProtocol) as port:
        await _exchange(port, _get(b"/plain"), 1)
    async with _serving(BoundedHttpToolsProtocol) as port:
        # an app that marks its head anyway is answered by uvicorn's own path
        answer = (await _exchange(port, _get(b"/trusted"), 1))[0]
    assert seen_extensions[0] == {TRUSTED_HEAD: {}}
    assert not (seen_extensions[1] or {}).get(TRUSTED_HEAD)
    assert answer.endswith(b"x-ratelimit-reset: 42\r\n\r\n" + _BODY)

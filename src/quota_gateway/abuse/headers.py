"""Bounded request heads: uvicorn's httptools protocol with a limit on the head's size (request
target and headers, QG_MAX_HEADER_BYTES) and on the number of headers (QG_MAX_HEADER_COUNT).
Past either, the answer is 431 with a JSON body and the connection closes, before the app runs.

uvicorn offers no such limit for httptools (its h11_max_incomplete_event_size applies to h11
only) and llhttp enforces none, so the counting happens in the parser callbacks uvicorn already
runs for every header: an addition and two comparisons per header, no extra call. A head
arriving in many pieces is cut off once the bytes received inside it pass the limit (plus one
read's worth), so a slow 1 MB header is never buffered whole.

`serve` passes this class to uvicorn; the limits are read from the QG_* environment the workers
start with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_LINGER = 1.0  # seconds a refused connection's further bytes are dropped before it closes
_SLACK = 64 * 1024  # one socket read beyond the limit before a streaming head is cut off
_BODY = orjson.dumps({"error": "headers_too_large",
                      "message": "request headers too large or too many; see QG_MAX_HEADER_BYTES / QG_MAX_HEADER_COUNT"})
_RESPONSE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
             b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY)


def _limits() -> tuple[int, int]:
    from ..config import Settings

    settings = Settings.from_env()
    return settings.max_header_bytes, settings.max_header_count


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: tuple[int, int] | None = None  # (bytes, count), read once per process

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if BoundedHttpToolsProtocol.limits is None:
            BoundedHttpToolsProtocol.limits = _limits()
        self._max_bytes, self._max_count = BoundedHttpToolsProtocol.limits
        self._head_size = 0
        self._in_head = False
        self._streamed = 0
        self._over_limit = False
        self._answered = False

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # lingering after a 431: the rest of the head is read and dropped
        if self._in_head:
            self._streamed += len(data)
            if self._streamed > self._max_bytes + _SLACK:
                self._refuse()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._in_head = True
        self._streamed = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_size += len(url)
        if self._head_size > self._max_bytes:
            self._over_limit = True
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own on_header, plus the counting (no extra call per header)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_bytes or len(self.headers) > self._max_count:
            self._over_limit = True
            raise HeadTooLarge  # httptools stops parsing; uvicorn's 400 becomes our 431 below

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._over_limit:
            self._refuse()
            return
        super().send_400_response(msg)

    def _refuse(self) -> None:
        """Answer 431, then linger: closing while the client is still sending would reset the
        connection and lose the answer, so our side half-closes and drops what still arrives
        for a moment before closing."""
        if self._answered or self.transport.is_closing():
            return
        self._answered = True
        self.transport.write(_RESPONSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER, self.transport.close)


class HeadTooLarge(Exception):
    """Raised inside a parser callback: the head passed a limit."""

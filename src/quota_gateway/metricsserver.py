"""The metrics listener (QG_METRICS_BIND, loopback by default): GET /metrics without a token,
on its own socket, so the public listener never serves metrics without the operator's credential
(QG_METRICS_TOKEN; metrics.metrics_endpoint).

Every worker of `serve --workers N` binds the same address with SO_REUSEPORT; whichever worker a
scrape reaches answers for the whole server (metrics.py shares the numbers through
QG_METRICS_DIR). HTTP/1.1 parsing is h11's; one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import h11
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from .metrics import Metrics

log = logging.getLogger("quota_gateway.metrics")

_READ_TIMEOUT = 10.0
_MAX_REQUEST = 16 * 1024


def parse_bind(bind: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:9464`) -> (host, port); ValueError when malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"QG_METRICS_BIND: expected host:port, got '{bind}'")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsListener:
    def __init__(self, metrics: Metrics, bind: str) -> None:
        self.metrics = metrics
        self.host, self.port = parse_bind(bind)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):  # workers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]  # the real one when 0 was asked for
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(8192)
                        conn.receive_data(data)
                        if not data:
                            break
                    elif isinstance(event, h11.Request):
                        await self._answer(conn, writer, event)
                        break
                    else:
                        break
        except (h11.RemoteProtocolError, TimeoutError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request) -> None:
        path = request.target.split(b"?", 1)[0]
        if request.method in (b"GET", b"HEAD") and path == b"/metrics":
            status, content_type, body = 200, CONTENT_TYPE_LATEST.encode(), self.metrics.render()
        else:
            status, content_type = 404, b"application/json"
            body = orjson.dumps({"error": "not_found", "message": "this listener serves GET /metrics only"})
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        if request.method != b"HEAD":
            out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        writer.write(out)
        await writer.drain()

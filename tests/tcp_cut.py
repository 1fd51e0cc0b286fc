"""A loopback TCP forwarder the tests can cut: a real outage of the server behind it.

`cut()` closes every forwarded connection and stops listening, so clients see dropped connections
and then refused ones, as when a database host goes away; `restore()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class CuttableForwarder:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> CuttableForwarder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None or writer not in self._writers:  # cut while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        await self.start()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.cut()


@contextlib.asynccontextmanager
async def postgres_behind_forwarder(settings: Any) -> AsyncIterator[tuple[Any, CuttableForwarder]]:
    """(a copy of `settings` whose PostgreSQL is reached through a new CuttableForwarder, that
    forwarder): cut it for a real database outage. Closed after the block."""
    upstream = urlsplit(settings.database_url)
    forwarder = await CuttableForwarder(upstream.hostname or "127.0.0.1", upstream.port or 5432).start()
    through = dataclasses.replace(settings, database_url=upstream._replace(
        netloc=f"{upstream.username}@127.0.0.1:{forwarder.port}").geturl())
    try:
        yield through, forwarder
    finally:
        await forwarder.aclose()


@contextlib.asynccontextmanager
async def redis_behind_forwarder(settings: Any) -> AsyncIterator[tuple[Any, CuttableForwarder]]:
    """Like `postgres_behind_forwarder`, for Redis: cut the forwarder for a real Redis outage."""
    upstream = urlsplit(settings.redis_url)
    forwarder = await CuttableForwarder(upstream.hostname or "127.0.0.1", upstream.port or 6379).start()
    through = dataclasses.replace(settings, redis_url=upstream._replace(netloc=f"127.0.0.1:{forwarder.port}").geturl())
    try:
        yield through, forwarder
    finally:
        await forwarder.aclose()

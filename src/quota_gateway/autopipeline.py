"""A lean Redis client for the hot path: one connection, automatic pipelining.

Every command issued during one event-loop tick is written with a single `write()` (one
syscall, one packet train); replies are matched to callers in order. Under load, hundreds of
concurrent validations share one round trip, where a pooled client would need one connection
and one round trip each (and runs out of connections). Encoding and parsing are hiredis (C).

On a lost connection every in-flight call fails with ConnectionError and the next call
reconnects. EVALSHA falls back to SCRIPT LOAD on NOSCRIPT (a restarted or flushed Redis).
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import unquote, urlparse

import hiredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from .scripts import LuaScript, ScriptRunner, first_error_raised

# Commands are written at the end of the event-loop tick, or as soon as this many are queued.
# Writing a whole tick at once makes the server and Redis take turns in lock-step (a convoy: the
# server idles while Redis runs the batch, then Redis idles while the server answers it); small
# writes keep both busy. Measured with benchmarks/load.py at 32 connections: one write per tick
# 0.68 of the bare endpoint's throughput, every 16 commands 0.81, every 4 commands 0.88-0.91.
FLUSH_AT = 4


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, flush_at: int) -> None:
        self._loop = loop
        self._flush_at = flush_at
        self._reader = hiredis.Reader()
        self._waiters: deque[asyncio.Future] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.writes = 0  # number of socket writes (observable batching)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while True:
            reply = reader.gets()
            if reply is False:
                return
            future = waiters.popleft()
            if future.done():  # caller gave up (cancelled): drop its reply, keep the order
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                future.set_exception(NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = RedisConnectionError(f"redis connection lost: {exc or 'closed'}")
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, packed: bytes) -> asyncio.Future:
        if self.closed:
            raise RedisConnectionError("redis connection is closed")
        future = self._loop.create_future()
        self._waiters.append(future)
        self._outgoing.append(packed)
        if len(self._outgoing) >= self._flush_at:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def send_many(self, packed: list[bytes]) -> list[asyncio.Future]:
        """Commands written at once (with whatever this tick queued before them)."""
        if self.closed:
            raise RedisConnectionError("redis connection is closed")
        futures = [self._loop.create_future() for _ in packed]
        self._waiters.extend(futures)
        self._outgoing.extend(packed)
        self._flush()
        return futures

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outgoing and not self.closed:
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            self.writes += 1
            self.transport.write(data)  # type: ignore[union-attr]  # set before the first send


class AutoPipeline(ScriptRunner):
    def __init__(self, url: str, *, connect_timeout: float = 5.0, flush_at: int = FLUSH_AT) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.password = unquote(parsed.password) if parsed.password else None
        self.username = unquote(parsed.username) if parsed.username else None
        self.db = int(parsed.path.lstrip("/") or 0)
        self.connect_timeout = connect_timeout
        self.flush_at = flush_at
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def writes(self) -> int:
        return self._protocol.writes if self._protocol else 0

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is None or self._protocol.closed:
                loop = asyncio.get_running_loop()
                connecting = loop.create_connection(lambda: _Protocol(loop, self.flush_at), self.host, self.port)
                _, fresh = await asyncio.wait_for(connecting, self.connect_timeout)
                if self.password:
                    auth: tuple = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                    await fresh.send(hiredis.pack_command(auth))
                if self.db:
                    await fresh.send(hiredis.pack_command(("SELECT", self.db)))  # type: ignore[arg-type]
                self._protocol = fresh
            return fresh if self._protocol is None else self._protocol

    async def execute(self, *args):
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connection()
        return await protocol.send(hiredis.pack_command(args))

    async def run(self, script: LuaScript, keys: list, args: list):
        """EVALSHA, loading the script first if Redis does not know it (restart, SCRIPT FLUSH)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connection()
        try:  # execute() inlined: one coroutine frame less on the hot path
            return await protocol.send(hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args)))
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.source)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def run_many(self, script: LuaScript, calls: list[tuple[list, list]]) -> list:
        """One EVALSHA per (keys, args), all in one write: a write-behind batch of hundreds of
        buckets costs one syscall and a future per call, where separate calls would cost a task
        each and a write per FLUSH_AT commands. Calls Redis did not know the script for are
        retried once it is loaded."""
        protocol = await self._connection()  # off the hot path: no need to inline its fast case
        futures = protocol.send_many([hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
                                      for keys, args in calls])
        replies = await asyncio.gather(*futures, return_exceptions=True)
        unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            await self.execute("SCRIPT", "LOAD", script.source)
            for i, reply in zip(unknown, await super().run_many(script, [calls[i] for i in unknown]), strict=True):
                replies[i] = reply
        return first_error_raised(replies)

    async def aclose(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class ClusterAutoPipeline(ScriptRunner):
    """Auto-pipelining on Redis Cluster: one AutoPipeline per master, commands routed by the hash
    slot of their first key. A MOVED or ASK reply (resharding, failover) refreshes the slot map
    and the command is retried once."""

    def __init__(self, url: str) -> None:
        self._seed_url = url
        self._scheme_auth = url.split("//", 1)[0] + "//" + (url.split("//", 1)[1].rsplit("@", 1)[0] + "@"
                                                            if "@" in url else "")
        self._slots: list[tuple[int, int, AutoPipeline]] = []
        self._nodes: dict[tuple[str, int], AutoPipeline] = {}
        self._refreshing: asyncio.Lock | None = None

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            sources = list(self._nodes.values()) or [AutoPipeline(self._seed_url)]
            for source in sources:
                try:
                    layout = await source.execute("CLUSTER", "SLOTS")
                    break
                except (RedisConnectionError, OSError):
                    continue
            else:
                raise RedisConnectionError("no cluster node answered CLUSTER SLOTS")
            slots = []
            for start, end, master, *_ in layout:
                address = (master[0].decode(), int(master[1]))
                if address not in self._nodes:
                    self._nodes[address] = AutoPipeline(f"{self._scheme_auth}{address[0]}:{address[1]}")
                slots.append((int(start), int(end), self._nodes[address]))
            self._slots = sorted(slots, key=lambda s: s[0])

    def _node_for(self, key: str) -> AutoPipeline | None:
        slot = key_slot(key.encode())
        for start, end, node in self._slots:
            if start <= slot <= end:
                return node
        return None

    async def run(self, script: LuaScript, keys: list, args: list):
        node = self._node_for(keys[0])
        if node is None:
            await self._refresh()
            node = self._node_for(keys[0])
        if node is None:
            raise RedisConnectionError(f"no cluster node serves the slot of {keys[0]!r}")
        try:
            return await node.run(script, keys, args)
        except ResponseError as exc:
            if not str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
                raise
        except RedisConnectionError:
            pass  # the master may have failed over: look again
        await self._refresh()
        node = self._node_for(keys[0])
        if node is None:
            raise RedisConnectionError(f"no cluster node serves the slot of {keys[0]!r}")
        return await node.run(script, keys, args)

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()

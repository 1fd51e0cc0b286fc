"""A lean Redis client for the hot path: one connection, automatic pipelining.

Every command issued during one event-loop tick is written with a single `write()` (one
syscall, one packet train); replies are matched to callers in order. Under load, hundreds of
concurrent validations share one round trip, where a pooled client would need one connection
and one round trip each (and runs out of connections). Encoding and parsing are hiredis (C).

On a lost connection every in-flight call fails with ConnectionError and the next call
reconnects; a call that could not even be sent (no connection) fails with NotSent, which a
caller may retry elsewhere. EVALSHA falls back to SCRIPT LOAD on NOSCRIPT (a restarted or
flushed Redis). ClusterAutoPipeline routes by hash slot and follows failovers (see its doc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from urllib.parse import unquote, urlparse

import hiredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from .scripts import LuaScript, ScriptRunner, first_error_raised

log = logging.getLogger("quota_gateway.redis")

# Commands are written at the end of the event-loop tick, or as soon as this many are queued.
# Writing a whole tick at once makes the server and Redis take turns in lock-step (a convoy: the
# server idles while Redis runs the batch, then Redis idles while the server answers it); small
# writes keep both busy. Measured with benchmarks/load.py at 32 connections: one write per tick
# 0.68 of the bare endpoint's throughput, every 16 commands 0.81, every 4 commands 0.88-0.91.
FLUSH_AT = 4


class NotSent(RedisConnectionError):
    """The command never left: no connection could be made (refused, timed out, or the address
    is resting after a recent failure). Retrying it elsewhere cannot run it twice."""


class ClusterUnavailable(RedisConnectionError):
    """No master serves the key's slot right now: a failover is under way, or no node answers."""


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
            raise NotSent("redis connection is closed")
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
            raise NotSent("redis connection is closed")
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
    def __init__(self, url: str, *, connect_timeout: float = 5.0, flush_at: int = FLUSH_AT,
                 rest_after_failure: float = 0.0) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.password = unquote(parsed.password) if parsed.password else None
        self.username = unquote(parsed.username) if parsed.username else None
        self.db = int(parsed.path.lstrip("/") or 0)
        self.connect_timeout = connect_timeout
        self.flush_at = flush_at
        # After a failed connect, calls fail at once (NotSent) for this long instead of dialling
        # a dead address again each (ClusterAutoPipeline: quick 503s while a master fails over).
        self.rest_after_failure = rest_after_failure
        self._resting_until = 0.0
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
                if loop.time() < self._resting_until:
                    raise NotSent(f"redis at {self.host}:{self.port} failed moments ago")
                connecting = loop.create_connection(lambda: _Protocol(loop, self.flush_at), self.host, self.port)
                try:
                    _, fresh = await asyncio.wait_for(connecting, self.connect_timeout)
                except (OSError, TimeoutError) as exc:
                    self._resting_until = loop.time() + self.rest_after_failure
                    raise NotSent(f"cannot connect to redis at {self.host}:{self.port}: {exc or 'timed out'}") from exc
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

    async def run_asking(self, script: LuaScript, keys: list, args: list):
        """EVALSHA right after ASKING on the same connection: a slot migrating to this node."""
        for _ in range(2):
            protocol = await self._connection()
            asking, reply = protocol.send_many([hiredis.pack_command(("ASKING",)), hiredis.pack_command(
                ("EVALSHA", script.sha, len(keys), *keys, *args))])
            await asking
            try:
                return await reply
            except NoScriptError:
                await self.execute("SCRIPT", "LOAD", script.source)
        raise NoScriptError(f"NOSCRIPT {script.name} not loaded on {self.host}:{self.port}")

    async def aclose(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


# Replies after which the slot map is read again: the command did not run where it was sent.
_REDIRECTED = ("MOVED", "ASK ", "CLUSTERDOWN", "TRYAGAIN")
SLOTS = 16384
# While calls keep failing (a failover), the slot map is asked for at most this often.
REFRESH_MIN_INTERVAL = 0.1
# A node that refused a connection is not dialled again for this long.
NODE_REST = 0.2
# How long one node may take to connect or to answer CLUSTER SLOTS before the next is asked.
NODE_TIMEOUT = 1.0
# `replicated`: how long WAIT may wait for a replica's acknowledgement (milliseconds).
REPLICA_ACK_TIMEOUT_MS = 200


def node_url(seed_url: str, host: str, port: int) -> str:
    """The URL of another node of the seed's cluster: same scheme and credentials."""
    scheme, rest = seed_url.split("//", 1)
    auth = rest.rsplit("@", 1)[0] + "@" if "@" in rest else ""
    return f"{scheme}//{auth}{host}:{port}"


def cluster_node_addresses(layout: list) -> list[tuple[str, int]]:
    """Every node (masters, then replicas) of a CLUSTER SLOTS reply."""
    masters = [(entry[2][0].decode(), int(entry[2][1])) for entry in layout]
    replicas = [(node[0].decode(), int(node[1])) for entry in layout for node in entry[3:]]
    return list(dict.fromkeys(masters + replicas))


class ClusterAutoPipeline(ScriptRunner):
    """Auto-pipelining on Redis Cluster: one AutoPipeline per master, commands routed by the hash
    slot of their first key through a 16384-entry table (the normal case costs one index).

    Failover: a call whose node refuses the connection, drops it, or answers MOVED, ASK,
    CLUSTERDOWN or TRYAGAIN makes the runner read the slot map again (CLUSTER SLOTS from any node
    that answers: masters, replicas, the seed; at most every REFRESH_MIN_INTERVAL, one read for all
    callers). A call that surely did not run (no connection; a redirect) is retried once on the
    slot's node in the new map; ASK is followed with ASKING. A call whose connection dropped
    after it was sent is not retried (it may have run). Whatever cannot be served raises
    ClusterUnavailable (a RedisConnectionError): the routes answer 503 with Retry-After until a
    replica is promoted and the map shows it. A refused address rests NODE_REST seconds, so the
    calls for a dead master's slots fail at once instead of each dialling it."""

    spans_buckets = False

    def __init__(self, url: str) -> None:
        self._seed_url = url
        self._slot_nodes: list[AutoPipeline | None] = [None] * SLOTS
        self._nodes: dict[tuple[str, int], AutoPipeline] = {}  # masters and replicas seen in the map
        self._with_replicas: set[AutoPipeline] = set()  # masters the map lists replicas for
        self._seed: AutoPipeline | None = None
        self._refreshing: asyncio.Task | None = None
        self._refreshed_at = float("-inf")
        self.refreshes = 0  # slot-map reads (observable in tests)

    def _node_at(self, host: str, port: int) -> AutoPipeline:
        node = self._nodes.get((host, port))
        if node is None:
            node = self._nodes[(host, port)] = AutoPipeline(node_url(self._seed_url, host, port),
                                                            connect_timeout=NODE_TIMEOUT, rest_after_failure=NODE_REST)
        return node

    async def prepare(self) -> None:
        """The slot map read at start: every node is known before the seed (QG_REDIS_URL's node)
        can fail, so a process that has not called Redis yet still finds the cluster after it."""
        await self._refresh_quietly()

    async def _refresh(self) -> None:
        """Read the slot map again, unless that was done moments ago; concurrent callers share one read."""
        task = self._refreshing
        if task is None:
            if asyncio.get_running_loop().time() - self._refreshed_at < REFRESH_MIN_INTERVAL:
                return
            task = self._refreshing = asyncio.ensure_future(self._read_slot_map())
            task.add_done_callback(self._refreshed)
        await asyncio.shield(task)

    def _refreshed(self, task: asyncio.Task) -> None:
        self._refreshing = None
        self._refreshed_at = asyncio.get_running_loop().time()
        if not task.cancelled() and task.exception() is not None:
            log.warning("redis cluster slot map unavailable: %s", task.exception())

    async def _read_slot_map(self) -> None:
        self.refreshes += 1
        if self._seed is None:
            self._seed = AutoPipeline(self._seed_url, connect_timeout=NODE_TIMEOUT, rest_after_failure=NODE_REST)
        # connected nodes first: a dead address costs a refusal (or a timeout) before the next
        sources = sorted([*self._nodes.values(), self._seed], key=lambda n: n._protocol is None or n._protocol.closed)
        for source in sources:
            try:
                layout = await asyncio.wait_for(source.execute("CLUSTER", "SLOTS"), NODE_TIMEOUT)
                break
            except (RedisConnectionError, OSError, TimeoutError, ResponseError):
                continue
        else:
            raise ClusterUnavailable("no redis cluster node answered CLUSTER SLOTS")
        table: list[AutoPipeline | None] = [None] * SLOTS
        with_replicas = set()
        for start, end, master, *replicas in layout:
            for replica in replicas:  # known, so they can be asked for the map once promoted
                self._node_at(replica[0].decode(), int(replica[1]))
            node = self._node_at(master[0].decode(), int(master[1]))
            table[int(start):int(end) + 1] = [node] * (int(end) - int(start) + 1)
            if replicas:
                with_replicas.add(node)
        self._slot_nodes = table
        self._with_replicas = with_replicas

    async def replicated(self, keys: list) -> bool:
        """WAIT for one replica on each master holding `keys` that has one. It blocks that
        master's connection meanwhile: only for a runner that validations do not share (the
        write-behind's). A master whose replica does not answer has the map read again (a dead
        replica leaves it once the cluster marks it failed)."""
        nodes = {self._slot_nodes[key_slot(k.encode() if isinstance(k, str) else k)] for k in keys}
        waiting = [node for node in nodes if node in self._with_replicas]
        acks = await asyncio.gather(*(node.execute("WAIT", 1, REPLICA_ACK_TIMEOUT_MS) for node in waiting),
                                    return_exceptions=True)
        if all(isinstance(ack, int) and ack >= 1 for ack in acks) and None not in nodes:
            return True
        await self._refresh_quietly()
        return False

    async def run(self, script: LuaScript, keys: list, args: list):
        slot = key_slot(keys[0].encode() if isinstance(keys[0], str) else keys[0])
        node = self._slot_nodes[slot]
        if node is None:
            failure: Exception = ClusterUnavailable(f"no node known for slot {slot}")
        else:
            try:
                return await node.run(script, keys, args)
            except ResponseError as exc:
                if not str(exc).startswith(_REDIRECTED):
                    raise
                failure = exc
            except NotSent as exc:
                failure = exc
            except RedisConnectionError as exc:  # dropped after sending: it may have run, so no retry
                await self._refresh_quietly()
                raise ClusterUnavailable(f"redis connection lost during the call: {exc}") from exc
        return await self._retry(script, keys, args, slot, failure)

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(RedisConnectionError):
            await self._refresh()

    async def _retry(self, script: LuaScript, keys: list, args: list, slot: int, failure: Exception):
        """A call that did not run: once more, after reading the map (or where ASK points)."""
        if str(failure).startswith("ASK "):
            host, _, port = str(failure).split()[2].rpartition(":")
            try:
                return await self._node_at(host, int(port)).run_asking(script, keys, args)
            except (RedisConnectionError, ResponseError) as exc:
                raise ClusterUnavailable(f"slot {slot} is migrating and its target failed: {exc}") from exc
        await self._refresh()
        node = self._slot_nodes[slot]
        if node is None:
            raise ClusterUnavailable(f"no node serves slot {slot}") from failure
        try:
            return await node.run(script, keys, args)
        except ResponseError as exc:
            if not str(exc).startswith(_REDIRECTED):
                raise
            raise ClusterUnavailable(f"slot {slot} is not served right now: {exc}") from exc
        except RedisConnectionError as exc:
            raise ClusterUnavailable(f"the master of slot {slot} is unreachable: {exc}") from exc

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in [*self._nodes.values(), *([self._seed] if self._seed else [])]:
            await node.aclose()

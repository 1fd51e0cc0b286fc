"""Redis connections, built from settings in one place: the plain client (pub/sub, health, key
scans), the script runner every domain's Lua calls go through (QG_REDIS_TRANSPORT), and on a
cluster the pub/sub connection that follows failovers (ClusterPubSub)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .autopipeline import NODE_TIMEOUT, AutoPipeline, ClusterAutoPipeline, cluster_node_addresses, node_url
from .config import Settings
from .scripts import RedisPyRunner, ScriptRunner

TRANSPORTS = ("autopipeline", "redis-py")


def create_redis(url: str, *, cluster: bool = False, **kwargs: Any) -> aioredis.Redis | RedisCluster:
    """A redis.asyncio client: plain, or cluster-aware when `cluster` is set."""
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return aioredis.from_url(url, **kwargs)


class ClusterPubSub:
    """Pub/sub on a Redis Cluster through a plain connection to one node (a PUBLISH on any node
    reaches the subscribers of every node), for the token cache. The node in use changes when it
    fails, so revocations keep flowing when the seed itself is the master that died: `pubsub()`
    is asked again only after a subscription was lost, and then moves to the next node known from
    the slot map (masters and replicas, read again meanwhile); `publish` tries the nodes in turn."""

    def __init__(self, url: str) -> None:
        self._seed = url
        self._urls = [url]
        self._clients: dict[str, aioredis.Redis] = {}
        self._turn = 0
        self._asked = False
        self._discovering: asyncio.Task | None = None

    def _client(self, url: str) -> aioredis.Redis:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = aioredis.from_url(url, socket_connect_timeout=NODE_TIMEOUT)
        return client

    async def discover(self) -> None:
        """Learn the cluster's nodes from the first known node that answers CLUSTER SLOTS."""
        for url in list(self._urls):
            try:
                layout = await self._client(url).execute_command("CLUSTER", "SLOTS")
            except (RedisError, OSError):
                continue
            current = self._urls[self._turn % len(self._urls)]
            found = [node_url(self._seed, host, port) for host, port in cluster_node_addresses(layout)]
            self._urls = found or [self._seed]
            self._turn = self._urls.index(current) if current in self._urls else 0
            return

    def pubsub(self) -> PubSub:
        if self._asked:  # asked again: the last subscription was lost, so try the next node
            self._turn = (self._turn + 1) % len(self._urls)
            if self._discovering is None or self._discovering.done():
                self._discovering = asyncio.ensure_future(self.discover())
        self._asked = True
        return self._client(self._urls[self._turn % len(self._urls)]).pubsub()

    async def publish(self, channel: str, message: str) -> int:
        failure: Exception | None = None
        for i in range(len(self._urls)):
            try:
                return await self._client(self._urls[(self._turn + i) % len(self._urls)]).publish(channel, message)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failure = exc
        raise RedisConnectionError(f"no redis cluster node took the publication: {failure}")

    async def aclose(self) -> None:
        if self._discovering is not None:
            self._discovering.cancel()
        for client in self._clients.values():
            await client.aclose()


def script_runner(settings: Settings) -> ScriptRunner:
    """The runner of QG_REDIS_TRANSPORT: auto-pipelining (one connection to a single Redis, or
    one per master of a cluster), or redis-py's pool (kept to measure against)."""
    url, transport = settings.redis_url, settings.redis_transport
    if transport not in TRANSPORTS:
        raise ValueError(f"QG_REDIS_TRANSPORT must be autopipeline or redis-py, not {transport!r}")
    if url is None:
        raise ValueError("QG_REDIS_URL is not set")
    if transport == "redis-py":
        return RedisPyRunner(url, cluster=settings.redis_cluster)
    if settings.redis_cluster:
        return ClusterAutoPipeline(url)
    return AutoPipeline(url)

"""Lua scripts (files in quota_gateway/lua/, read once, called by SHA) and the runner interface
every domain calls them through. Which runner serves is chosen once, in redisconn.script_runner."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError


@cache
def lua_source(name: str) -> str:
    return resources.files("quota_gateway.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


class LuaScript:
    """One script file: EVALSHA first, SCRIPT LOAD + retry on NOSCRIPT (after a Redis restart).
    `functions` makes other script files local functions of this one, `name(KEYS, ARGV)` returning
    what that script returns: one script runs another's logic without a copy of it."""

    def __init__(self, name: str, functions: dict[str, str] | None = None) -> None:
        self.name = name
        self.source = "".join(f"local function {function}(KEYS, ARGV)\n{lua_source(file)}\nend\n"
                              for function, file in (functions or {}).items()) + lua_source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: list, args: list) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)  # on a cluster: loaded on every primary
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class ScriptRunner:
    """How the domains call Redis: `run` one script; `run_many` one script for many (keys, args),
    replies in the same order (a transport may send them together; by default they are concurrent
    calls). The first error, if any, is raised once every call has answered."""

    # Whether one script call may touch keys of different hash tags (buckets): a single Redis lets
    # it; a cluster refuses keys of two slots in one call.
    spans_buckets = True

    async def run(self, script: LuaScript, keys: list, args: list) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def prepare(self) -> None:
        """Learn what the runner needs before the first call (a cluster's nodes), if it can."""

    async def replicated(self, keys: list) -> bool:
        """Whether this runner's writes to the nodes holding `keys` have reached a replica, so a
        failover keeps them (Redis `WAIT`). True where there is no replica to wait for."""
        return True

    async def run_many(self, script: LuaScript, calls: list[tuple[list, list]]) -> list:
        return first_error_raised(await asyncio.gather(*(self.run(script, keys, args) for keys, args in calls),
                                                       return_exceptions=True))


def reply_text(value: Any) -> str:
    """A reply's string (Redis answers bytes; a Lua number arrives as an int)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_pairs(flat: list) -> Iterator[tuple[Any, Any]]:
    """A flat reply (name, value, name, value, ...: HGETALL, a stream entry's fields, ZRANGE
    WITHSCORES) as (name, value) pairs."""
    return zip(flat[0::2], flat[1::2], strict=True)


def first_error_raised(replies: list) -> list:
    """The replies, unless one of them is an error: then the first error is raised."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


class RedisPyRunner(ScriptRunner):
    """The script-runner interface over redis.asyncio: one EVALSHA per call on a pooled
    connection. Selected with QG_REDIS_TRANSPORT=redis-py; benchmarks/load.py measures it
    beside the auto-pipelining transport. The pool blocks when all its connections are busy
    (redis-py's default pool raises MaxConnectionsError instead)."""

    def __init__(self, url: str, *, cluster: bool = False, max_connections: int = 128) -> None:
        self.client: aioredis.Redis | RedisCluster
        self.spans_buckets = not cluster
        if cluster:
            self.client = RedisCluster.from_url(url, max_connections=max_connections)
        else:
            pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=5)
            self.client = aioredis.Redis(connection_pool=pool)

    async def run(self, script: LuaScript, keys: list, args: list) -> Any:
        return await script(self.client, keys, args)

    async def aclose(self) -> None:
        await self.client.aclose()

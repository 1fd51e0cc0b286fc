"""A negative cache in Redis: a lookup that found nothing is remembered for NEGATIVE_TTL seconds,
so guessing the same key again never reaches PostgreSQL twice within that window (on any worker
or gateway). Every entry names the scope it was answered in (the organization asking), so one
organization's "no such key" is never read as another's; creating the thing drops the entry."""

from __future__ import annotations

from typing import Any

from ..formats import rediskeys
from ..formats.digests import sha256

NEGATIVE_TTL = 30


def entry(kind: str, scope: str, value: str | bytes) -> str:
    return rediskeys.negative(kind, scope) + sha256(value).hex()[:32]


async def is_missing(redis: Any, key: str) -> bool:
    return bool(await redis.exists(key))


async def remember_missing(redis: Any, key: str) -> None:
    await redis.set(key, b"1", ex=NEGATIVE_TTL)


async def forget(redis: Any, key: str) -> None:
    await redis.delete(key)

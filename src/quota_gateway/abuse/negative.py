"""A negative cache in Redis: a lookup that found nothing is remembered for NEGATIVE_TTL seconds,
so guessing the same value again never reaches PostgreSQL twice within that window (on any worker
or gateway). Every entry names the scope it was answered in (the organization asking), so one
organization's "no such key" is never read as another's.

Creating the thing drops the entry by overwriting it with a "known" marker for the same window:
a lookup that read PostgreSQL before the creation committed cannot then cache "missing" after it
(remembering never overwrites a marker), so no stale "unknown" outlives a creation. The marker
may be written before the creating transaction commits; if that transaction rolls back, the value
is merely not cached for one window."""

from __future__ import annotations

from typing import Any

from ..formats import rediskeys
from ..formats.digests import sha256

NEGATIVE_TTL = 30
_MISSING, _KNOWN = b"1", b"0"


def entry(kind: str, scope: str, value: str | bytes) -> str:
    return rediskeys.negative(kind, scope) + sha256(value).hex()[:32]


def tenant(name: str) -> str:
    """No tenant has this id or slug (asked by /licensing/{org}, /portal/{slug}, /hooks/.../{slug})."""
    return entry("org", "", name)


def sign_in(tenant_id: str, audience: str, email: str) -> str:
    """Nobody signs in to this tenant's admin UI or portal (`audience`) with this e-mail address."""
    return entry("signin", f"{tenant_id}:{audience}", email.strip().lower())


def payment_receiver(tenant_id: str, provider: str) -> str:
    """This tenant has not configured `provider` (asked by /hooks/<provider>/{slug})."""
    return entry("pay", tenant_id, provider)


async def is_missing(redis: Any, key: str) -> bool:
    return await redis.get(key) in (_MISSING, "1")


async def remember_missing(redis: Any, key: str) -> None:
    await redis.set(key, _MISSING, ex=NEGATIVE_TTL, nx=True)


async def forget(redis: Any, key: str) -> None:
    await redis.set(key, _KNOWN, ex=NEGATIVE_TTL)


def forget_now(redis_url: str | None, keys: list[str], *, cluster: bool = False) -> bool:
    """`forget` from a process without the gateway's Redis client (the CLI). True when done or
    nothing to do (no Redis known: no gateway runs against it); False when Redis was unreachable
    (entries then end within NEGATIVE_TTL)."""
    if not redis_url or not keys:
        return True
    import redis

    client: Any = redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    try:
        for key in keys:
            client.set(key, _KNOWN, ex=NEGATIVE_TTL)
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()

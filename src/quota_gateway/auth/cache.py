"""In-process token cache with cross-process invalidation over Redis pub/sub.

The hot path resolves a token with one dict lookup and one constant-time compare; a wrong secret
for a public id verified within the TTL is refused the same way (one public id has one secret).
A miss is probed once: the probe hands the parsed token to `resolve`, which reads PostgreSQL once
for all the requests missing that token at the same time. A revoke
publishes the token's public id; every process evicts it on receipt (well under 2 s). If the
subscription drops, the whole cache is cleared on reconnect so nothing stale survives the gap.
An entry past its TTL is re-checked against PostgreSQL; while PostgreSQL is unreachable it keeps
being served (revocations still arrive through the channel), so an outage never stops validation.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import asyncpg

from ..background import cancel_and_wait
from ..clock import Clock
from ..fastpath import parse_authorization
from ..formats.rediskeys import TOKEN_INVALIDATIONS
from ..principal import Principal, TokenMiss
from .service import load_principal

log = logging.getLogger("quota_gateway.auth")

_NEGATIVE_TTL = 1.0  # unknown tokens are remembered briefly so random ones cannot hammer Postgres
_RECHECK_INTERVAL = 5.0  # PostgreSQL down: a verified token is re-checked at most this often
_RECHECK_TIMEOUT = 2.0  # ... and a re-check waits at most this long


def _live(principal: Principal, now: float) -> Principal | None:
    return None if principal.expires_at is not None and principal.expires_at <= now else principal


class TokenCache:
    def __init__(self, pool: asyncpg.Pool, redis: Any, clock: Clock, ttl: float = 60.0, max_entries: int = 100_000) -> None:
        self._pool = pool
        self._redis = redis
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._valid: dict[str, tuple[str, Principal, float]] = {}  # public id -> (secret, principal, until)
        self._invalid: dict[tuple[str, str], float] = {}  # (public id, secret) -> until
        self._evictions = 0  # bumped by every eviction: a resolve that saw one since its probe caches nothing
        self._loading: dict[tuple[str, str, int], asyncio.Future] = {}  # (public id, secret, evictions) -> read
        self._listener: asyncio.Task | None = None
        self.ready = asyncio.Event()

    def probe(self, header: str | None) -> Principal | TokenMiss | None:
        """The one synchronous cache probe: the principal, None when the token is malformed or
        known bad, or a `TokenMiss` (the token parsed, for `resolve`) when only PostgreSQL can say."""
        parsed = parse_authorization(header)
        if parsed is None:
            return None
        now = self._clock.now()
        entry = self._valid.get(parsed[0])
        if entry is not None and entry[2] >= now:
            if not hmac.compare_digest(entry[0], parsed[1]):
                return None  # a public id has one secret: its fresh entry answers for any other
            principal = entry[1]
            if principal.expires_at is not None and principal.expires_at <= now:
                return None
            return principal
        until = self._invalid.get(parsed)
        if until is not None and until >= now:
            return None
        verified = entry[1] if entry is not None and hmac.compare_digest(entry[0], parsed[1]) else None
        return TokenMiss(parsed[0], parsed[1], verified, self._evictions)

    async def resolve(self, miss: TokenMiss) -> Principal | None:
        """What PostgreSQL says of a token the probe missed: one read however many requests miss
        the same token at once (they share it unless a revocation arrived between their probes)."""
        key = (miss.public, miss.secret, miss.evictions)
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._resolve(miss))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        # shielded: a caller that goes away (its client disconnected) does not cancel the others' read
        return await asyncio.shield(loading)

    def _loaded(self, key: tuple[str, str, int], done: asyncio.Future) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]
        if not done.cancelled():
            done.exception()  # retrieved here: a failure every caller gave up on is not logged as lost

    async def _resolve(self, miss: TokenMiss) -> Principal | None:
        public, secret, verified, evictions = miss.public, miss.secret, miss.verified, miss.evictions
        try:
            if verified is None:
                principal = await self._load(public, secret)
            else:  # a re-check of a token verified before must not hang on an unreachable database
                principal = await asyncio.wait_for(self._load(public, secret), _RECHECK_TIMEOUT)
        except Exception as exc:
            if verified is None or self._evictions != evictions:  # never verified, or evicted since the probe
                raise
            # PostgreSQL is unreachable: keep serving what it verified (a revocation still evicts it
            # through the channel), and try again a little later rather than on every request.
            log.warning("cannot re-verify access token %s (%s: %s); serving it as verified before", public,
                        type(exc).__name__, exc)
            now = self._clock.now()
            self._valid[public] = (secret, verified, now + min(self._ttl, _RECHECK_INTERVAL))
            return _live(verified, now)
        now = self._clock.now()
        if principal is None:
            if len(self._invalid) >= self._max_entries:
                self._invalid.clear()
            self._invalid[(public, secret)] = now + _NEGATIVE_TTL
            return None
        if self._evictions != evictions:  # a revocation may have crossed the read: answer, cache nothing
            self._valid.pop(public, None)
            return _live(principal, now)
        if len(self._valid) >= self._max_entries:
            self._valid.clear()
        self._valid[public] = (secret, principal, now + self._ttl)
        return _live(principal, now)

    async def _load(self, public: str, secret: str) -> Principal | None:
        async with self._pool.acquire() as conn:
            return await load_principal(conn, public, secret)

    def evict(self, public_id: str) -> None:
        self._evictions += 1
        self._valid.pop(public_id, None)

    def clear(self) -> None:
        self._evictions += 1
        self._valid.clear()
        self._invalid.clear()

    async def publish_invalidation(self, public_id: str) -> None:
        self.evict(public_id)
        await self._redis.publish(TOKEN_INVALIDATIONS, public_id)

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="token-invalidation")

    async def stop(self) -> None:
        await cancel_and_wait(self._listener)

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(TOKEN_INVALIDATIONS)
                self.clear()  # anything revoked while we were not listening must not survive
                self.ready.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self.evict(data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: retry, and clear on resubscribe
                self.ready.clear()
                log.warning("token invalidation channel lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)

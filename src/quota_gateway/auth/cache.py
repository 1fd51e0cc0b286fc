"""In-process token cache with cross-process invalidation over Redis pub/sub.

The hot path resolves a token with one dict lookup and one constant-time compare; a wrong secret
for a public id verified within the TTL is refused the same way (one public id has one secret). A revoke
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
from ..principal import Principal
from .service import load_principal

log = logging.getLogger("quota_gateway.auth")

_NEGATIVE_TTL = 1.0  # unknown tokens are remembered briefly so random ones cannot hammer Postgres
_RECHECK_INTERVAL = 5.0  # PostgreSQL down: a verified token is re-checked at most this often
_RECHECK_TIMEOUT = 2.0  # ... and a re-check waits at most this long


class TokenCache:
    def __init__(self, pool: asyncpg.Pool, redis: Any, clock: Clock, ttl: float = 60.0, max_entries: int = 100_000) -> None:
        self._pool = pool
        self._redis = redis
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._valid: dict[str, tuple[str, Principal, float]] = {}  # public id -> (secret, principal, until)
        self._invalid: dict[tuple[str, str], float] = {}  # (public id, secret) -> until
        self._evictions = 0  # bumped by every eviction: a resolve that saw one meanwhile caches nothing
        self._listener: asyncio.Task | None = None
        self.ready = asyncio.Event()

    def lookup(self, header: str | None) -> tuple[bool, Principal | None]:
        """Synchronous cache probe: (hit, principal). A hit with None means known-bad."""
        parsed = parse_authorization(header)
        if parsed is None:
            return True, None
        now = self._clock.now()
        entry = self._valid.get(parsed[0])
        if entry is not None and entry[2] >= now:
            if not hmac.compare_digest(entry[0], parsed[1]):
                return True, None  # a public id has one secret: its fresh entry answers for any other
            principal = entry[1]
            if principal.expires_at is not None and principal.expires_at <= now:
                return True, None
            return True, principal
        until = self._invalid.get(parsed)
        if until is not None and until >= now:
            return True, None
        return False, None

    def verified_before(self, header: str | None) -> bool:
        """Whether this token's public id was verified in this process (its entry may be past the TTL)."""
        parsed = parse_authorization(header)
        return parsed is not None and parsed[0] in self._valid

    async def resolve(self, header: str | None) -> Principal | None:
        hit, principal = self.lookup(header)
        if hit:
            return principal
        public, secret = parse_authorization(header)  # type: ignore[misc]  # lookup() parsed it already
        stale = self._valid.get(public)
        if stale is not None and not hmac.compare_digest(stale[0], secret):
            stale = None
        evictions = self._evictions
        try:
            if stale is None:
                principal = await self._load(public, secret)
            else:  # a re-check of a token verified before must not hang on an unreachable database
                principal = await asyncio.wait_for(self._load(public, secret), _RECHECK_TIMEOUT)
        except Exception as exc:
            if stale is None or self._evictions != evictions:  # never verified, or evicted while we asked
                raise
            # PostgreSQL is unreachable: keep serving what it verified (a revocation still evicts it
            # through the channel), and try again a little later rather than on every request.
            log.warning("cannot re-verify access token %s (%s: %s); serving it as verified before", public,
                        type(exc).__name__, exc)
            self._valid[public] = (secret, stale[1], self._clock.now() + min(self._ttl, _RECHECK_INTERVAL))
            return self.lookup(header)[1]
        now = self._clock.now()
        if principal is None:
            if len(self._invalid) >= self._max_entries:
                self._invalid.clear()
            self._invalid[(public, secret)] = now + _NEGATIVE_TTL
            return None
        if self._evictions != evictions:  # a revocation may have crossed the read: answer, cache nothing
            self._valid.pop(public, None)
            return None if principal.expires_at is not None and principal.expires_at <= now else principal
        if len(self._valid) >= self._max_entries:
            self._valid.clear()
        self._valid[public] = (secret, principal, now + self._ttl)
        return self.lookup(header)[1]

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

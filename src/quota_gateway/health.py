"""Liveness and readiness probes (no token needed, and not under the per-address limit: see
abuse.clientlimit).

/healthz does no I/O. /readyz answers from a check of Redis (PING) and PostgreSQL (SELECT 1) made
at most once per FRESH_SECONDS per process: probes arriving meanwhile, however many, share the
last answer (or wait for the check under way), so the route cannot be turned into load on the
stores."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .answers import STRING, answer, one_of
from .jsonio import JSONResponse
from .routing import Call, endpoint

if TYPE_CHECKING:
    from .services import Services

FRESH_SECONDS = 1.0


class Readiness:
    """The last readiness check's answer, renewed when older than FRESH_SECONDS."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._lock = asyncio.Lock()
        self._checked_at = float("-inf")
        self._answer: tuple[dict, int] = ({}, 503)

    async def answer(self) -> tuple[dict, int]:
        clock = self._services.clock
        if clock.now() - self._checked_at < FRESH_SECONDS:
            return self._answer
        async with self._lock:  # one check at a time; those who waited read its answer
            if clock.now() - self._checked_at >= FRESH_SECONDS:
                self._answer = await self._check()
                self._checked_at = clock.now()
            return self._answer

    async def _check(self) -> tuple[dict, int]:
        services = self._services
        checks = {}
        try:
            await asyncio.wait_for(services.redis.ping(), 2)
            checks["redis"] = "ok"
        except Exception as exc:  # any failure is "not ready", reported by kind only
            services.metrics.redis_errors.inc(("ping",))
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            async with services.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = "ok"
        except Exception as exc:
            services.metrics.db_errors.inc(("ping",))
            checks["postgres"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503


async def healthz(call: Call) -> dict:
    """The process is up."""
    return {"status": "ok"}


async def readyz(call: Call) -> JSONResponse:
    """Redis and PostgreSQL both answer (checked at most once a second)."""
    body, status = await call.services.readiness.answer()
    return JSONResponse(body, status_code=status)


async def start(services: Services) -> None:
    services.readiness = Readiness(services)


_READINESS = answer(status=one_of("ready", "not_ready"),
                    checks=answer(redis=STRING, postgres=STRING))  # "ok" or "error: <kind>"
routes = [
    endpoint("GET", "/healthz", healthz, scope=None, tag="health", returns=answer(status=one_of("ok"))),
    endpoint("GET", "/readyz", readyz, scope=None, tag="health", responses={503: "a dependency is unreachable"},
             returns=_READINESS, bodies={503: _READINESS}),
]

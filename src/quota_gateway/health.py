"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

import asyncio

from .answers import STRING, answer, one_of
from .jsonio import JSONResponse
from .routing import Call, endpoint


async def healthz(call: Call) -> dict:
    """The process is up."""
    return {"status": "ok"}


async def readyz(call: Call) -> JSONResponse:
    """Redis and PostgreSQL both answer."""
    services = call.services
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
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)


_READINESS = answer(status=one_of("ready", "not_ready"),
                    checks=answer(redis=STRING, postgres=STRING))  # "ok" or "error: <kind>"
routes = [
    endpoint("GET", "/healthz", healthz, scope=None, tag="health", returns=answer(status=one_of("ok"))),
    endpoint("GET", "/readyz", readyz, scope=None, tag="health", responses={503: "a dependency is unreachable"},
             returns=_READINESS, bodies={503: _READINESS}),
]

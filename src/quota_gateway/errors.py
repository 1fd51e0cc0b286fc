"""The one error type endpoints raise, and how every failure becomes a JSON body."""

from __future__ import annotations

import logging

import asyncpg
import orjson
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from .logs import ThrottledWarning

log = logging.getLogger("quota_gateway")


class ApiError(Exception):
    """A failure with an HTTP status, a stable machine code and a human message."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object) -> Response:
    body = orjson.dumps({"error": code, "message": message, **extra})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_error(exc.status, exc.code, exc.message, exc.headers, **exc.extra)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
    return json_error(exc.status_code, code, str(message), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a stack trace on the wire; the log keeps it.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_error(500, "internal_error", "the server failed to handle this request")


# Redis failures that pass: unreachable, timed out, loading, or a cluster slot without a master
# (a failover under way). A script's own error (plain ResponseError) stays a 500: it is a bug.
REDIS_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ClusterError,
    redis_errors.RedisClusterException, redis_errors.TryAgainError, redis_errors.ReadOnlyError)
UNAVAILABLE_HEADERS = {"Retry-After": "1"}


# PostgreSQL failures that pass: the server unreachable (refused, reset, timed out: OSError), the
# connection lost, or the server refusing connections for now (starting, shutting down, full).
POSTGRES_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError)
_postgres_failed = ThrottledWarning(log)


async def _redis_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return _store_unavailable(request, "redis_errors")


async def _postgres_unavailable(request: Request, exc: Exception) -> Response:
    _postgres_failed.warning("postgres unavailable on %s %s: %s: %s", request.method, request.url.path,
                             type(exc).__name__, exc)
    return _store_unavailable(request, "db_errors")


def _store_unavailable(request: Request, counter: str) -> Response:
    """503 unavailable with Retry-After, counted in the metrics family `counter` of the store."""
    services = getattr(request.app.state, "services", None)
    if services is not None:
        getattr(services.metrics, counter).inc(("route",))
    return json_error(503, "unavailable", "the data store is briefly unavailable; retry", UNAVAILABLE_HEADERS)


EXCEPTION_HANDLERS = {ApiError: _api_error, HTTPException: _http_exception, Exception: _unexpected,
                      **{kind: _postgres_unavailable for kind in POSTGRES_UNAVAILABLE},
                      **{kind: _redis_unavailable for kind in REDIS_UNAVAILABLE}}

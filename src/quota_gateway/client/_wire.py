"""What the sync and async clients share: requests, answers, errors and the retry rule."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from .results import ApiKeyUsage, ApiKeyValidation

VALIDATE_PATH = "/api/apilicense/validate"
# Statuses whose JSON body is a verdict on the key (isValid false), not a refusal of the call.
VERDICT_STATUSES = frozenset({200, 403, 404, 429})
USER_AGENT = "quota-gateway-python-client"


class QuotaClientError(Exception):
    """Base of the client's errors."""


class GatewayError(QuotaClientError):
    """The gateway refused the call itself: bad access token (401/403), bad input (400), ..."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


class GatewayUnavailable(QuotaClientError):
    """The gateway could not be reached or answered 503, after the retries."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries on 503 and on errors that prove the request was never processed (connection
    refused or timed out while connecting). Other transport errors (a read timeout) may have
    consumed units, so they are retried only when an Idempotency-Key makes a replay safe.
    The wait doubles from `backoff` up to `max_backoff`; a `Retry-After` longer than
    `max_retry_after` ends the retries."""

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0
    max_retry_after: float = 2.0

    def delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to stop."""
        if attempt + 1 >= self.attempts:
            return None
        if retry_after is not None:
            try:
                wanted = float(retry_after)
            except ValueError:
                wanted = self.backoff
            return wanted if wanted <= self.max_retry_after else None
        return min(self.backoff * 2.0 ** attempt, self.max_backoff)


SAFE_TO_RETRY = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def tls_verify(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """httpx's `verify`: a CA file path becomes an SSLContext trusting that file."""
    if isinstance(verify, (str, os.PathLike)):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


def base_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"ExisOneApi {token}", "User-Agent": USER_AGENT, "Content-Type": "application/json"}


def validate_request(api_key: str, units: int, consume: bool, idempotency_key: str | None) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps({"apiKey": api_key, "units": units, "consumeUnits": consume})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return body, headers


def check_path(api_key: str, units: int) -> str:
    return f"{VALIDATE_PATH}/{quote(api_key, safe='')}?units={units}"


def usage_path(api_key: str) -> str:
    return f"/api/apilicense/{quote(api_key, safe='')}/usage"


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def refusal(response: httpx.Response) -> GatewayError:
    body = _json(response)
    if isinstance(body, dict):
        return GatewayError(response.status_code, str(body.get("error", "error")), str(body.get("message", "")))
    return GatewayError(response.status_code, "error", response.text[:200])


def validation(response: httpx.Response) -> ApiKeyValidation:
    body = _json(response)
    if response.status_code in VERDICT_STATUSES and isinstance(body, dict) and "isValid" in body:
        return ApiKeyValidation.from_response(response.status_code, body, response.headers)
    raise refusal(response)


def usage(response: httpx.Response) -> ApiKeyUsage:
    body = _json(response)
    if response.status_code == 200 and isinstance(body, dict):
        return ApiKeyUsage.from_body(body)
    raise refusal(response)


def retry_after_of(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("retry-after")
    return value


def retry_wait(policy: RetryPolicy, attempt: int, outcome: httpx.Response | httpx.TransportError,
               replay_safe: bool) -> float | None:
    """None when `outcome` is the answer (a response other than 503); else the seconds to wait
    after a 503 or a transport error. GatewayUnavailable once the retries end (or at once for an
    error that may have consumed units and is not replay-safe)."""
    if isinstance(outcome, httpx.Response):
        if outcome.status_code != 503:
            return None
        wait = policy.delay(attempt, retry_after_of(outcome))
        if wait is None:
            raise GatewayUnavailable("the gateway answered 503 unavailable")
        return wait
    retryable = replay_safe or isinstance(outcome, SAFE_TO_RETRY)
    wait = policy.delay(attempt, None) if retryable else None
    if wait is None:
        raise GatewayUnavailable(f"{type(outcome).__name__}: {outcome}") from outcome
    return wait


def limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                        keepalive_expiry=30.0)


class ClientSettings:
    """What both clients are configured with; `pool_options()` are the arguments of the httpx
    client (sync or async) each process opens."""

    def __init__(self, base_url: str, token: str, *, timeout: float, verify: bool | str | ssl.SSLContext,
                 retry: RetryPolicy | None, max_connections: int, transport: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._verify = tls_verify(verify)
        self._retry = retry or RetryPolicy()
        self._max_connections = max_connections
        self._transport = transport

    def pool_options(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": base_headers(self._token), "timeout": self._timeout,
                "verify": self._verify, "limits": limits(self._max_connections), "transport": self._transport}

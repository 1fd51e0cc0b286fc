"""Per-client-address limits on the routes anyone may call without an access token.

Two fixed one-minute windows per address (an IPv6 address counts by its /64: clientaddr.limit_key),
kept in Redis (so every worker and every gateway shares them) by one script call per request,
plus one more after a failed lookup: requests (QG_CLIENT_REQUESTS_PER_MINUTE) and failed
lookups (QG_CLIENT_FAILURES_PER_MINUTE). A failed lookup is an answer of 401/403/404, or one a
route marked with `note_failed_lookup` (an unknown floating key answers 200 with KEY_INVALID,
a wrong sign-in code re-renders the form). Past either limit the address gets 429 with
Retry-After (seconds to the window's end) and a stable code, before any lookup runs.

When Redis cannot be reached the limiter lets requests through (counted in qg_redis_errors):
the routes behind it answer 503 themselves if they need Redis, and availability of the license
checks matters more than throttling during an outage.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from ..errors import ApiError
from ..formats import rediskeys
from ..middleware.observing import StatusRecorder
from ..scripts import LuaScript, reply_text
from .clientaddr import ClientAddresses, limit_key

if TYPE_CHECKING:
    from ..principal import Principal, TokenMiss
    from ..services import Services

log = logging.getLogger("quota_gateway.abuse")

WINDOW = LuaScript("abuse_client_window")
WINDOW_SECONDS = 60
# Routes reachable without an access token: floating-license clients, the portal and admin UI
# (sign-in pages; signed-in pages carry a cookie anyone can forge a guess of), payment receivers,
# the API document and the operator's /metrics (whose credential is guessed like a key).
# Not limited, on purpose: the probes. /healthz does no I/O; /readyz answers from a check made at
# most once a second (health.py), so neither costs more than the limiter's own script call would,
# and a 429 on readiness would take the instance out of rotation because of its neighbours'
# traffic (orchestrators and load balancers probe from one address, often shared through SNAT).
UNAUTHENTICATED_PREFIXES = ("/licensing/", "/portal", "/admin", "/hooks/")
UNAUTHENTICATED_PATHS = frozenset(("/openapi.json", "/metrics"))


def client_limited(path: str) -> bool:
    """Whether requests to `path` count in the per-address windows."""
    return path.startswith(UNAUTHENTICATED_PREFIXES) or path in UNAUTHENTICATED_PATHS


_FAILED = "qg.failed_lookup"
CLIENT_ADDRESS = "qg.client_address"  # scope key: what the limits were counted under (IPv6: the /64)
_FAILED_STATUSES = frozenset((401, 403, 404))
_MESSAGES = {"requests": ("too_many_requests", "too many requests from this address; retry after Retry-After seconds"),
             "failures": ("too_many_failed_lookups",
                          "too many failed lookups from this address; retry after Retry-After seconds")}


def note_failed_lookup(scope: Scope) -> None:
    """Mark this request as a failed lookup (a key, lease or code that matched nothing)."""
    scope[_FAILED] = True


def window_keys(address: str, window_start: int) -> list[str]:
    prefix = rediskeys.client_window(address, window_start)
    return [prefix + "r", prefix + "f"]


class WindowVerdict(NamedTuple):
    """WINDOW's answer to "check": allowed, or refused for `reason` ("requests" or "failures")
    for `retry_after` seconds."""

    allowed: bool
    retry_after: int = 0
    reason: str = ""


ALLOWED = WindowVerdict(True)


def window_verdict(reply: list) -> WindowVerdict:
    if int(reply[0]) == 1:
        return ALLOWED
    return WindowVerdict(False, int(reply[1]), reply_text(reply[2]))


class ClientWindows:
    """The two windows of each client address (one Redis script), read by the middleware on the
    unauthenticated routes and by `resolve_token` on a token the in-process cache cannot answer."""

    def __init__(self, settings: Settings) -> None:
        self.addresses = ClientAddresses(settings.trusted_proxies)
        self.request_limit = settings.client_requests_per_minute
        self.failure_limit = settings.client_failures_per_minute

    def address(self, scope: Scope) -> str:
        address = scope.get(CLIENT_ADDRESS)
        if address is None:
            address = scope[CLIENT_ADDRESS] = limit_key(self.addresses.of(scope))
        return address

    async def run(self, services: Services, scope: Scope, mode: str, request_limit: int) -> WindowVerdict:
        """"check" (counting the request when `request_limit` is set) or "fail"; fails open when
        Redis cannot be reached (see the module docstring)."""
        now = int(services.clock.now())
        window_start = now - now % WINDOW_SECONDS
        keys = window_keys(self.address(scope), window_start)
        try:
            reply = await services.runner.run(WINDOW, keys, [mode, request_limit, self.failure_limit,
                                                             window_start + WINDOW_SECONDS - now])
        except Exception as exc:
            log.warning("client limit %s failed: %s: %s", mode, type(exc).__name__, exc)
            services.metrics.redis_errors.inc(("client_limit",))
            return ALLOWED
        return window_verdict(reply) if mode == "check" else ALLOWED


class ClientLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = settings.client_requests_per_minute > 0 or settings.client_failures_per_minute > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or not client_limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        windows: ClientWindows = services.client_windows
        verdict = await windows.run(services, scope, "check", windows.request_limit)
        if not verdict.allowed:
            await _refuse(send, *_MESSAGES[verdict.reason], max(verdict.retry_after, 1))
            return
        recorder = StatusRecorder(send)
        await self.app(scope, receive, recorder)
        if windows.failure_limit > 0 and (recorder.status in _FAILED_STATUSES or scope.get(_FAILED)):
            await windows.run(services, scope, "fail", windows.request_limit)


async def resolve_token(services: Services, scope: Scope, miss: TokenMiss) -> Principal | None:
    """A token the in-process cache missed (`TokenCache.probe`), looked up in PostgreSQL unless the
    client's address used up its failed lookups this minute (429 too_many_failed_lookups); a token
    that matched nothing counts as one of them. A token verified before (its re-check after the
    cache's TTL) is never refused this way, so a client sharing an address with a guesser keeps its
    token."""
    windows: ClientWindows = services.client_windows
    guarded = windows.failure_limit > 0 and miss.verified is None
    if guarded:
        verdict = await windows.run(services, scope, "check", 0)
        if not verdict.allowed:
            retry_after = max(verdict.retry_after, 1)
            raise ApiError(429, _MESSAGES["failures"][0], _MESSAGES["failures"][1],
                           headers={"Retry-After": str(retry_after)}, retryAfter=retry_after)
    principal = await services.tokens.resolve(miss)
    if principal is None and guarded:
        await windows.run(services, scope, "fail", 0)
    return principal


async def _refuse(send: Send, code: str, message: str, retry_after: int) -> None:
    body = orjson.dumps({"error": code, "message": message, "retryAfter": retry_after})
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})

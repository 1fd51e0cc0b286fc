"""QuotaMiddleware: a pure ASGI middleware (Starlette, FastAPI, any ASGI app) that validates the
end-user's API key with the gateway before the app sees the request."""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from ._wire import GatewayError, GatewayUnavailable
from .aio import AsyncQuotaClient
from .guard import INVALID_KEY, MISSING_KEY, Guard, OnError, Reply, client_or_new
from .results import ApiKeyValidation

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class QuotaMiddleware:
    """Reads the key from `header` (optionally after `scheme`, e.g. "Bearer") or `query_param`,
    validates it consuming `units` (an int, or a function of the ASGI scope), and answers
    401 (missing or unknown key), 403 (revoked, expired) or 429 (quota or window full, with the
    gateway's Retry-After and RateLimit fields). An allowed request reaches the app with the
    result in `scope["state"][state_key]` (Starlette: `request.state.quota`).

    When the gateway is unreachable, a key allowed within `grace_seconds` passes; otherwise
    `on_error="closed"` answers 503 and `on_error="open"` lets the request through with a
    result whose `degraded` is True. `idempotency_header` forwards that request header as the
    gateway's Idempotency-Key, so an end-user's retried request is not charged twice.
    """

    def __init__(self, app: ASGIApp, *, client: AsyncQuotaClient | None = None, base_url: str | None = None,
                 token: str | None = None, verify: bool | str | ssl.SSLContext = True,
                 header: str | None = "x-api-key", query_param: str | None = None, scheme: str | None = None,
                 units: int | Callable[[Scope], int] = 1, consume: bool = True, on_error: OnError = "closed",
                 grace_seconds: float = 30.0, exclude_paths: tuple[str, ...] = (), state_key: str = "quota",
                 idempotency_header: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.client = client_or_new(client, AsyncQuotaClient, base_url, token, verify)
        self.guard = Guard(header=header, query_param=query_param, scheme=scheme, units=units, consume=consume,
                           on_error=on_error, grace_seconds=grace_seconds, exclude_paths=exclude_paths, clock=clock)
        self.state_key = state_key
        self._header = self.guard.header.encode("latin-1") if self.guard.header else None
        self._idempotency = idempotency_header.lower().encode("latin-1") if idempotency_header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = self._closing_on_shutdown(receive)
            await self.app(scope, receive, send)
            return
        if self.guard.exclude_paths and self.guard.excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        api_key, idempotency_key = self._read(scope)
        if api_key is None:
            await _send_reply(send, MISSING_KEY)
            return
        if not self.guard.plausible(api_key):
            await _send_reply(send, INVALID_KEY)
            return
        outcome: ApiKeyValidation | GatewayError | GatewayUnavailable
        try:
            outcome = await self.client.validate(api_key, self.guard.units_for(scope), consume=self.guard.consume,
                                                 idempotency_key=idempotency_key)
        except (GatewayUnavailable, GatewayError) as exc:
            outcome = exc
        result, refused = self.guard.judge(api_key, outcome)
        if refused is not None:
            await _send_reply(send, refused)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state[self.state_key] = result
        await self.app(scope, receive, send)

    def _read(self, scope: Scope) -> tuple[str | None, str | None]:
        raw = idempotency_key = None
        if self._header is not None or self._idempotency is not None:
            for name, value in scope["headers"]:
                if name == self._header:
                    raw = value.decode("latin-1")
                elif name == self._idempotency:
                    idempotency_key = value.decode("latin-1")[:200] or None
        api_key = self.guard.clean(raw)
        if api_key is None and self.guard.query_param is not None and scope.get("query_string"):
            for name, value in parse_qsl(scope["query_string"].decode("latin-1")):
                if name == self.guard.query_param:
                    api_key = value.strip() or None
                    break
        return api_key, idempotency_key

    def _closing_on_shutdown(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.client.aclose()
            return message
        return wrapped


async def _send_reply(send: Send, answer: Reply) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})

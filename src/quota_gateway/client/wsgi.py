"""QuotaWSGIMiddleware: the same checks for WSGI apps (Flask, Django, any PEP 3333 app)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from ._wire import GatewayError, GatewayUnavailable
from .guard import INVALID_KEY, MISSING_KEY, Guard, OnError, Reply, client_or_new
from .results import ApiKeyValidation
from .sync import QuotaClient

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ENVIRON_KEY = "quota_gateway.result"


class QuotaWSGIMiddleware:
    """The WSGI twin of `QuotaMiddleware` (same options and answers). An allowed request
    reaches the app with the result in `environ["quota_gateway.result"]` (Flask:
    `request.environ[...]`; Django: `request.META[...]`). `units` may be a function of the environ.
    """

    def __init__(self, app: WSGIApp, *, client: QuotaClient | None = None, base_url: str | None = None,
                 token: str | None = None, verify: bool | str | ssl.SSLContext = True,
                 header: str | None = "x-api-key", query_param: str | None = None, scheme: str | None = None,
                 units: int | Callable[[dict[str, Any]], int] = 1, consume: bool = True,
                 on_error: OnError = "closed", grace_seconds: float = 30.0, exclude_paths: tuple[str, ...] = (),
                 environ_key: str = ENVIRON_KEY, idempotency_header: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.client = client_or_new(client, QuotaClient, base_url, token, verify)
        self.guard = Guard(header=header, query_param=query_param, scheme=scheme, units=units, consume=consume,
                           on_error=on_error, grace_seconds=grace_seconds, exclude_paths=exclude_paths, clock=clock)
        self.environ_key = environ_key
        self._header = _environ_name(self.guard.header) if self.guard.header else None
        self._idempotency = _environ_name(idempotency_header.lower()) if idempotency_header else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.guard.exclude_paths and self.guard.excluded(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        api_key = self.guard.clean(environ.get(self._header)) if self._header else None
        if api_key is None and self.guard.query_param is not None:
            for name, value in parse_qsl(environ.get("QUERY_STRING", "")):
                if name == self.guard.query_param:
                    api_key = value.strip() or None
                    break
        if api_key is None:
            return _answer(start_response, MISSING_KEY)
        if not self.guard.plausible(api_key):
            return _answer(start_response, INVALID_KEY)
        idempotency_key = (environ.get(self._idempotency) or "")[:200] or None if self._idempotency else None
        outcome: ApiKeyValidation | GatewayError | GatewayUnavailable
        try:
            outcome = self.client.validate(api_key, self.guard.units_for(environ), consume=self.guard.consume,
                                           idempotency_key=idempotency_key)
        except (GatewayUnavailable, GatewayError) as exc:
            outcome = exc
        result, refused = self.guard.judge(api_key, outcome)
        if refused is not None:
            return _answer(start_response, refused)
        environ[self.environ_key] = result
        return self.app(environ, start_response)


def _environ_name(header: str) -> str:
    name = header.upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"


_REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _answer(start_response: Callable[..., Any], answer: Reply) -> list[bytes]:
    headers = [*answer.headers, ("content-length", str(len(answer.body)))]
    start_response(f"{answer.status} {_REASONS.get(answer.status, 'Error')}", headers)
    return [answer.body]

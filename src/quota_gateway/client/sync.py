"""QuotaClient: API-key validation from synchronous code (WSGI apps, scripts, workers)."""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Self, cast

import httpx

from . import _wire
from ._wire import ClientSettings, RetryPolicy
from .results import ApiKeyUsage, ApiKeyValidation


class QuotaClient(ClientSettings):
    """Validates end-users' API keys against the gateway over one keep-alive connection pool.

    The pool belongs to the process that made it: after a fork (gunicorn, uWSGI with preloading)
    the child opens its own on first use instead of sharing the parent's sockets. Thread-safe.

        client = QuotaClient("https://gateway.example", token="exo_at_...")
        result = client.validate(api_key, units=3)
        if not result.is_valid: ...
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0, verify: bool | str | ssl.SSLContext = True,
                 retry: RetryPolicy | None = None, max_connections: int = 32,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(base_url, token, timeout=timeout, verify=verify, retry=retry,
                         max_connections=max_connections, transport=transport)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._pid = 0

    def _client(self) -> httpx.Client:
        http, pid = self._http, os.getpid()
        if http is not None and self._pid == pid:
            return http
        with self._lock:
            if self._http is None or self._pid != pid:
                # A pool inherited across fork() is the parent's: never reuse (or close) its sockets.
                self._http = httpx.Client(**self.pool_options())
                self._pid = pid
            return self._http

    def _send(self, method: str, path: str, *, content: bytes | None = None, headers: dict[str, str] | None = None,
              replay_safe: bool) -> httpx.Response:
        http = self._client()
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                outcome = exc
            wait = _wire.retry_wait(self._retry, attempt, outcome, replay_safe)
            if wait is None:
                return cast(httpx.Response, outcome)
            self._sleep(wait)
            attempt += 1

    def validate(self, api_key: str, units: int = 1, *, consume: bool = True,
                 idempotency_key: str | None = None) -> ApiKeyValidation:
        """Check the key and (by default) consume `units` from its quota and windows, all or none.
        With `idempotency_key`, a retried call answers the first answer without consuming again."""
        content, headers = _wire.validate_request(api_key, units, consume, idempotency_key)
        response = self._send("POST", _wire.VALIDATE_PATH, content=content, headers=headers,
                              replay_safe=not consume or idempotency_key is not None)
        return _wire.validation(response)

    def check(self, api_key: str, units: int = 1) -> ApiKeyValidation:
        """Would `units` pass now? Consumes nothing."""
        return _wire.validation(self._send("GET", _wire.check_path(api_key, units), replay_safe=True))

    def usage(self, api_key: str) -> ApiKeyUsage:
        """Usage now and by day (needs a token with the manage permission)."""
        return _wire.usage(self._send("GET", _wire.usage_path(api_key), replay_safe=True))

    def close(self) -> None:
        with self._lock:
            if self._http is not None and self._pid == os.getpid():
                self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

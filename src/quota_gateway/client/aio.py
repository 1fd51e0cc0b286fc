"""AsyncQuotaClient: API-key validation from asyncio code (ASGI apps)."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Self, cast

import httpx

from . import _wire
from ._wire import ClientSettings, RetryPolicy
from .results import ApiKeyUsage, ApiKeyValidation


class AsyncQuotaClient(ClientSettings):
    """The asyncio twin of `QuotaClient`: one keep-alive pool, opened on first use in the running
    process (and again after a fork), closed by `aclose()`.

        client = AsyncQuotaClient("https://gateway.example", token="exo_at_...")
        result = await client.validate(api_key, units=3)
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0, verify: bool | str | ssl.SSLContext = True,
                 retry: RetryPolicy | None = None, max_connections: int = 64,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(base_url, token, timeout=timeout, verify=verify, retry=retry,
                         max_connections=max_connections, transport=transport)
        self._sleep = sleep
        self._http: httpx.AsyncClient | None = None
        self._pid = 0

    def _client(self) -> httpx.AsyncClient:
        pid = os.getpid()
        if self._http is None or self._pid != pid:
            self._http = httpx.AsyncClient(**self.pool_options())
            self._pid = pid
        return self._http

    async def _send(self, method: str, path: str, *, content: bytes | None = None,
                    headers: dict[str, str] | None = None, replay_safe: bool) -> httpx.Response:
        http = self._client()
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                outcome = exc
            wait = _wire.retry_wait(self._retry, attempt, outcome, replay_safe)
            if wait is None:
                return cast(httpx.Response, outcome)
            await self._sleep(wait)
            attempt += 1

    async def validate(self, api_key: str, units: int = 1, *, consume: bool = True,
                       idempotency_key: str | None = None) -> ApiKeyValidation:
        """Check the key and (by default) consume `units`, all or none; see `QuotaClient.validate`."""
        content, headers = _wire.validate_request(api_key, units, consume, idempotency_key)
        response = await self._send("POST", _wire.VALIDATE_PATH, content=content, headers=headers,
                                    replay_safe=not consume or idempotency_key is not None)
        return _wire.validation(response)

    async def check(self, api_key: str, units: int = 1) -> ApiKeyValidation:
        """Would `units` pass now? Consumes nothing."""
        return _wire.validation(await self._send("GET", _wire.check_path(api_key, units), replay_safe=True))

    async def usage(self, api_key: str) -> ApiKeyUsage:
        """Usage now and by day (needs a token with the manage permission)."""
        return _wire.usage(await self._send("GET", _wire.usage_path(api_key), replay_safe=True))

    async def aclose(self) -> None:
        if self._http is not None and self._pid == os.getpid():
            await self._http.aclose()
        self._http = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

"""One structured access-log line per request; never the Authorization header or the body."""

from __future__ import annotations

import logging
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("quota_gateway.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info(orjson.dumps({
                "method": scope["method"],
                "route": getattr(scope.get("route"), "path", None),  # templates only: raw paths may carry license keys
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3),
                "client": (scope.get("client") or ("", 0))[0],
            }).decode())

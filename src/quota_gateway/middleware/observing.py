"""The frame both middlewares share: run the request, then observe its route, status and time."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StatusRecorder:
    """A `send` that remembers the status of the response start (500 until one is sent: an app
    that raised before answering is counted as the 500 the error handler sends)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class ObservingMiddleware:
    """Calls `observe(scope, status, seconds)` after every HTTP request it is `enabled` for (the
    route is in the scope by then: Starlette's router puts it there)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def enabled(self) -> bool:
        return True

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled():
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.observe(scope, recorder.status, time.perf_counter() - started)

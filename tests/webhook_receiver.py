"""A real HTTP webhook receiver on loopback (Starlette under uvicorn, in its own thread).

It verifies both signature schemes as a receiver would (X-Webhook-Signature by hand, Standard
Webhooks with the `standardwebhooks` package), records every arrival in order, fails or stalls
on command, and counts how many requests for the same event were in flight at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota_gateway.embedded import free_port


@dataclass
class Arrival:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    exiso_ok: bool
    standard_ok: bool | None

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def event_type(self) -> str:
        return self.headers.get("x-webhook-event", "")


def verify_exiso(secret: str, headers: dict[str, str], body: bytes, tolerance: float | None = 300,
                 now: float | None = None) -> bool:
    """The documented receiver check: HMAC-SHA256 over "{timestamp}.{body}" with the secret,
    any of the listed signatures, and a timestamp within the tolerance."""
    timestamp = headers.get("x-webhook-timestamp", "")
    if not timestamp.isdigit():
        return False
    if tolerance is not None and abs((now or time.time()) - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    given = [s.strip().removeprefix("sha256=") for s in headers.get("x-webhook-signature", "").split(",")]
    return any(hmac.compare_digest(expected, g) for g in given)


@dataclass
class Receiver:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    secrets: list[str] = field(default_factory=list)
    check_standard: bool = False   # Standard Webhooks checks the timestamp against the real clock
    status: int = 200
    delay: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    max_in_flight_per_event: int = 0
    requests_started: int = 0
    _fail: list[int] = field(default_factory=list)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        with self._lock:
            self._fail.extend([status] * count)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event_id = headers.get("webhook-id", "")
        with self._lock:
            self.requests_started += 1
            self._in_flight[event_id] = self._in_flight.get(event_id, 0) + 1
            self.max_in_flight_per_event = max(self.max_in_flight_per_event, self._in_flight[event_id])
            status = self._fail.pop(0) if self._fail else self.status
            delay = self.delay
        try:
            if delay:
                await asyncio.sleep(delay)
            exiso_ok = any(verify_exiso(s, headers, body, tolerance=None) for s in self.secrets)
            standard_ok = None
            if self.check_standard:
                standard_ok = False
                for secret in self.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                        standard_ok = True
                    except WebhookVerificationError:
                        pass
            with self._lock:
                self.arrivals.append(Arrival(time.time(), request.url.path, headers, body, status, exiso_ok,
                                             standard_ok))
            return Response(f"receiver says {status}", status_code=status)
        finally:
            with self._lock:
                self._in_flight[event_id] -= 1

    def start(self) -> Receiver:
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"]),
                                Route("/gone", lambda r: Response("gone", status_code=410), methods=["POST"])])
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="webhook-receiver")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def ok_arrivals(self) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if 200 <= a.status < 300]

    async def wait_for(self, count: int = 1, timeout: float = 5.0, *, ok_only: bool = False) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = [a for a in self.arrivals if not ok_only or 200 <= a.status < 300]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhook arrival(s), got {len(got)}")
            await asyncio.sleep(0.01)

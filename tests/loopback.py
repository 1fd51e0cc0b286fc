"""An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a thread with its own loop: the
loopback stand-ins of outside services (ServiceNow, Stripe's API) run on it."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from quota_gateway.embedded import free_port


class LoopbackServer:
    def __init__(self, app: Any, name: str, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if ssl_certfile else 'http'}://127.0.0.1:{self.port}"
        self.name = name
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
                                interface="asgi3", ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the {self.name} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

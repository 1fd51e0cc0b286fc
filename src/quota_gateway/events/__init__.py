"""Events leave the server: the outbox, the durable job queue, e-mail and webhooks.

`events.emit(conn, tenant_id, type, data)` and the type constants stay importable from here, so
code that raises events does not care how they are delivered.
"""

from __future__ import annotations

from typing import Any

from . import jobs, mailer, outbox  # noqa: F401  (mailer registers its job kind on import)
from .outbox import emit, pending, subscribe
from .routes import routes
from .types import *  # noqa: F403
from .types import ALL as ALL_TYPES

DOMAIN = "events"


async def start(services: Any) -> None:
    if services.settings.events_worker:
        worker = jobs.JobWorker(services)
        await worker.start()
        services.domains[DOMAIN] = worker


async def stop(services: Any) -> None:
    worker = services.domains.pop(DOMAIN, None)
    if worker is not None:
        await worker.stop()


__all__ = ["emit", "pending", "subscribe", "routes", "start", "stop", "jobs", "mailer", "outbox", "ALL_TYPES"]

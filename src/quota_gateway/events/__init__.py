"""Events leave the server: the outbox, the durable job queue, e-mail and webhooks.

`events.emit(conn, tenant_id, type, data)` and the type constants stay importable from here, so
code that raises events does not care how they are delivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import jobs, mailer, outbox, retention, scheduler, webhooks
from .outbox import emit, pending, subscribe
from .routes import routes
from .types import *  # noqa: F403
from .types import ALL as ALL_TYPES

if TYPE_CHECKING:
    from ..services import Services


async def start(services: Services) -> None:
    webhooks.http_client(services)
    if services.settings.events_worker:
        worker = jobs.JobWorker(services)
        await worker.start()
        services.job_worker = worker


async def stop(services: Services) -> None:
    worker, services.job_worker = services.job_worker, None
    if worker is not None:
        await worker.stop()
    await webhooks.close_http_client(services)


__all__ = ["ALL_TYPES", "emit", "jobs", "mailer", "outbox", "pending", "retention", "routes", "scheduler", "start",
           "stop", "subscribe", "webhooks"]

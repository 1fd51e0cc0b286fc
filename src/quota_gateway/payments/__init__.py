"""Payments → license delivery: Stripe and PayPal webhooks turned into licenses and e-mails."""

from __future__ import annotations

from typing import Any

from ..events import jobs
from . import service
from .routes import routes

__all__ = ["routes", "start"]


async def _process(services: Any, job: Any) -> None:
    await service.process_event(services.pool, services.settings, services.redis, int(job.payload["paymentEventId"]),
                                services.clock.utcnow())


async def start(services: Any) -> None:
    jobs.register(service.JOB_KIND, _process)

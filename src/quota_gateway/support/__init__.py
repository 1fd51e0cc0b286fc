"""Support tickets (ExisOne `send_support_ticket`, staff replies, status, priority) and their sync
to the tenant's ServiceNow instance through the job queue."""

from __future__ import annotations

from ..services import Services
from . import sync
from .routes import routes


async def start(services: Services) -> None:
    sync.state(services)  # the ServiceNow client (connection pool, OAuth tokens) for this process


async def stop(services: Services) -> None:
    current, services.support = services.support, None
    if current is not None:
        await current.client.aclose()


__all__ = ["routes", "start", "stop"]

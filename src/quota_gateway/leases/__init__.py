"""Floating licenses (ExaLicense-compatible): pools of signed, expiring leases per license key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .history import HistoryDrainer
from .pool import LeasePools
from .routes import routes

if TYPE_CHECKING:
    from ..services import Services

__all__ = ["routes", "start", "stop"]


async def start(services: Services) -> None:
    services.lease_pools = LeasePools(services.runner)
    services.lease_history = HistoryDrainer(services, services.lease_pools, services.settings.flush_interval)
    services.lease_history.start()


async def stop(services: Services) -> None:
    await services.lease_history.stop()

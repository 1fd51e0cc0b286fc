"""Floating licenses (ExaLicense-compatible): pools of signed, expiring leases per license key."""

from .routes import routes, start, stop

__all__ = ["routes", "start", "stop"]

"""Activation-key licensing (ExisOne wire contract): keys, activations, trials, seats, offline codes."""

from .routes import routes

__all__ = ["routes"]

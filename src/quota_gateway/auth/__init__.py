"""Access tokens: issuing, verifying (cached in process), revoking, and their REST endpoints."""

from .routes import routes

__all__ = ["routes"]

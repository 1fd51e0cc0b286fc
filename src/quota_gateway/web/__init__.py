"""The web front end: the admin UI (/admin/{tenant}), the customer portal (/portal/{tenant}) and
analytics, server-rendered with Jinja2 and a little plain JavaScript; every asset served locally."""

from .routes import routes

__all__ = ["routes"]

"""Tenants (publisher accounts): every other row in the system belongs to one."""

from __future__ import annotations

from .routes import routes
from .service import create_tenant, find, get_tenant, list_tenants, slug_of

__all__ = ["create_tenant", "find", "get_tenant", "list_tenants", "routes", "slug_of"]

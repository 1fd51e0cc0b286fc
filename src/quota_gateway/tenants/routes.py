"""`/api/tenant`: the calling token's tenant."""

from __future__ import annotations

from ..answers import STRING, TIMESTAMP, answer
from ..routing import Call, endpoint
from . import service


async def current_tenant(call: Call) -> dict | None:
    """The tenant the calling token belongs to."""
    async with call.services.pool.acquire() as conn:
        return await service.get_tenant(conn, call.tenant_id)


_TENANT = answer(id=STRING, slug=STRING, name=STRING, createdAt=TIMESTAMP)
routes = [endpoint("GET", "/api/tenant", current_tenant, scope="verify", tag="tenants", returns=_TENANT)]

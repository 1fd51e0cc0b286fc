"""REST endpoints for access tokens. Creating or revoking tokens needs the admin permission."""

from __future__ import annotations

from ..answers import BOOLEAN, INTEGER, STRING, TIMESTAMP, answer, array, items, nullable
from ..errors import ApiError
from ..formats import times
from ..jsonio import JSONResponse
from ..routing import Call, endpoint
from ..schema import List, Str, obj
from .service import SCOPES, create_token, list_tokens, revoke_token

_CREATE = obj(
    name=Str(required=True, min_len=1, max_len=100, description="label shown in listings"),
    scopes=List(required=True, item=Str(choices=SCOPES), max_items=len(SCOPES)),
    expiresAt=Str(max_len=40, description="ISO-8601 UTC; omitted = never expires"),
)

_TOKEN_FIELDS = dict(id=INTEGER, publicId=STRING, token=STRING, name=STRING, scopes=array(STRING),
                     createdAt=TIMESTAMP, expiresAt=nullable(TIMESTAMP))
_NEW_TOKEN = answer(**_TOKEN_FIELDS)
_TOKEN = answer(**_TOKEN_FIELDS, revokedAt=nullable(TIMESTAMP), lastUsedAt=nullable(TIMESTAMP))


async def create(call: Call) -> JSONResponse:
    """Create an access token; the full token is in this response and nowhere else, ever."""
    text = call.body["expiresAt"]
    expires = None if text is None else times.parse_field(text, "expiresAt")
    async with call.services.pool.acquire() as conn:
        token = await create_token(conn, call.tenant_id, call.body["name"], call.body["scopes"], expires)
    return JSONResponse(token, status_code=201)


async def listing(call: Call) -> dict:
    """List this tenant's access tokens, masked."""
    async with call.services.pool.acquire() as conn:
        return {"items": await list_tokens(conn, call.tenant_id)}


async def revoke(call: Call) -> dict:
    """Revoke an access token; every gateway process refuses it within moments."""
    public_id = call.path["public_id"]
    async with call.services.pool.acquire() as conn:
        revoked = await revoke_token(conn, call.tenant_id, public_id)
    if not revoked:
        raise ApiError(404, "not_found", "no live access token with that id in this tenant")
    await call.services.tokens.publish_invalidation(public_id)
    return {"publicId": public_id, "revoked": True}


routes = [
    endpoint("POST", "/api/tokens", create, scope="admin", body=_CREATE, errors=("invalid_scopes",), tag="tokens",
             responses={201: "the new token, shown in full once"}, returns=_NEW_TOKEN),
    endpoint("GET", "/api/tokens", listing, scope="admin", tag="tokens", returns=items(_TOKEN)),
    endpoint("DELETE", "/api/tokens/{public_id}", revoke, scope="admin", errors=("not_found",), tag="tokens",
             returns=answer(publicId=STRING, revoked=BOOLEAN)),
]

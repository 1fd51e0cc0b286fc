"""Endpoints declare what they need (scope, body shape, query shape); this module enforces it.

An endpoint is `async def handler(call: Call)`; it returns a Response, or anything JSON-able
(sent as 200). The same declaration feeds /openapi.json, so the docs cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from .abuse.clientlimit import resolve_token
from .abuse.failures import ACCESS_TOKEN, ACTIVATION_KEY
from .errors import ApiError
from .jsonio import JSONResponse, content_type_is_json, parse_json, read_body
from .principal import Principal, TokenMiss
from .schema import Object, Query

if TYPE_CHECKING:
    from .services import Services

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(slots=True)
class Call:
    """One request as an endpoint sees it: already authenticated and parsed."""

    request: Request
    services: Services
    principal: Principal | None
    body: Any
    query: dict[str, Any]

    @property
    def tenant_id(self) -> str:
        assert self.principal is not None
        return self.principal.tenant_id

    @property
    def path(self) -> dict[str, Any]:
        return self.request.path_params

    def int_path(self, name: str) -> int:
        """A path parameter that is a row id: 400 `invalid_field` unless it is a positive integer."""
        text = self.path[name]
        # Only ASCII digits are ids: str.isdigit() also takes '²' and '١' (which int() reads as 1).
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ApiError(400, "invalid_field", f"{name}: must be a positive integer", field=name)
        return int(text)


@dataclass
class EndpointSpec:
    method: str
    path: str
    summary: str
    scope: str | None  # None: no token needed
    body: Object | None = None
    query: Query | None = None
    errors: tuple[str, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)
    raw_body: bool = False  # handler reads the body itself (e.g. non-JSON)
    bodies: dict[int, dict] = field(default_factory=dict)  # status -> JSON schema, when not {error, message}
    tag: str = "api"
    security: str | None = None  # an openapi security scheme other than ExisOneApi (scope None)
    key_lookup: bool = False  # looks up a key for the token: under the per-token failure limit (abuse.failures)
    returns: dict | None = None  # JSON Schema of the success (2xx) body; per status in `bodies` when they differ
    media_type: str = "application/json"  # of the success body


class ApiRoute(Route):
    def __init__(self, spec: EndpointSpec, handler: Handler) -> None:
        self.spec = spec
        self.handler = handler
        super().__init__(spec.path, self._endpoint, methods=[spec.method], name=handler.__name__)

    async def _endpoint(self, request: Request) -> Response:
        spec = self.spec
        services: Services = request.app.state.services
        for name, value in request.path_params.items():
            if "\x00" in value or len(value) > 1000:
                raise ApiError(400, "invalid_field", f"{name}: not a valid value", field=name)
        principal = None
        if spec.scope is not None:
            principal = await authenticate(services, request.scope, request.headers.get("authorization"), spec.scope)
            if spec.key_lookup and services.failed_lookups.limit:
                services.failed_lookups.check(principal)
        body = None
        if spec.body is not None:
            if not content_type_is_json(request.headers.get("content-type")):
                raise ApiError(415, "unsupported_media_type", "the body must be JSON: send Content-Type: application/json")
            raw = await read_body(request, services.settings.max_body_bytes)
            body = spec.body.parse(parse_json(raw))
        query = spec.query.parse(request.query_params.multi_items()) if spec.query is not None else {}
        try:
            result = await self.handler(Call(request, services, principal, body, query))
        except ApiError as exc:
            if exc.code == "invalid_key" and principal is not None:  # an activation key matching nothing
                services.failed_lookups.record(principal, ACTIVATION_KEY)
            raise
        if isinstance(result, Response):
            return result
        return JSONResponse(result)


async def authenticate(services: Services, asgi_scope: Scope, header: str | None, scope: str) -> Principal:
    """The caller's principal, or 401 (no usable token) / 403 (token lacks `scope`); 429 when the
    client's address made too many failed lookups (abuse.clientlimit.resolve_token)."""
    if not header:
        raise ApiError(401, "unauthorized", "missing Authorization header (expected: ExisOneApi <token>)")
    principal = services.tokens.probe(header)
    if type(principal) is TokenMiss:
        principal = await resolve_token(services, asgi_scope, principal)
    if principal is None:
        services.failed_lookups.record(None, ACCESS_TOKEN)
        raise ApiError(401, "unauthorized", "access token is malformed, unknown, expired or revoked")
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this access token lacks the '{scope}' permission")
    return principal


def endpoint(method: str, path: str, handler: Handler, *, scope: str | None, summary: str = "",
             body: Object | None = None, query: Query | None = None, errors: tuple[str, ...] = (),
             responses: dict[int, str] | None = None, tag: str = "api",
             bodies: dict[int, dict] | None = None, returns: dict | None = None,
             media_type: str = "application/json", security: str | None = None,
             key_lookup: bool = False) -> ApiRoute:
    """`returns`: the success body's JSON Schema (schema.answer, schema.page, ...); `bodies`: the
    body of a status whose shape differs (a 2xx of another shape, an error that is not {error, message});
    `security`: an openapi security scheme other than ExisOneApi (scope None); `key_lookup`: the route
    looks up a key for the token (implied by an `invalid_key` error)."""
    spec = EndpointSpec(method, path, summary or (handler.__doc__ or "").strip().split("\n")[0], scope,
                        body, query, errors, responses or {}, tag=tag, bodies=bodies or {}, returns=returns,
                        media_type=media_type, security=security, key_lookup=key_lookup or "invalid_key" in errors)
    return ApiRoute(spec, handler)

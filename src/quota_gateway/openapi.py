"""GET /openapi.json, generated from the same endpoint declarations that validate requests."""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import __version__
from .abuse.clientlimit import client_limited
from .answers import COMPONENTS, component
from .principal import ANY_TOKEN
from .routing import EndpointSpec

ERROR_SCHEMA = _ERROR = component("Error", {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string", "description": "a stable code (x-error-codes lists an operation's own)"},
                   "message": {"type": "string"},
                   "field": {"type": "string", "description": "the member or parameter that was wrong (400)"}},
    "additionalProperties": True,  # a code may add members (retryAfter, maxLength, serverVersion, ...)
})
_HEAD_TOO_LARGE = {"description": "request headers too large or too many (QG_MAX_HEADER_BYTES / QG_MAX_HEADER_COUNT)",
                   "content": {"application/json": {"schema": _ERROR}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 0}}}
_CLIENT_LIMITED = {"description": "too many requests or failed lookups from this address; carries Retry-After",
                   "headers": _RETRY_AFTER, "content": {"application/json": {"schema": _ERROR}}}
_FAILED_LOOKUPS = {"description": "too_many_failed_lookups: wrong access tokens from this address (a token this "
                                  "process never verified is refused), or, on a route that looks a key up, this "
                                  "token's failed lookups (QG_TOKEN_FAILURES_PER_MINUTE); carries Retry-After",
                   "headers": _RETRY_AFTER, "content": {"application/json": {"schema": _ERROR}}}
_UNAVAILABLE = {"description": "Redis or PostgreSQL is briefly unreachable (error `unavailable`); carries Retry-After",
                "headers": _RETRY_AFTER, "content": {"application/json": {"schema": _ERROR}}}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def build(specs: Iterable[EndpointSpec]) -> dict:
    paths: dict[str, dict] = {}
    for spec in specs:
        path = _PARAM.sub(r"{\1}", spec.path)
        op: dict = {"summary": spec.summary, "tags": [spec.tag], "operationId": f"{spec.method.lower()}_{_op_name(path)}"}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for n in _PARAM.findall(spec.path)]
        if spec.query is not None:
            params += spec.query.openapi()
        if params:
            op["parameters"] = params
        if spec.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec.body.json_schema()}}}
        responses: dict = {}
        for code in [c for c in spec.responses if c < 300] or [200]:
            success: dict = {"description": spec.responses.get(code, "success")}
            responses[str(code)] = success
            schema = spec.bodies.get(code, spec.returns)
            if schema is not None:
                success["content"] = {spec.media_type: {"schema": schema}}
        error = {"content": {"application/json": {"schema": _ERROR}}}
        if spec.body is not None or spec.query is not None:
            responses["400"] = {"description": "invalid input", **error}
        if spec.body is not None:
            responses["413"] = {"description": "body too large", **error}
        if spec.scope is not None:
            responses["401"] = {"description": "missing or invalid access token", **error}
            if spec.scope == ANY_TOKEN:
                op["security"] = [{"ExisOneApi": []}]
            else:
                responses["403"] = {"description": f"token lacks the '{spec.scope}' permission", **error}
                op["security"] = [{"ExisOneApi": [spec.scope]}]
        if spec.security is not None:
            op["security"] = [{spec.security: []}]
        if spec.errors:
            op["x-error-codes"] = list(spec.errors)
        for code, text in spec.responses.items():
            if code >= 400:
                schema = spec.bodies.get(code, _ERROR)
                responses[str(code)] = {"description": text, "content": {"application/json": {"schema": schema}}}
        if "parameters" in op and any(p["in"] == "path" for p in op["parameters"]):
            # a path value may be malformed (400) or name nothing (404)
            for code, text in ((400, "invalid path value"), (404, "not found")):
                responses.setdefault(str(code), {"description": text, **error})
        if spec.scope is None and client_limited(spec.path):
            responses.setdefault("429", _CLIENT_LIMITED)
        elif spec.scope is not None:
            responses.setdefault("429", _FAILED_LOOKUPS)
        if touches_stores(spec):
            if "503" in responses and 503 not in spec.bodies:  # declared: its own words, the usual body and header
                responses["503"] = {**_UNAVAILABLE, "description": responses["503"]["description"]}
            responses.setdefault("503", _UNAVAILABLE)
        responses["431"] = _HEAD_TOO_LARGE
        op["responses"] = responses
        paths.setdefault(path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "quota_gateway", "version": __version__},
        "components": {"securitySchemes": {"ExisOneApi": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "`ExisOneApi exo_at_<public>_<secret>`"},
            "MetricsOperator": {"type": "http", "scheme": "bearer",
                                "description": "the operator's QG_METRICS_TOKEN (GET /metrics only)"}},
            "schemas": dict(sorted(COMPONENTS.items()))},
        "paths": paths,
    }


def touches_stores(spec: EndpointSpec) -> bool:
    """Whether answering may need Redis or PostgreSQL, and so may be a 503: a token is looked up in
    PostgreSQL (when not cached), and the routes open to anyone count the address in Redis."""
    return spec.scope is not None or client_limited(spec.path)


def _op_name(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_")

"""GET /openapi.json, generated from the same endpoint declarations that validate requests."""

from __future__ import annotations

import re
from collections.abc import Iterable

from . import __version__
from .principal import ANY_TOKEN
from .routing import EndpointSpec

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
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
        responses: dict = {str(code): {"description": text} for code, text in spec.responses.items()}
        if not any(code < 300 for code in spec.responses):
            responses["200"] = {"description": "success"}
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
        if spec.errors:
            op["x-error-codes"] = list(spec.errors)
        for code, text in spec.responses.items():
            if code >= 400:
                responses[str(code)] = {"description": text, **error}
        op["responses"] = responses
        paths.setdefault(path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "quota_gateway", "version": __version__},
        "components": {"securitySchemes": {"ExisOneApi": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "`ExisOneApi exo_at_<public>_<secret>`"}}},
        "paths": paths,
    }


def _op_name(path: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "_", path).strip("_")

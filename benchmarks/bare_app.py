"""The baseline: a bare Starlette endpoint that parses the same JSON body as validate and returns a
JSON document of the same size, with no I/O. The gateway is measured against this."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Same shape and size as a gateway answer for a key with one window.
_ANSWER = orjson.dumps({"isValid": True, "unitsConsumed": 1, "quota": {"limit": None, "used": 1, "remaining": None},
                        "rateLimits": {"calls_minute": {"limit": 1000000, "used": 1, "remaining": 999999,
                                                        "resetsAt": "2026-11-24T03:17:00Z"}},
                        "features": [], "expiresAt": None})


async def validate(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if not isinstance(body, dict) or not isinstance(body.get("apiKey"), str):
        return Response(b'{"error":"invalid_body"}', status_code=400, media_type="application/json")
    return Response(_ANSWER, media_type="application/json")


app = Starlette(routes=[Route("/api/apilicense/validate", validate, methods=["POST"])])

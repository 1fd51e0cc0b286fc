"""JSON in and out: bounded body reading and the one serializer (orjson, UTC as `Z`)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError

_DUMP_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_OMIT_MICROSECONDS


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMP_OPTIONS)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_object(raw: bytes, code: str, what: str) -> dict:
    """`raw` as a JSON object, else 400 `code` ("<what> is not JSON" / "... not a JSON object")."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, code, f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, code, f"{what} is not a JSON object")
    return value


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(400, "invalid_json", "request body is empty; a JSON document is required")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc.msg}") from None
    refuse_duplicate_members(raw)
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        repeated = next(name for name, _ in pairs if name in seen or seen.add(name))  # type: ignore[func-returns-value]
        raise ApiError(400, "duplicate_key", f"member '{repeated}' appears more than once in one object")
    return members


def refuse_duplicate_members(raw: bytes) -> None:
    """400 duplicate_key when an object of this (valid) JSON repeats a member name. Parsers differ
    on which copy wins (orjson keeps the last, others the first), so a proxy and the gateway could
    read different requests from the same bytes; one meaning or none."""
    json.loads(raw, object_pairs_hook=_unique_members)


def content_type_is_json(value: str | None) -> bool:
    """No Content-Type, application/json or any application/*+json (parameters such as charset aside)."""
    if value is None:
        return True
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing early (by Content-Length) or mid-stream once past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)

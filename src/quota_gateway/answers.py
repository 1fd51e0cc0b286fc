"""What endpoints answer, as JSON Schema for /openapi.json (documentation only, never parsed):
`endpoint(..., returns=answer(...))`.

Every member of an `answer` is required unless wrapped in `optional`: the document then promises
each member a client reads, and the tests (schemathesis, and the suite-wide check of
tests/doc_conformance.py) catch an answer that drops one or changes a type. Shapes several answers
share are `component`s, listed once under #/components/schemas.
"""

from __future__ import annotations

from .schema import Field

STRING: dict = {"type": "string"}
INTEGER: dict = {"type": "integer"}
NUMBER: dict = {"type": "number"}
BOOLEAN: dict = {"type": "boolean"}
TIMESTAMP: dict = {"type": "string", "format": "date-time", "description": "ISO-8601 UTC"}
ANY_OBJECT: dict = {"type": "object"}
TEXT: dict = {"type": "string"}  # a body that is not JSON (text/plain, PEM)
COMPONENTS: dict[str, dict] = {}  # name -> schema, for #/components/schemas


class _Optional(dict):
    """A member an answer may leave out."""


def _plain(schema: dict | Field) -> dict:
    if isinstance(schema, Field):
        return schema.json_schema()
    return dict(schema) if isinstance(schema, _Optional) else schema


def optional(schema: dict | Field) -> dict:
    return _Optional(_plain(schema))


def nullable(schema: dict | Field) -> dict:
    return {"anyOf": [_plain(schema), {"type": "null"}]}


def array(item: dict | Field) -> dict:
    return {"type": "array", "items": _plain(item)}


def one_of(*values: str | int | bool) -> dict:
    return {"enum": list(values)}


def answer(**members: dict | Field) -> dict:
    """A JSON object answer: `members` name -> schema (a Field reuses its request schema)."""
    schema: dict = {"type": "object", "properties": {n: _plain(s) for n, s in members.items()}}
    required = [n for n, s in members.items() if not isinstance(s, _Optional)]
    if required:
        schema["required"] = required
    return schema


def component(name: str, schema: dict) -> dict:
    """Register a shape shared by several answers; returns the `$ref` that names it."""
    if COMPONENTS.get(name, schema) != schema:
        raise ValueError(f"component {name!r} declared twice with different shapes")
    COMPONENTS[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


PAGE = component("Page", answer(items=array(ANY_OBJECT), page=INTEGER, pageSize=INTEGER, totalCount=INTEGER,
                                totalPages=INTEGER))


def page(item: dict) -> dict:
    """A page of a listing (listing.fetch_page): `{items, page, pageSize, totalCount, totalPages}`."""
    return {"allOf": [PAGE, {"type": "object", "properties": {"items": array(item)}}]}


def items(item: dict) -> dict:
    """`{items: [...]}`: an unpaginated list."""
    return answer(items=array(item))

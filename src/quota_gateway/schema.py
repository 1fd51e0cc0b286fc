"""Declarative request shapes: one definition both validates input and documents it in OpenAPI.

A field raises ApiError(400, "invalid_field" | "missing_field", ...) naming the JSON path, so a
client always learns which field was wrong and why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

_MISSING = object()
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,18}")


class _Unset:
    """Default for fields whose absence differs from null (PATCH semantics)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def _invalid(path: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{path}: {message}", field=path)


@dataclass
class Field:
    required: bool = False
    default: Any = None
    nullable: bool = False
    description: str = ""

    def parse(self, value: Any, path: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def json_schema(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _doc(self, schema: dict) -> dict:
        if self.description:
            schema["description"] = self.description
        if self.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema


@dataclass
class Str(Field):
    min_len: int = 0
    max_len: int = 256
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    strip: bool = True

    def parse(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _invalid(path, "must be a string")
        if self.strip:
            value = value.strip()
        if "\x00" in value:  # PostgreSQL text cannot hold NUL
            raise _invalid(path, "must not contain NUL characters")
        if len(value) < self.min_len:
            raise _invalid(path, "must not be empty" if self.min_len == 1 else f"must be at least {self.min_len} characters")
        if len(value) > self.max_len:
            raise _invalid(path, f"must be at most {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise _invalid(path, f"must be one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _invalid(path, "has an invalid format")
        return value

    def json_schema(self) -> dict:
        schema: dict = {"type": "string", "maxLength": self.max_len}
        if self.min_len:
            schema["minLength"] = self.min_len
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.pattern:
            schema["pattern"] = f"^{self.pattern}$"
        return self._doc(schema)


@dataclass
class Email(Str):
    max_len: int = 254
    min_len: int = 3

    def parse(self, value: Any, path: str) -> str:
        value = super().parse(value, path)
        local, sep, domain = value.rpartition("@")
        if not sep or not local or "." not in domain or any(c.isspace() for c in value):
            raise _invalid(path, "must be an e-mail address")
        return value

    def json_schema(self) -> dict:
        schema = super().json_schema()
        schema.setdefault("format", "email")
        return schema


@dataclass
class Int(Field):
    minimum: int | None = None
    maximum: int | None = 2**53 - 1

    def parse(self, value: Any, path: str) -> int:
        # bool is an int subclass in Python; on the wire it is not a number. A number written with a
        # fraction or exponent (2.0, 2e0) is refused too: integers are written as integers.
        if type(value) is not int:
            raise _invalid(path, "must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise _invalid(path, f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise _invalid(path, f"must be at most {self.maximum}")
        return value

    def json_schema(self) -> dict:
        schema: dict = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._doc(schema)


@dataclass
class Bool(Field):
    def parse(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise _invalid(path, "must be true or false")
        return value

    def json_schema(self) -> dict:
        return self._doc({"type": "boolean"})


@dataclass
class List(Field):
    item: Field = field(default_factory=Str)
    max_items: int = 1000

    def parse(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise _invalid(path, "must be an array")
        if len(value) > self.max_items:
            raise _invalid(path, f"must have at most {self.max_items} items")
        return [self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def json_schema(self) -> dict:
        return self._doc({"type": "array", "items": self.item.json_schema(), "maxItems": self.max_items})


@dataclass
class Object(Field):
    """A JSON object with known members; unknown members are ignored (clients send extras)."""

    members: dict[str, Field] = field(default_factory=dict)

    def parse(self, value: Any, path: str = "body") -> dict:
        if not isinstance(value, dict):
            raise ApiError(400, "invalid_body" if path == "body" else "invalid_field",
                           f"{path}: must be a JSON object", field=path)
        out = {}
        for name, spec in self.members.items():
            raw = value.get(name, _MISSING)
            sub = name if path == "body" else f"{path}.{name}"
            if raw is _MISSING or (raw is None and not spec.nullable):
                if spec.required:
                    raise ApiError(400, "missing_field", f"{sub}: is required", field=sub)
                out[name] = spec.default
            elif raw is None:
                out[name] = None
            else:
                out[name] = spec.parse(raw, sub)
        return out

    def json_schema(self) -> dict:
        required = [n for n, f in self.members.items() if f.required]
        schema: dict = {"type": "object", "properties": {n: f.json_schema() for n, f in self.members.items()}}
        if required:
            schema["required"] = required
        return self._doc(schema)


def obj(**members: Field) -> Object:
    return Object(members=members)


@dataclass
class Query:
    """Query-string parameters: strings arrive as text and are converted per field."""

    params: dict[str, Field]

    def parse(self, items: Iterable[tuple[str, str]]) -> dict:
        raw = dict(items)
        out = {}
        for name, spec in self.params.items():
            text = raw.get(name)
            if text is None or text == "":
                if spec.required:
                    raise ApiError(400, "missing_field", f"{name}: is required", field=name)
                out[name] = spec.default
                continue
            out[name] = spec.parse(_from_text(spec, text, name), name)
        return out

    def openapi(self) -> list[dict]:
        return [{"name": n, "in": "query", "required": f.required, "schema": f.json_schema()}
                for n, f in self.params.items()]


def _from_text(spec: Field, text: str, name: str) -> Any:
    if isinstance(spec, Int):
        # ASCII digits only: int() also reads ' 1', '1_0', '+1' and other scripts' digits ('١').
        if not _INTEGER_TEXT.fullmatch(text):
            raise _invalid(name, "must be an integer")
        return int(text)
    if isinstance(spec, Bool):
        lowered = text.lower()
        if lowered in {"true", "1"}:
            return True
        if lowered in {"false", "0"}:
            return False
        raise _invalid(name, "must be true or false")
    return text

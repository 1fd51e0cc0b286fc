"""Every answer the tests receive, held against /openapi.json: the status must be documented for
the operation, and a documented body must match its schema, with no member the schema does not
name (answers are checked as closed objects; the document leaves them open for additions, and
the error body declares itself open: codes add members such as `field`). The suite's requests carry real data
(licenses with activations, tickets with threads, ...) that schemathesis's generated requests rarely
reach, so this is where a success body's schema meets the answers it describes.

`running_app` (conftest) hooks a `DocumentCheck` into its httpx client and fails the test at exit
on any mismatch. Paths outside the document (the web UI, /openapi.json) are not checked.
"""

from __future__ import annotations

import re

import httpx
import jsonschema_rs
import orjson

# Answers the document does not list per operation, as any HTTP server gives them.
_GENERIC_STATUSES = {405, 415}
# Over the whole run: "METHOD /path" of every operation, and of those whose 2xx body was checked.
OPERATIONS: set[str] = set()
SUCCESSES_CHECKED: set[str] = set()


class DocumentCheck:
    def __init__(self, document: dict) -> None:
        self.components = _closed(document.get("components", {}))
        self.operations: list[tuple[re.Pattern, str, str, dict]] = []  # (path pattern, method, path, operation)
        for path, ops in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
            for method, op in ops.items():
                self.operations.append((pattern, method.upper(), path, op))
                OPERATIONS.add(f"{method.upper()} {path}")
        # a literal path before a templated one of the same shape (/api/apilicense/import before {api_key})
        self.operations.sort(key=lambda entry: entry[0].pattern.count("[^/]+"))
        self._validators: dict[int, jsonschema_rs.Validator] = {}
        self.violations: list[str] = []

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        """(the document's path, the operation) answering `method` on `path`."""
        for pattern, op_method, template, op in self.operations:
            if op_method == method and pattern.match(path):
                return template, op
        return None

    def problem(self, method: str, path: str, status: int, content_type: str, body: bytes) -> str | None:
        """What is wrong with this answer according to the document, or None."""
        found = self.operation(method, path)
        if found is None or status in _GENERIC_STATUSES:
            return None
        template, op = found
        documented = op["responses"].get(str(status))
        if documented is None:
            return f"status {status} is not documented (body {body[:200]!r})"
        content = documented.get("content")
        if not content:
            return None
        media = content_type.split(";")[0].strip()
        if media not in content:
            return f"status {status}: content type {media!r}, documented {sorted(content)}"
        schema = content[media]["schema"]
        if not media.endswith("json"):  # text (PEM, a key, metrics): the media type is what there is to check
            if 200 <= status < 300:
                SUCCESSES_CHECKED.add(f"{method} {template}")
            return None
        try:
            instance = orjson.loads(body)
        except orjson.JSONDecodeError:
            return f"status {status}: body is not JSON: {body[:200]!r}"
        validator = self._validator(schema)
        errors = [f"{'/'.join(map(str, e.instance_path)) or '(body)'}: {e.message}"[:300]
                  for e in validator.iter_errors(instance)]
        if errors:
            return f"status {status}: {'; '.join(errors[:5])}; body {body[:400]!r}"
        if 200 <= status < 300:
            SUCCESSES_CHECKED.add(f"{method} {template}")
        return None

    def _validator(self, schema: dict) -> jsonschema_rs.Validator:
        found = self._validators.get(id(schema))
        if found is None:
            root = {"components": self.components, "allOf": [_closed(schema)]}
            found = self._validators[id(schema)] = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        return found

    def __repr__(self) -> str:
        return f"DocumentCheck({len(self.operations)} operations)"

    async def on_response(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        problem = self.problem(request.method, request.url.path, response.status_code,
                               response.headers.get("content-type", ""), response.content)
        if problem is not None:
            self.violations.append(f"{request.method} {request.url.path}: {problem}")


def _closed(node):
    """`node` with every answer object (declared members, some required) closed to other members."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if "properties" in node and "required" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out

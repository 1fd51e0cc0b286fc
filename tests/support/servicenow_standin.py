"""A loopback stand-in for a ServiceNow instance: a contract fake, not ServiceNow.

It speaks what ServiceNow documents for the REST Table API and the OAuth endpoint, so the gateway
is tested against that contract rather than against its own client:
- `POST /api/now/table/{table}` takes a JSON body and answers **201** with a `Location` header and
  `{"result": {...record...}}` (every field a string; `sys_id` 32 hex characters; `number`
  `INC` and seven digits for incidents);
- `GET /api/now/table/{table}` answers `{"result": [...]}` and understands `sysparm_query`
  (`field=value` terms joined by `^`), `sysparm_fields` and `sysparm_limit`;
- `PATCH /api/now/table/{table}/{sys_id}` updates fields; the journal fields `work_notes` and
  `comments` append an entry instead (and read back empty, as journal fields do);
- setting an incident's `state` to 6 (Resolved) or 7 (Closed) without `close_code` and
  `close_notes` is `403` "Operation Failed" (the incident data policy);
- an unknown table is `400 {"error": {"message": "Invalid table <name>", "detail": null},
  "status": "failure"}`; an unknown record `404` ("No Record found"); no or bad credentials
  `401` ("User Not Authenticated"); a user without rights `403` ("User Not Authorized");
- `POST /oauth_token.do` takes only `application/x-www-form-urlencoded` (JSON is refused),
  grants `client_credentials` and `password`, and answers `{"access_token", "refresh_token",
  "scope": "useraccount", "token_type": "Bearer", "expires_in": 1799}`; a refusal is
  `401 {"error_description": "access_denied", "error": "server_error"}`.

An agent's change (`agent_update`) and every update through the API run the business rule the
README shows: its would-be post to the gateway is kept in `rule_posts` for the test to send.

Faults on command (`fail`): a status with ServiceNow's failure body, a delay longer than the
client waits (optionally after the request took effect: the "answer lost" case), or dropping
the connection. Every request is recorded for the tests to check.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loopback import LoopbackServer

JOURNAL_FIELDS = ("work_notes", "comments")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def failure(status: int, message: str, detail: str | None = None) -> Response:
    return _json({"error": {"message": message, "detail": detail}, "status": "failure"}, status)


_UNAUTHENTICATED = (401, "User Not Authenticated", "Required to provide Auth information")
_UNAUTHORIZED = (403, "User Not Authorized", "Failed API level ACL Validation")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


@dataclass
class Fault:
    method: str | None
    path_prefix: str
    status: int = 500
    delay: float = 0.0  # seconds to sleep before answering
    apply_first: bool = False  # with a delay: do the work, then stall (the answer is lost)
    times: int = 1


@dataclass
class Instance:
    """The instance's state: tables, users, OAuth clients, issued tokens, recorded requests."""

    url: str = ""
    tables: dict[str, dict[str, dict[str, str]]] = field(default_factory=lambda: {"incident": {}})
    journal: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # sys_id -> [(field, text)]
    users: dict[str, str] = field(default_factory=lambda: {"integration": "s3cret-Passw0rd"})
    readonly_users: set[str] = field(default_factory=set)
    clients: dict[str, str] = field(default_factory=lambda: {"client-abc": "client-secret-0123456789"})
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> user (or client id)
    token_requests: int = 0
    # The README's business rule ("after update" on incidents whose correlation_display is
    # quota_gateway): the body it would post to the gateway, collected here for the test to send.
    rule_posts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    counter: int = 10000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str | None = None, path_prefix: str = "/api/now/", *, status: int = 500,
             delay: float = 0.0, apply_first: bool = False, times: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(method, path_prefix, status, delay, apply_first, times))

    def revoke_tokens(self) -> None:
        """As if every access token expired on the instance's side."""
        with self.lock:
            self.tokens.clear()

    def table_requests(self, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/api/now/table/") and (method is None or r.method == method)]

    def records(self, table: str = "incident") -> list[dict[str, str]]:
        return list(self.tables[table].values())

    def notes(self, sys_id: str, journal_field: str = "work_notes") -> list[str]:
        return [text for name, text in self.journal.get(sys_id, []) if name == journal_field]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.method is None or fault.method == method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # --- auth ----------------------------------------------------------------------------------

    def _who(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                return None
            return user if self.users.get(user) == password else None
        if scheme.lower() == "bearer":
            return self.tokens.get(value)
        return None

    # --- endpoints -----------------------------------------------------------------------------

    async def oauth_token(self, request: Request) -> Response:
        denied = _json({"error_description": "access_denied", "error": "server_error"}, 401)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return denied
        form = dict(parse_qsl((await request.body()).decode()))
        self.token_requests += 1
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if self.clients.get(client_id) != secret:
            return denied
        grant = form.get("grant_type")
        if grant == "password":
            user = form.get("username", "")
            if self.users.get(user) != form.get("password"):
                return denied
            who = user
        elif grant == "client_credentials":
            who = client_id
        else:
            return _json({"error_description": "access_denied", "error": "unsupported_grant_type"}, 400)
        token = secrets.token_urlsafe(48)
        self.tokens[token] = who
        return _json({"access_token": token, "refresh_token": secrets.token_urlsafe(48), "scope": "useraccount",
                      "token_type": "Bearer", "expires_in": 1799})

    def _table(self, name: str) -> dict[str, dict[str, str]] | None:
        return self.tables.get(name)

    def _new_record(self, table: str, values: dict[str, Any]) -> dict[str, str]:
        self.counter += 1
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        sys_id = secrets.token_hex(16)
        record = {"sys_id": sys_id, "number": f"INC{self.counter:07d}" if table == "incident" else "",
                  "state": "1", "urgency": "3", "impact": "3", "sys_created_on": now, "sys_updated_on": now,
                  "sys_created_by": "integration", "sys_mod_count": "0"}
        self._write(record, values)
        return record

    def _write(self, record: dict[str, str], values: dict[str, Any]) -> None:
        for name, value in values.items():
            text = "" if value is None else str(value)
            if name in JOURNAL_FIELDS:
                if text:
                    self.journal.setdefault(record["sys_id"], []).append((name, text))
                record[name] = ""
            elif name != "sys_id":
                record[name] = text

    @staticmethod
    def _fields(record: dict[str, str], wanted: str | None) -> dict[str, str]:
        if not wanted:
            return dict(record)
        return {name: record.get(name, "") for name in wanted.split(",")}

    async def table(self, request: Request) -> Response:
        body = await request.body()
        method, path = request.method, request.url.path
        self.requests.append(Recorded(method, path, dict(request.query_params), dict(request.headers), body))
        fault = self._take_fault(method, path)
        if fault is not None and not fault.apply_first:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return failure(fault.status, "Injected failure", "the stand-in was told to fail")
        answer = self._handle(request, method, body)
        if fault is not None:  # applied, then the answer stalls past the client's patience
            await asyncio.sleep(fault.delay)
        return answer

    def _handle(self, request: Request, method: str, body: bytes) -> Response:
        who = self._who(request)
        if who is None:
            return failure(*_UNAUTHENTICATED)
        name = request.path_params["table"]
        table = self._table(name)
        if table is None:
            return failure(400, f"Invalid table {name}")
        if who in self.readonly_users and method != "GET":
            return failure(*_UNAUTHORIZED)
        sys_id = request.path_params.get("sys_id")
        fields = request.query_params.get("sysparm_fields")
        if method == "GET" and sys_id is None:
            found = list(table.values())
            for term in filter(None, request.query_params.get("sysparm_query", "").split("^")):
                key, _, value = term.partition("=")
                found = [r for r in found if r.get(key) == value]
            limit = int(request.query_params.get("sysparm_limit", "10000"))
            return _json({"result": [self._fields(r, fields) for r in found[:limit]]})
        if method in ("POST", "PATCH", "PUT") and request.headers.get("content-type", "").split(";")[0] != "application/json":
            return failure(415, "Unsupported Media Type")
        if method == "POST":
            values = orjson.loads(body)
            record = self._new_record(name, values)
            table[record["sys_id"]] = record
            location = f"{request.base_url}api/now/table/{name}/{record['sys_id']}"
            return _json({"result": self._fields(record, fields)}, 201, {"Location": location})
        record = table.get(sys_id or "")
        if record is None:
            return failure(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        if method == "GET":
            return _json({"result": self._fields(record, fields)})
        values = orjson.loads(body)
        refused = _data_policy(name, record, values)
        if refused is not None:
            return refused
        self._update(record, values, who)
        return _json({"result": self._fields(record, fields)})

    def _update(self, record: dict[str, str], values: dict[str, Any], user: str) -> None:
        self._write(record, values)
        record["sys_mod_count"] = str(int(record["sys_mod_count"]) + 1)
        record["sys_updated_by"] = user
        self._business_rule(record, values, user)

    def agent_update(self, sys_id: str, values: dict[str, Any], agent: str = "Jane Agent") -> None:
        """An agent changes the incident in ServiceNow (a comment, the state): the write, then the rule."""
        record = self.tables["incident"][sys_id]
        refused = _data_policy("incident", record, values)
        if refused is not None:
            raise AssertionError("the data policy refuses this update")
        self._update(record, values, agent)

    def _business_rule(self, record: dict[str, str], values: dict[str, Any], user: str) -> None:
        if record.get("correlation_display") != "quota_gateway":
            return
        body = {"sys_id": record["sys_id"], "number": record["number"], "correlation_id": record.get("correlation_id", ""),
                "state": record["state"], "sys_mod_count": record["sys_mod_count"]}
        if values.get("comments"):  # current.comments.changes(): then getJournalEntry(1), as ServiceNow renders it
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            body["comments"] = f"{stamp} - {user} (Additional comments)\n{values['comments']}\n\n"
        self.rule_posts.append(body)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/oauth_token.do", self.oauth_token, methods=["POST"]),
            Route("/api/now/table/{table}", self.table, methods=["GET", "POST"]),
            Route("/api/now/table/{table}/{sys_id}", self.table, methods=["GET", "PATCH", "PUT"]),
        ])


def _data_policy(table: str, record: dict[str, str], values: dict[str, Any]) -> Response | None:
    """The incident data policy of current releases: Resolved (6) and Closed (7) need a resolution
    code and resolution notes, in the update or already on the record; ServiceNow refuses the
    update with 403 "Operation Failed" otherwise."""
    if table != "incident" or str(values.get("state", "")) not in ("6", "7"):
        return None
    merged = {**record, **{k: str(v) for k, v in values.items()}}
    if merged.get("close_code") and merged.get("close_notes"):
        return None
    return failure(403, "Operation Failed",
                   "Data Policy Exception: \n The following fields are mandatory: Resolution code, Resolution notes")


class StandinServer:
    """The stand-in on loopback (tests/loopback.py); `reset()` gives it an empty instance."""

    def __init__(self, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        self.loopback = LoopbackServer(self._app, "ServiceNow stand-in", ssl_certfile=ssl_certfile,
                                       ssl_keyfile=ssl_keyfile)
        self.port, self.url = self.loopback.port, self.loopback.url
        self.instance = Instance(url=self.url)
        self._asgi = self.instance.app()

    async def _app(self, scope: Any, receive: Any, send: Any) -> None:
        await self._asgi(scope, receive, send)

    def start(self) -> StandinServer:
        self.loopback.start()
        return self

    def reset(self) -> Instance:
        self.instance = Instance(url=self.url)
        self._asgi = self.instance.app()
        return self.instance

    def stop(self) -> None:
        self.loopback.stop()

"""A ServiceNow Table API client (httpx): create, find, update records; OAuth 2.0 or Basic auth.

What it relies on, as ServiceNow documents it:
- `POST /api/now/table/{table}` (JSON) answers 201 with `{"result": {...record...}}`;
  `PATCH /api/now/table/{table}/{sys_id}` and `GET /api/now/table/{table}?sysparm_query=...`
  answer 200 with `{"result": {...}}` / `{"result": [...]}`.
- Failures answer `{"error": {"message": ..., "detail": ...}, "status": "failure"}`; an unknown
  table is a 400 whose message reads "Invalid table <name>".
- OAuth: `POST /oauth_token.do`, form-encoded (JSON is refused), grant `client_credentials` or
  `password`; the answer carries `access_token` and `expires_in` (1,800 s by default); requests
  then send `Authorization: Bearer <token>`.

Every failure becomes a ServiceNowError with a stable code (`FAILURES`), so the ticket's sync state
and the connection test can say what went wrong.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from ..clock import Clock
from ..events import webhooks

FAILURES = {
    "dns_failed": "the instance's host name does not resolve",
    "tls_failed": "the TLS handshake failed (certificate not trusted, expired or for another host)",
    "connect_failed": "the instance refused or dropped the connection",
    "timeout": "the instance did not answer in time",
    "oauth_failed": "oauth_token.do refused the client credentials",
    "unauthorized": "the instance refused the credentials (401)",
    "forbidden": "the user lacks the rights (ACL) for this table (403)",
    "table_not_found": "the table does not exist on the instance",
    "record_not_found": "the record does not exist (or ACLs hide it)",
    "rate_limited": "the instance is rate limiting requests (429)",
    "server_error": "the instance failed (5xx)",
    "bad_response": "the instance answered something the Table API does not",
    "destination_refused": "the instance's host is or resolves to a loopback, link-local or private address",
}

# A cached OAuth token is used until this many seconds before it expires.
TOKEN_MARGIN_SECONDS = 60.0


class ServiceNowError(Exception):
    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Instance:
    """One tenant's decrypted connection settings."""

    url: str  # https://<name>.service-now.com, no trailing slash
    table: str
    auth_type: str  # basic | oauth
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    cache_key: str = ""  # tenant and settings revision: a changed setting never reuses an old token

    def table_path(self, sys_id: str | None = None) -> str:
        return f"/api/now/table/{self.table}" + (f"/{sys_id}" if sys_id else "")


def _connect_failure(exc: BaseException) -> ServiceNowError:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return ServiceNowError("dns_failed", f"{FAILURES['dns_failed']}: {seen}")
        if isinstance(seen, ssl.SSLError):
            return ServiceNowError("tls_failed", f"{FAILURES['tls_failed']}: {seen}")
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "SSL" in text or "CERTIFICATE" in text:
        return ServiceNowError("tls_failed", f"{FAILURES['tls_failed']}: {text}")
    return ServiceNowError("connect_failed", f"{FAILURES['connect_failed']}: {text or type(exc).__name__}")


def _error_text(response: httpx.Response) -> str:
    """The `{"error": {"message", "detail"}}` of a failure, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, detail = error.get("message") or "", error.get("detail") or ""
        return f"{message} ({detail})" if detail else str(message)
    if isinstance(error, str):  # oauth_token.do: {"error": ..., "error_description": ...}
        return f"{error}: {body.get('error_description', '')}".rstrip(": ")
    return response.text[:300]


def _failure(response: httpx.Response, *, record: bool = False) -> ServiceNowError:
    status = response.status_code
    text = _error_text(response)
    if status == 401:
        code = "unauthorized"
    elif status == 403:
        code = "forbidden"
    elif status == 400 and "invalid table" in text.lower():
        code = "table_not_found"
    elif status == 404:
        code = "record_not_found" if record else "table_not_found"
    elif status == 429:
        code = "rate_limited"
    elif status >= 500:
        code = "server_error"
    else:
        code = "bad_response"
    return ServiceNowError(code, f"HTTP {status}: {text}" if text else f"HTTP {status}", status=status)


def _result(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        raise ServiceNowError("bad_response", f"HTTP {response.status_code}: not JSON",
                              status=response.status_code) from None
    if not isinstance(body, dict) or "result" not in body:
        raise ServiceNowError("bad_response", f"HTTP {response.status_code}: no `result` in the answer",
                              status=response.status_code)
    return body["result"]


class ServiceNowClient:
    """One per process: an httpx connection pool and the OAuth tokens of every tenant's instance."""

    def __init__(self, clock: Clock, *, allow_private: bool, timeout: float = 10.0) -> None:
        self.clock = clock
        # Off: every request goes to an address the webhooks' SSRF guard allows, pinned (no second lookup).
        self.allow_private = allow_private
        # trust_env off: no proxy or CA bundle from the environment decides where tickets go.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- OAuth ---------------------------------------------------------------------------------

    def forget_token(self, instance: Instance) -> None:
        self._tokens.pop(instance.cache_key, None)

    async def token(self, instance: Instance, *, fresh: bool = False) -> str:
        """A bearer token for the instance: the cached one until shortly before it expires."""
        lock = self._token_locks.setdefault(instance.cache_key, asyncio.Lock())
        async with lock:  # concurrent requests wait for one token request, not one each
            cached = self._tokens.get(instance.cache_key)
            if cached is not None and not fresh and self.clock.now() < cached[1]:
                return cached[0]
            form = {"grant_type": "client_credentials", "client_id": instance.client_id or "",
                    "client_secret": instance.client_secret or ""}
            if instance.username:
                form.update(grant_type="password", username=instance.username, password=instance.password or "")
            response = await self._send("POST", instance.url + "/oauth_token.do", data=form,
                                        headers={"Accept": "application/json"})
            if response.status_code in (400, 401, 403):
                raise ServiceNowError("oauth_failed", f"HTTP {response.status_code}: {_error_text(response)}",
                                      status=response.status_code)
            if response.status_code != 200:
                raise _failure(response)
            try:
                body = response.json()
                access, lifetime = body["access_token"], float(body.get("expires_in", 1800))
            except (ValueError, KeyError, TypeError):
                raise ServiceNowError("bad_response", "oauth_token.do answered without an access_token",
                                      status=response.status_code) from None
            expires = self.clock.now() + max(lifetime - TOKEN_MARGIN_SECONDS, lifetime / 2)
            self._tokens[instance.cache_key] = (str(access), expires)
            return str(access)

    # --- requests ------------------------------------------------------------------------------

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        host = (httpx.URL(url).host or "").rstrip(".").lower()
        if host == "invalid" or host.endswith(".invalid"):
            # RFC 6761 6.4: resolvers should answer "invalid" names negatively at once; no query is sent.
            raise ServiceNowError("dns_failed", f"{FAILURES['dns_failed']}: {host} is a special-use name")
        try:
            if not self.allow_private:
                try:
                    pinned = await webhooks.pin(url, allow_private=False)
                except webhooks.DestinationRefused as exc:
                    raise ServiceNowError("destination_refused", f"{FAILURES['destination_refused']}: {exc}") from None
                url, extensions = pinned.url, pinned.extensions
                kwargs["headers"] = {**kwargs.get("headers", {}), "Host": pinned.host_header}
                if extensions:
                    kwargs["extensions"] = extensions
            return await self.http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceNowError("timeout", f"{FAILURES['timeout']} ({type(exc).__name__})") from None
        except (httpx.ConnectError, httpx.ProxyError) as exc:
            raise _connect_failure(exc) from None
        except httpx.HTTPError as exc:
            raise ServiceNowError("connect_failed", f"{FAILURES['connect_failed']}: {exc or type(exc).__name__}") from None

    async def request(self, instance: Instance, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One Table API call; with OAuth a 401 gets one new token and one more try."""
        headers = {"Accept": "application/json"}
        if instance.auth_type == "basic":
            kwargs["auth"] = httpx.BasicAuth(instance.username or "", instance.password or "")
            return await self._send(method, instance.url + path, headers=headers, **kwargs)
        headers["Authorization"] = "Bearer " + await self.token(instance)
        response = await self._send(method, instance.url + path, headers=headers, **kwargs)
        if response.status_code != 401:
            return response
        headers["Authorization"] = "Bearer " + await self.token(instance, fresh=True)
        return await self._send(method, instance.url + path, headers=headers, **kwargs)

    async def create_record(self, instance: Instance, fields: dict[str, str]) -> dict:
        response = await self.request(instance, "POST", instance.table_path(), json=fields)
        if response.status_code not in (200, 201):
            raise _failure(response)
        return self._record(response)

    async def update_record(self, instance: Instance, sys_id: str, fields: dict[str, str]) -> dict:
        response = await self.request(instance, "PATCH", instance.table_path(sys_id), json=fields)
        if response.status_code != 200:
            raise _failure(response, record=True)
        return self._record(response)

    async def find_by_correlation(self, instance: Instance, correlation_id: str) -> dict | None:
        """The record whose correlation_id is ours (a create that timed out may have landed)."""
        response = await self.request(instance, "GET", instance.table_path(),
                                      params={"sysparm_query": f"correlation_id={correlation_id}",
                                              "sysparm_fields": "sys_id,number,urgency,correlation_id",
                                              "sysparm_limit": "1"})
        if response.status_code != 200:
            raise _failure(response)
        found = _result(response)
        if not isinstance(found, list):
            raise ServiceNowError("bad_response", "a table query answered no list", status=200)
        return found[0] if found and isinstance(found[0], dict) else None

    async def check(self, instance: Instance) -> None:
        """Read one record of the table: proves the host, TLS, credentials and the table."""
        if instance.auth_type == "oauth":
            await self.token(instance, fresh=True)
        response = await self.request(instance, "GET", instance.table_path(),
                                      params={"sysparm_limit": "1", "sysparm_fields": "sys_id"})
        if response.status_code != 200:
            raise _failure(response)
        _result(response)

    @staticmethod
    def _record(response: httpx.Response) -> dict:
        record = _result(response)
        if not isinstance(record, dict) or not isinstance(record.get("sys_id"), str) or not record["sys_id"]:
            raise ServiceNowError("bad_response", "the answer's result has no sys_id", status=response.status_code)
        return record

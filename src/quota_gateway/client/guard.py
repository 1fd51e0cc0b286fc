"""The middleware's decisions, shared by the ASGI and WSGI wrappers: where the key comes from,
what a verdict answers to the end-user, and what happens while the gateway is unreachable."""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson

from ._wire import GatewayError, GatewayUnavailable
from .results import ApiKeyValidation

log = logging.getLogger("quota_gateway.client")

OnError = Literal["open", "closed"]
C = TypeVar("C")
MAX_KEY_LENGTH = 128  # the gateway's limit; longer is refused here without a call


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the middleware sends instead of calling the app."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


def reply(status: int, error: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    body = orjson.dumps({"error": error, "message": message})
    return Reply(status, body, (("content-type", "application/json"), *headers))


MISSING_KEY = reply(401, "missing_api_key", "this request needs an API key")
INVALID_KEY = reply(401, "invalid_api_key", "unknown API key")
UNAVAILABLE = reply(503, "quota_unavailable", "the API key cannot be checked right now; retry", (("retry-after", "1"),))
MISCONFIGURED = reply(500, "quota_misconfigured", "the API key check is misconfigured")


class GraceCache:
    """Recent allows, by key digest, for `seconds`: while the gateway is unreachable a key that
    passed a moment ago keeps passing (`from_cache=True`). A refusal forgets the key at once."""

    def __init__(self, seconds: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, ApiKeyValidation]] = OrderedDict()

    @staticmethod
    def _id(api_key: str) -> bytes:
        return hashlib.sha256(api_key.encode()).digest()

    def remember(self, api_key: str, result: ApiKeyValidation) -> None:
        if self.seconds <= 0:
            return
        key = self._id(api_key)
        if result.is_valid:
            self._entries[key] = (self._clock() + self.seconds, result)
            self._entries.move_to_end(key)
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self._entries.pop(key, None)

    def recall(self, api_key: str) -> ApiKeyValidation | None:
        found = self._entries.get(self._id(api_key))
        if found is None:
            return None
        if found[0] < self._clock():
            self._entries.pop(self._id(api_key), None)
            return None
        return found[1].cached()


def client_or_new(client: C | None, make: Callable[..., C], base_url: str | None, token: str | None,
                  verify: bool | str | ssl.SSLContext) -> C:
    """The middleware's client: the one given, else a new one for `base_url` and `token`."""
    if client is not None:
        return client
    if not base_url or not token:
        raise ValueError("pass a client, or base_url and token")
    return make(base_url, token, verify=verify)


class Guard:
    """Configuration and decisions of one middleware instance."""

    def __init__(self, *, header: str | None, query_param: str | None, scheme: str | None,
                 units: int | Callable[[Any], int], consume: bool, on_error: OnError, grace_seconds: float,
                 exclude_paths: tuple[str, ...], clock: Callable[[], float]) -> None:
        if on_error not in ("open", "closed"):
            raise ValueError("on_error must be 'open' or 'closed'")
        if header is None and query_param is None:
            raise ValueError("give a header or a query parameter to read the API key from")
        self.header = header.lower() if header else None
        self.query_param = query_param
        self.scheme = scheme.lower() + " " if scheme else None
        self.units = units
        self.consume = consume
        self.on_error = on_error
        self.exclude_paths = exclude_paths
        self.grace = GraceCache(grace_seconds, clock=clock)
        # Explicit and counted: how often the policy, not the gateway, decided.
        self.stats = {"allowed_open": 0, "allowed_grace": 0, "refused_unavailable": 0}

    def excluded(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.exclude_paths)

    def clean(self, raw: str | None) -> str | None:
        """The key from a header or query value (scheme stripped), or None if absent."""
        if raw is None:
            return None
        raw = raw.strip()
        if self.scheme is not None:
            if raw[:len(self.scheme)].lower() != self.scheme:
                return None
            raw = raw[len(self.scheme):].strip()
        return raw or None

    def units_for(self, request: Any) -> int:
        return self.units(request) if callable(self.units) else self.units

    @staticmethod
    def plausible(api_key: str) -> bool:
        return len(api_key) <= MAX_KEY_LENGTH and "\x00" not in api_key

    def verdict(self, api_key: str, result: ApiKeyValidation) -> Reply | None:
        """None lets the request through; else the end-user's answer, with the gateway's
        Retry-After and RateLimit fields on a 429."""
        self.grace.remember(api_key, result)
        if result.is_valid:
            return None
        code = result.error_code or "invalid_api_key"
        message = result.error_message or code
        if result.status == 404 or code == "not_found":
            return INVALID_KEY
        if result.status == 429:
            return reply(429, code, message, tuple(result.headers.items()))
        return reply(403, code, message)

    def judge(self, api_key: str, outcome: ApiKeyValidation | GatewayError | GatewayUnavailable,
              ) -> tuple[ApiKeyValidation | None, Reply | None]:
        """The validate call's outcome (its result, or the error it raised) as (the result the app
        sees, the end-user's answer instead of the app: None lets the request through)."""
        if isinstance(outcome, ApiKeyValidation):
            return outcome, self.verdict(api_key, outcome)
        return self.failed(api_key, outcome)

    def failed(self, api_key: str, error: Exception) -> tuple[ApiKeyValidation | None, Reply | None]:
        """The validate call raised: unreachable gateway (`unavailable`), or a refusal of the
        middleware's own call (bad token, bad input), which is a misconfiguration."""
        if isinstance(error, GatewayUnavailable):
            return self.unavailable(api_key, error)
        log.error("the quota gateway refused the middleware's call: %s", error)
        return None, MISCONFIGURED

    def unavailable(self, api_key: str, error: Exception) -> tuple[ApiKeyValidation | None, Reply | None]:
        """The gateway could not answer: a recent allow, else the on_error policy."""
        cached = self.grace.recall(api_key)
        if cached is not None:
            self.stats["allowed_grace"] += 1
            log.warning("quota gateway unreachable (%s); allowed from the grace cache", error)
            return cached, None
        if self.on_error == "open":
            self.stats["allowed_open"] += 1
            log.warning("quota gateway unreachable (%s); allowed unchecked (on_error='open')", error)
            return _UNCHECKED, None
        self.stats["refused_unavailable"] += 1
        log.warning("quota gateway unreachable (%s); refused (on_error='closed')", error)
        return None, UNAVAILABLE


_UNCHECKED = ApiKeyValidation(is_valid=True, status=0, degraded=True)

"""Typed answers of the gateway's API-key endpoints, as the client hands them to callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Response headers of a refusal that a customer backend passes on to its own caller.
RATE_LIMIT_HEADERS = ("retry-after", "ratelimit", "ratelimit-policy", "x-ratelimit-limit",
                      "x-ratelimit-remaining", "x-ratelimit-reset")


@dataclass(frozen=True, slots=True)
class Quota:
    """The lifetime quota in units; `limit`/`remaining` are None when the key has none."""

    limit: int | None
    used: int
    remaining: int | None


@dataclass(frozen=True, slots=True)
class Window:
    """One counted window (`calls_minute`, `units_day`, ...), calendar-aligned in UTC."""

    limit: int
    used: int
    remaining: int
    resets_at: str


@dataclass(frozen=True, slots=True)
class ApiKeyValidation:
    """The gateway's verdict on one API key.

    `is_valid` False comes with `error_code` (`not_found`, `revoked`, `expired`,
    `quota_exhausted`, `rate_limit_minute|hour|day|month`) and the HTTP `status` (404, 403, 429).
    `headers` holds the refusal's `Retry-After` / `RateLimit*` fields (lower-case names).
    `from_cache`: an allow remembered from a recent check, used while the gateway was unreachable;
    `degraded`: allowed without any check because the middleware fails open.
    """

    is_valid: bool
    status: int
    error_code: str | None = None
    error_message: str | None = None
    units_consumed: int = 0
    quota: Quota | None = None
    rate_limits: Mapping[str, Window] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    expires_at: str | None = None
    retry_after: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    from_cache: bool = False
    degraded: bool = False

    @classmethod
    def from_response(cls, status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> ApiKeyValidation:
        passed = {name: headers[name] for name in RATE_LIMIT_HEADERS if name in headers}
        retry_after = body.get("retryAfterSeconds")
        return cls(is_valid=bool(body.get("isValid")), status=status, error_code=body.get("errorCode"),
                   error_message=body.get("errorMessage"), units_consumed=int(body.get("unitsConsumed") or 0),
                   quota=_quota(body.get("quota")), rate_limits=_windows(body.get("rateLimits")),
                   features=tuple(body.get("features") or ()), expires_at=body.get("expiresAt"),
                   retry_after=int(retry_after) if retry_after is not None else None, headers=passed)

    def cached(self) -> ApiKeyValidation:
        return replace(self, from_cache=True)


@dataclass(frozen=True, slots=True)
class UsageDay:
    date: str
    units: int


@dataclass(frozen=True, slots=True)
class ApiKeyUsage:
    """Lifetime and window usage now, and units by day (written behind, up to a flush interval late)."""

    api_key: str
    quota: Quota | None
    rate_limits: Mapping[str, Window]
    history: tuple[UsageDay, ...]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ApiKeyUsage:
        return cls(api_key=body.get("apiKey", ""), quota=_quota(body.get("quota")),
                   rate_limits=_windows(body.get("rateLimits")),
                   history=tuple(UsageDay(d["date"], int(d["units"])) for d in body.get("history") or ()))


def _quota(raw: Any) -> Quota | None:
    if not isinstance(raw, dict):
        return None
    return Quota(limit=raw.get("limit"), used=int(raw.get("used") or 0), remaining=raw.get("remaining"))


def _windows(raw: Any) -> dict[str, Window]:
    if not isinstance(raw, dict):
        return {}
    return {name: Window(limit=int(w["limit"]), used=int(w["used"]), remaining=int(w["remaining"]),
                         resets_at=w["resetsAt"]) for name, w in raw.items()}

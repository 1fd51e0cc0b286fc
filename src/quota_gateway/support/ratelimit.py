"""Ticket creation limits in Redis: one fixed window per access token and one per e-mail address.

    qg:{sup:<tenant>}:t:<token id>:<window>       tickets created with the token in the window
    qg:{sup:<tenant>}:e:<e-mail digest>:<window>  tickets created for the address in the window

Both keys carry the tenant's hash tag, so one script checks and counts both (Redis Cluster rule).
The e-mail address is stored as a digest: no addresses in Redis key names.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import RedisError

from ..errors import ApiError
from ..formats import rediskeys
from ..formats.digests import sha256
from ..scripts import LuaScript, ScriptRunner, reply_text

LIMIT = LuaScript("support_ticket_limit")


def full_window(reply: list) -> str | None:
    """LIMIT's reply: None when the ticket was counted, else the window that is full ("token" or
    "email")."""
    return None if reply_text(reply[0]) == "OK" else reply_text(reply[1])


@dataclass(frozen=True)
class Limits:
    per_token: int
    per_email: int
    window_seconds: int


async def take(runner: ScriptRunner, limits: Limits, tenant_id: str, token_id: int, email: str, now: float) -> None:
    """Count one ticket against the token's and the address's windows, or raise 429 (or 503)."""
    window = int(now) // limits.window_seconds
    email_digest = sha256(email.strip().lower()).hex()[:24]
    prefix = rediskeys.support_limits(tenant_id)
    keys = [f"{prefix}t:{token_id}:{window}", f"{prefix}e:{email_digest}:{window}"]
    try:
        reply = await runner.run(LIMIT, keys, [limits.per_token, limits.per_email, limits.window_seconds])
    except (RedisError, OSError):  # Redis unreachable: refuse briefly rather than count nothing
        raise ApiError(503, "unavailable", "ticket creation is briefly unavailable; retry shortly",
                       headers={"Retry-After": "1"}) from None
    which = full_window(reply)
    if which is None:
        return
    retry_after = (window + 1) * limits.window_seconds - int(now)
    limit = limits.per_token if which == "token" else limits.per_email
    subject = "this access token" if which == "token" else "this e-mail address"
    raise ApiError(429, f"ticket_rate_limit_{which}",
                   f"{subject} has created {limit} tickets in the last window; retry in {retry_after} s",
                   headers={"Retry-After": str(retry_after)}, retryAfterSeconds=retry_after)

"""Failed lookups made with a valid access token (unknown API keys, activation keys), and wrong
access tokens, counted in /metrics per tenant and token; optionally limited per token.

Counting is a dictionary increment in this process (the metrics family): no Redis call, nothing
on the path of a successful validation.

The per-token limit (QG_TOKEN_FAILURES_PER_MINUTE) is off by default, on purpose: a publisher's
backend calls validate with its own users' keys through one token, so a limit on that token's
failures is a switch any of those users (or anyone attacking the publisher's API) can flip to
deny the publisher's good traffic. Publishers whose tokens only ever carry their own keys may
turn it on. It guards every route that looks a key up for the token (the hot route, and the
routes declared with `key_lookup`, which an `invalid_key` error implies): past the limit those
answer 429 before the lookup; the token's other routes are untouched. It is kept per worker process (a fixed one-minute window in memory), again to keep
Redis off the hot path: with N workers a token may fail up to N times the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ApiError
from ..principal import Principal

if TYPE_CHECKING:  # annotations only: metrics imports routing, which imports this module
    from ..clock import Clock
    from ..metrics import Metrics

API_KEY, ACTIVATION_KEY, ACCESS_TOKEN = "api_key", "activation_key", "access_token"
_WINDOW = 60


class FailedLookups:
    def __init__(self, metrics: Metrics, clock: Clock, per_token_limit: int = 0) -> None:
        self.counts = metrics.counts("qg_failed_lookups", "lookups that matched nothing, by tenant, access token "
                                     "(public id) and what was looked up", ("tenant", "token", "kind"))
        self.limit = per_token_limit
        self._clock = clock
        self._window = -1
        self._in_window: dict[int, int] = {}  # token id -> failures in the current window

    def record(self, principal: Principal | None, kind: str) -> None:
        if principal is None:  # a wrong access token: no tenant or token to name
            self.counts.inc(("", "", kind))
            return
        self.counts.inc((principal.tenant_id, principal.public_id, kind))
        if self.limit:
            self._current()[principal.token_id] = self._in_window.get(principal.token_id, 0) + 1

    def check(self, principal: Principal) -> None:
        """429 too_many_failed_lookups when the token used up its failures this minute (limit on)."""
        if self._current().get(principal.token_id, 0) >= self.limit:
            now = int(self._clock.now())
            retry_after = _WINDOW - now % _WINDOW
            raise ApiError(429, "too_many_failed_lookups",
                           "this access token made too many failed lookups this minute",
                           headers={"Retry-After": str(retry_after)}, retryAfter=retry_after)

    def _current(self) -> dict[int, int]:
        window = int(self._clock.now()) // _WINDOW
        if window != self._window:
            self._window, self._in_window = window, {}
        return self._in_window

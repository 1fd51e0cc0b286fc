"""Who is calling: the principal an access token resolves to. Low-level on purpose: routing and
the hot route read it (and a `TokenMiss`, a token not yet known), the auth package makes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

# An endpoint declared with this scope takes any valid token of the tenant (the SDK document's
# "valid token, no specific scope"); it is not a permission a token can be given.
ANY_TOKEN = "any"


@dataclass(frozen=True, slots=True)
class Principal:
    """One tenant's access token and what it may do."""

    tenant_id: str
    token_id: int
    public_id: str
    scopes: frozenset[str]
    expires_at: float | None = None

    def allows(self, scope: str) -> bool:
        return scope == ANY_TOKEN or "admin" in self.scopes or scope in self.scopes


@final  # callers tell a miss from an answer by `type(x) is TokenMiss`, the cheapest test
@dataclass(frozen=True, slots=True)
class TokenMiss:
    """A well-formed access token the in-process cache cannot answer (auth.cache.TokenCache.probe):
    parsed once there, for the lookup in PostgreSQL (TokenCache.resolve)."""

    public: str
    secret: str = field(repr=False)
    verified: Principal | None  # this token verified before (its entry is past the TTL): a re-check
    evictions: int  # the cache's eviction count at the probe

"""Who is calling: the principal an access token resolves to. Low-level on purpose: routing and
the hot route read it, the auth package makes it."""

from __future__ import annotations

from dataclasses import dataclass

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

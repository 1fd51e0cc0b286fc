"""Who is calling: the principal an access token resolves to. Low-level on purpose: routing and
the hot route read it, the auth package makes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """One tenant's access token and what it may do."""

    tenant_id: str
    token_id: int
    public_id: str
    scopes: frozenset[str]
    expires_at: float | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

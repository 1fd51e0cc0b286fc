"""Redis key prefixes. Every key of one license (or one lease pool) carries the same hash tag, so
a script touching several of them stays in one Redis Cluster slot."""

from __future__ import annotations

ROOT = "qg:"
TOKEN_INVALIDATIONS = "qg:tokens:invalidate"  # pub/sub channel: revoked tokens' public ids


def bucket(n: int) -> str:
    """`qg:{b<n>}:`: the API keys of bucket n (fastpath.api_key_bucket) and their usage."""
    return f"qg:{{b{n}}}:"


def lease_pool(pool_id: str) -> str:
    """`qg:{fl:<id>}:`: one floating key's lease pool."""
    return f"qg:{{fl:{pool_id}}}:"


def support_limits(tenant_id: str) -> str:
    """`qg:{sup:<tenant>}:`: one tenant's support-ticket creation windows (per token, per address)."""
    return f"qg:{{sup:{tenant_id}}}:"


def client_window(address: str, window_start: int) -> str:
    """`qg:{cl:<address>}:<window start>:`: one client address's request and failed-lookup windows."""
    return f"qg:{{cl:{address}}}:{window_start}:"


def negative(kind: str, scope: str) -> str:
    """`qg:neg:<kind>:<scope>:`: negative-cache entries of one kind asked in one scope (a digest follows)."""
    return f"qg:neg:{kind}:{scope}:"


LEASE_HISTORY_PATTERN = lease_pool("*") + "hist"  # SCAN pattern of every pool's history stream
LEASE_SET_PATTERN = lease_pool("*") + "leases"  # SCAN pattern of every pool's live leases


def lease_pool_id(prefix: str) -> str:
    """The pool id inside a `lease_pool` prefix."""
    return prefix.split("{fl:", 1)[1].split("}", 1)[0]

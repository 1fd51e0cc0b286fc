"""Access tokens `exo_at_<public>_<secret>`, sent as `Authorization: ExisOneApi <token>`.

Parsing is on the hot path and lives in the fast path (fastpath.parse_authorization); this
module builds and masks tokens.
"""

from __future__ import annotations

SCHEME = "ExisOneApi"
PREFIX = "exo_at_"
PUBLIC_LEN = 12
SECRET_LEN = 32


def compose(public_id: str, secret: str) -> str:
    return f"{PREFIX}{public_id}_{secret}"


def masked(public_id: str) -> str:
    """What listings show: the public part, never the secret."""
    return compose(public_id, "*" * 8)

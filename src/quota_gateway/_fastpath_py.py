"""Pure-Python twin of _fastpath.pyx: the same names, the same results, no compiler needed."""

from __future__ import annotations

_TOKEN_SCHEME = "ExisOneApi "
_TOKEN_PREFIX = "exo_at_"
_PUBLIC_LEN = 12
_SECRET_LEN = 32
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """`ExisOneApi exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if header is None or not header.startswith(_TOKEN_SCHEME):
        return None
    return parse_access_token(header[len(_TOKEN_SCHEME):].strip())


def parse_access_token(token: str) -> tuple[str, str] | None:
    """`exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if len(token) != len(_TOKEN_PREFIX) + _PUBLIC_LEN + 1 + _SECRET_LEN or not token.startswith(_TOKEN_PREFIX):
        return None
    public = token[7:7 + _PUBLIC_LEN]
    if token[7 + _PUBLIC_LEN] != "_":
        return None
    secret = token[8 + _PUBLIC_LEN:]
    if not _ALNUM.issuperset(public) or not _ALNUM.issuperset(secret):
        return None
    return public, secret

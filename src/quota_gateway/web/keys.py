"""The web front end's secrets, each derived from the master key (QG_MASTER_KEY) for one purpose.

Deriving them means no extra secret to configure, and rotating the master key signs every
browser out. One key per purpose: a leaked CSRF token never helps forge a session cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..crypto import derive_from_master


def _derive(master_key: str, purpose: str) -> bytes:
    if not master_key:
        raise RuntimeError("the web front end needs QG_MASTER_KEY (its cookie and code keys derive from it)")
    return derive_from_master(master_key, b"quota_gateway web " + purpose.encode())


@dataclass(frozen=True)
class WebKeys:
    session: bytes  # signs session cookies
    csrf: bytes     # turns the CSRF cookie into the forms' token
    digest: bytes   # keyed digests of sign-in codes, link tokens, session ids and client addresses

    @classmethod
    def from_master(cls, master_key: str) -> WebKeys:
        return cls(_derive(master_key, "session"), _derive(master_key, "csrf"), _derive(master_key, "digest"))

    def mac(self, *parts: str) -> bytes:
        """A keyed digest: what the database keeps instead of a code, token, id or address."""
        return hmac.new(self.digest, "\x1f".join(parts).encode(), hashlib.sha256).digest()

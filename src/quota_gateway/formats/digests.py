"""The digests stored in place of secrets and keys (keys are looked up by digest, never stored)."""

from __future__ import annotations

import hashlib


def sha256(data: str | bytes) -> bytes:
    """SHA-256 of the bytes (text as UTF-8): how activation keys, API keys, token secrets and
    offline codes are stored."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).digest()

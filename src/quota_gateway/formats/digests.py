"""The digests stored in place of secrets and keys (keys are looked up by digest, never stored)."""

from __future__ import annotations

import hashlib


def sha256(text: str) -> bytes:
    """SHA-256 of the UTF-8 text: how activation keys, API keys and token secrets are stored."""
    return hashlib.sha256(text.encode()).digest()

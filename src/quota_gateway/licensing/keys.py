"""Activation keys: XXXX-XXXX-XXXX-XXXX in Crockford Base32, the last character a Luhn mod 32
check character (catches every single-character typo and adjacent transpositions)."""

from __future__ import annotations

import secrets

from ..formats import crockford
from ..formats.digests import sha256 as digest

__all__ = ["digest", "generate", "hint", "normalize"]


def generate() -> str:
    body = "".join(secrets.choice(crockford.ALPHABET) for _ in range(15))
    raw = body + crockford.luhn_check_char(body)
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalize(text: str) -> str | None:
    """The canonical XXXX-XXXX-XXXX-XXXX form, or None when malformed or the check fails."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    chars = []
    for char in text.strip().upper():
        if char in "- ":
            continue
        value = crockford.VALUES.get(char)
        if value is None:
            return None
        chars.append(crockford.ALPHABET[value])
    if len(chars) != 16:
        return None
    raw = "".join(chars)
    if crockford.luhn_check_char(raw[:15]) != raw[15]:
        return None
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def hint(key: str) -> str:
    return f"{key[:4]}-****-****-{key[-4:]}"

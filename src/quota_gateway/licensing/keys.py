"""Activation keys: XXXX-XXXX-XXXX-XXXX in Crockford Base32, the last character a Luhn mod 32
check character (catches every single-character typo and adjacent transpositions)."""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)} | {"O": 0, "I": 1, "L": 1}
_N = len(ALPHABET)


def _check_char(body: str) -> str:
    total, factor = 0, 2
    for char in reversed(body):
        addend = factor * _VALUE[char]
        total += addend // _N + addend % _N
        factor = 1 if factor == 2 else 2
    return ALPHABET[(_N - total % _N) % _N]


def generate() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(15))
    raw = body + _check_char(body)
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalize(text: str) -> str | None:
    """The canonical XXXX-XXXX-XXXX-XXXX form, or None when malformed or the check fails."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    chars = []
    for char in text.strip().upper():
        if char in "- ":
            continue
        if char not in _VALUE:
            return None
        chars.append(ALPHABET[_VALUE[char]])
    if len(chars) != 16:
        return None
    raw = "".join(chars)
    if _check_char(raw[:15]) != raw[15]:
        return None
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def hint(key: str) -> str:
    return f"{key[:4]}-****-****-{key[-4:]}"

"""Crockford Base32: the alphabet of activation keys, API keys and offline codes.

Input is forgiving (lower case, and O/I/L read as 0/1/1); output is always canonical.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# character -> value, with Crockford's aliases for the letters that look like digits
VALUES = {c: i for i, c in enumerate(ALPHABET)} | {"O": 0, "I": 1, "L": 1}
_STRICT = {c: i for i, c in enumerate(ALPHABET)}
_N = len(ALPHABET)


def luhn_check_char(body: str) -> str:
    """Luhn mod 32 check character of `body` (canonical characters): catches every
    single-character typo and every adjacent transposition."""
    total, factor = 0, 2
    for char in reversed(body):
        addend = factor * VALUES[char]
        total += addend // _N + addend % _N
        factor = 1 if factor == 2 else 2
    return ALPHABET[(_N - total % _N) % _N]


def encode(data: bytes) -> str:
    """5 bits a character, most significant first; the last character padded with zero bits."""
    out = []
    buffer = bits = 0
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            out.append(ALPHABET[(buffer >> bits) & 31])
    if bits:
        out.append(ALPHABET[(buffer << (5 - bits)) & 31])
    return "".join(out)


def decode(text: str) -> bytes:
    """The bytes of canonical Base32 text; ValueError on a character outside the alphabet."""
    out = bytearray()
    buffer = bits = 0
    for char in text:
        value = _STRICT.get(char)
        if value is None:
            raise ValueError(f"not a Crockford Base32 character: {char!r}")
        buffer = (buffer << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
    return bytes(out)

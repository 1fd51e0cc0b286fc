"""Offline activation codes in the ExisOne SDK's format.

Bytes `[payload length: uint16 LE][payload: UTF-8 JSON][RSA PKCS#1 v1.5 SHA-256 signature]`,
Crockford Base32 (5 bits a character, most significant first), in dash-separated groups.
"""

from __future__ import annotations

import struct

import orjson

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LOOKUP = {c: i for i, c in enumerate(ALPHABET)}
GROUP = 5
MIN_LENGTH = 50  # the SDK treats a key this long (dashes removed) as an offline code


def to_base32(data: bytes) -> str:
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


def from_base32(text: str) -> bytes:
    out = bytearray()
    buffer = bits = 0
    for char in text:
        value = _LOOKUP.get(char)
        if value is None:
            raise ValueError(f"not a Crockford Base32 character: {char!r}")
        buffer = (buffer << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
    return bytes(out)


def is_offline_code(text: str) -> bool:
    return len(text.replace("-", "").replace(" ", "")) >= MIN_LENGTH


def encode(payload: dict, sign) -> str:
    """The dashed code for `payload`, signed by `sign(payload_bytes) -> signature`."""
    body = orjson.dumps(payload)
    if len(body) > 0xFFFF:
        raise ValueError("offline payload too large")
    raw = to_base32(struct.pack("<H", len(body)) + body + sign(body))
    return "-".join(raw[i:i + GROUP] for i in range(0, len(raw), GROUP))


def decode(code: str) -> tuple[bytes, bytes]:
    """(payload bytes, signature) of a code; ValueError when it is not one."""
    combined = from_base32(code.replace("-", "").replace(" ", "").upper())
    if len(combined) < 4:
        raise ValueError("offline code too short")
    (length,) = struct.unpack("<H", combined[:2])
    if len(combined) < 2 + length + 1:
        raise ValueError("offline code truncated")
    return combined[2:2 + length], combined[2 + length:]

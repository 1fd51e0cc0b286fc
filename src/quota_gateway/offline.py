"""Offline activation codes in the ExisOne SDK's format.

Bytes `[payload length: uint16 LE][payload: UTF-8 JSON][RSA PKCS#1 v1.5 SHA-256 signature]`,
Crockford Base32 (5 bits a character, most significant first), in dash-separated groups.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import orjson

from .formats import crockford

GROUP = 5
MIN_LENGTH = 50  # the SDK treats a key this long (dashes removed) as an offline code


def is_offline_code(text: str) -> bool:
    return len(text.replace("-", "").replace(" ", "")) >= MIN_LENGTH


def encode(payload: dict, sign: Callable[[bytes], bytes]) -> str:
    """The dashed code for `payload`, signed by `sign(payload_bytes) -> signature`."""
    body = orjson.dumps(payload)
    if len(body) > 0xFFFF:
        raise ValueError("offline payload too large")
    raw = crockford.encode(struct.pack("<H", len(body)) + body + sign(body))
    return "-".join(raw[i:i + GROUP] for i in range(0, len(raw), GROUP))


def decode(code: str) -> tuple[bytes, bytes]:
    """(payload bytes, signature) of a code; ValueError when it is not one."""
    combined = crockford.decode(code.replace("-", "").replace(" ", "").upper())
    if len(combined) < 4:
        raise ValueError("offline code too short")
    (length,) = struct.unpack("<H", combined[:2])
    if len(combined) < 2 + length + 1:
        raise ValueError("offline code truncated")
    return combined[2:2 + length], combined[2 + length:]

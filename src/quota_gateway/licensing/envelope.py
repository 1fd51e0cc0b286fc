"""Encrypted validation envelope (POST /api/license/validate-encrypted).

Request  {"payload": base64( RSA-OAEP-SHA256(tenant public key, K || N) || AES-256-GCM(K, N, request JSON) )}
Response {"payload": base64( N2 || AES-256-GCM(K, N2, response JSON) )}

K (32 bytes) and N (12 bytes) are fresh per request and known only to the client and the
server; the response is sealed under the same K with a new nonce N2, so only the sender can read
it. RSA-OAEP alone carries at most 190 bytes with a 2048-bit key, hence the hybrid.
"""

from __future__ import annotations

import base64
import binascii
import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import crypto
from ..errors import ApiError

RSA_BLOCK = 256  # 2048-bit tenant keys
_KEY_AND_NONCE = 32 + 12


async def open_request(conn, tenant_id: str, master_key: str | None, payload: str) -> tuple[dict, bytes]:
    """(request JSON, response key) from an envelope; 400 invalid_payload / decryption_failed."""
    try:
        blob = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_payload", "payload is not valid base64") from None
    if len(blob) < RSA_BLOCK + 16:
        raise ApiError(400, "invalid_payload", "payload is too short to be an envelope")
    secret = await crypto.decrypt_oaep(conn, tenant_id, master_key, blob[:RSA_BLOCK])
    if len(secret) != _KEY_AND_NONCE:
        raise ApiError(400, "decryption_failed", "the RSA block must carry a 32-byte key and a 12-byte nonce")
    key, nonce = secret[:32], secret[32:]
    try:
        plain = AESGCM(key).decrypt(nonce, blob[RSA_BLOCK:], None)
    except InvalidTag:
        raise ApiError(400, "decryption_failed", "the request body failed authentication") from None
    try:
        request = orjson.loads(plain)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_payload", "the decrypted request is not JSON") from None
    return request, key


def seal_response(key: bytes, answer: dict) -> str:
    nonce = os.urandom(12)
    from ..jsonio import dumps

    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, dumps(answer), None)).decode()

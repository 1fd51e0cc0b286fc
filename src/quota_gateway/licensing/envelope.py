"""Encrypted validation (POST /api/license/validate-encrypted), in two forms told apart by length.

The REST document's literal form: "Encrypt JSON with the public key (RSA-OAEP-SHA256), base64
encode, and send {payload}" — one RSA block, so a request JSON of at most 190 bytes:
  Request  {"payload": base64( RSA-OAEP-SHA256(tenant public key, request JSON) )}   (256 bytes)
  Response {"payload": base64(response JSON), "signature": base64(RSA PKCS#1 v1.5 SHA-256 over
            those bytes, tenant key), "kid": <key id>, "alg": "RS256"}
The document's "base64 of RSA-encrypted JSON" answer is one no client can read (only the server
holds a private key), so the answer is signed instead: the client checks it with the same public
key it encrypted with, so a forged or altered answer is refused.

The hybrid envelope (any request size; the answer is readable only by the sender):
  Request  {"payload": base64( RSA-OAEP-SHA256(tenant public key, K || N) || AES-256-GCM(K, N, request JSON) )}
  Response {"payload": base64( N2 || AES-256-GCM(K, N2, response JSON) )}
K (32 bytes) and N (12 bytes) are fresh per request; the response is sealed under the same K
with a new nonce N2.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import crypto
from ..errors import ApiError
from ..jsonio import json_object

RSA_BLOCK = 256  # 2048-bit tenant keys
_KEY_AND_NONCE = 32 + 12


async def open_request(conn: Any, tenant_id: str, master_key: str | None, payload: str) -> tuple[dict, bytes | None]:
    """(request JSON, response key) from a payload: the key for the hybrid envelope, None for the
    document's single RSA block (answer with sign_response); 400 invalid_payload / decryption_failed."""
    try:
        blob = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_payload", "payload is not valid base64") from None
    if len(blob) == RSA_BLOCK:  # the document's form: the JSON itself in one OAEP block
        return _json(await crypto.decrypt_oaep(conn, tenant_id, master_key, blob)), None
    if len(blob) < RSA_BLOCK + 16:
        raise ApiError(400, "invalid_payload", "payload is neither one RSA block nor long enough to be an envelope")
    secret = await crypto.decrypt_oaep(conn, tenant_id, master_key, blob[:RSA_BLOCK])
    if len(secret) != _KEY_AND_NONCE:
        raise ApiError(400, "decryption_failed", "the RSA block must carry a 32-byte key and a 12-byte nonce")
    key, nonce = secret[:32], secret[32:]
    try:
        plain = AESGCM(key).decrypt(nonce, blob[RSA_BLOCK:], None)
    except InvalidTag:
        raise ApiError(400, "decryption_failed", "the request body failed authentication") from None
    return _json(plain), key


def _json(plain: bytes) -> dict:
    return json_object(plain, "invalid_payload", "the decrypted request")


async def sign_response(conn: Any, tenant_id: str, master_key: str | None, answer: dict) -> dict:
    """The answer to the document's form: its JSON bytes and the tenant key's signature over them."""
    from ..jsonio import dumps

    kid, key = await crypto.signing_key(conn, tenant_id, master_key)
    body = dumps(answer)
    return {"payload": base64.b64encode(body).decode(),
            "signature": base64.b64encode(crypto.sign_pkcs1v15_sha256(key, body)).decode(), "kid": kid, "alg": "RS256"}


def seal_response(key: bytes, answer: dict) -> str:
    nonce = os.urandom(12)
    from ..jsonio import dumps

    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, dumps(answer), None)).decode()

"""Leases are signed tokens, verifiable offline with the tenant's public key (signature.pem):

    base64url(payload JSON) "." base64url(RSA PKCS#1 v1.5 SHA-256 signature of the first part)

payload: {"lid": lease id, "key": pool key id, "org": tenant id, "cid": client id,
          "iat": issued (epoch s), "exp": expiry (epoch s)}
"""

from __future__ import annotations

import base64
import binascii

import orjson

from .. import crypto


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(private_key, payload: dict) -> str:
    head = _b64(orjson.dumps(payload))
    return f"{head}.{_b64(crypto.sign_pkcs1v15_sha256(private_key, head.encode()))}"


def read(token: str) -> tuple[dict, bytes, bytes] | None:
    """(payload, signed bytes, signature) of a well-formed token, else None. Not yet verified."""
    head, dot, tail = token.partition(".")
    if not dot or not head or not tail or len(token) > 4096:
        return None
    try:
        payload = orjson.loads(_unb64(head))
        signature = _unb64(tail)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or not all(k in payload for k in ("lid", "key", "org", "exp")):
        return None
    return payload, head.encode(), signature


def verify(public_pems: list[str], signed: bytes, signature: bytes) -> bool:
    return any(crypto.verify_pkcs1v15_sha256(pem, signed, signature) for pem in public_pems)

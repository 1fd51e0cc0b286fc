"""CSRF protection for every form: a signed double-submit token.

Each browser holds a random `qg_csrf` cookie (HttpOnly, SameSite=Strict); every form carries
HMAC(csrf key, cookie) in a hidden `csrf_token` field. A POST whose field does not match its
own cookie is refused before any handler runs. Another site can neither read the cookie nor
compute the HMAC, and SameSite=Strict keeps the cookie off cross-site requests anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "qg_csrf"
FIELD = "csrf_token"


def token_for(key: bytes, seed: str) -> str:
    return hmac.new(key, seed.encode(), hashlib.sha256).hexdigest()


def seed_of(request: Request) -> tuple[str, bool]:
    """(the browser's CSRF seed, whether it is new and must be set as a cookie)."""
    seed = request.cookies.get(COOKIE)
    if seed and 20 <= len(seed) <= 100:
        return seed, False
    return secrets.token_urlsafe(32), True


def set_cookie(response: Response, seed: str, secure: bool) -> None:
    response.set_cookie(COOKIE, seed, httponly=True, secure=secure, samesite="strict", path="/")


def valid(key: bytes, request: Request, submitted: str | None) -> bool:
    seed = request.cookies.get(COOKIE)
    if not seed or not submitted:
        return False
    return hmac.compare_digest(token_for(key, seed), submitted)

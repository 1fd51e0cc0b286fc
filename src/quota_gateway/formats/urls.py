"""URLs people give the gateway to call or to link to."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ApiError


def check_http_url(url: str, field: str = "url") -> None:
    """400 invalid_url unless `url` is an absolute http(s) URL without credentials, spaces or
    control characters (urlsplit drops tabs and line breaks silently; the stored URL would keep them)."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise ApiError(400, "invalid_url", f"{field}: must not contain spaces or control characters", field=field)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "invalid_url", f"{field}: must be an absolute http:// or https:// URL", field=field)
    if parts.username or parts.password:
        raise ApiError(400, "invalid_url", f"{field}: must not contain credentials", field=field)
    try:
        _ = parts.port  # urllib raises on an invalid or out-of-range port only when asked
    except ValueError:
        raise ApiError(400, "invalid_url", f"{field}: invalid port", field=field) from None

"""Timestamps on the wire: ISO-8601, UTC written with `Z` (formatting: clock.iso_utc)."""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import ApiError


def parse_iso(text: str) -> datetime:
    """ISO-8601 text (a trailing `Z` accepted); ValueError when it is not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_field(text: str, field: str, *, naive: str = "utc") -> datetime:
    """A body field's timestamp, or 400 invalid_field. `naive`: "utc" reads a time without a
    zone as UTC, "refuse" answers 400 for it."""
    try:
        value = parse_iso(text)
    except ValueError:
        raise ApiError(400, "invalid_field", f"{field}: must be an ISO-8601 timestamp", field=field) from None
    if value.tzinfo is None:
        if naive != "utc":
            raise ApiError(400, "invalid_field", f"{field}: must carry a time zone (use Z for UTC)", field=field)
        value = value.replace(tzinfo=UTC)
    return value

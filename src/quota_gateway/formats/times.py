"""Timestamps on the wire: ISO-8601, UTC written with `Z` (formatting: clock.iso_utc)."""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import ApiError

# asyncpg stores datetime.min and datetime.max (0001-01-01T00:00:00Z, 9999-12-31T23:59:59.999999Z)
# as -infinity and infinity and reads them back naive, which comparisons and .timestamp() then fail
# on: a request may name any instant strictly between them.
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def parse_iso_utc(text: str, *, naive_is_utc: bool = False) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime. ValueError (with a message for the client)
    when it is not ISO-8601, has no zone (unless `naive_is_utc`), or leaves years 1..9999 once
    moved to UTC (`9999-12-31T23:59:59-10:00` is in year 10000)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        if not naive_is_utc:
            raise ValueError("must carry a time zone (use Z for UTC)")
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within the years 1 to 9999 in UTC") from None


def parse_field(text: str, field: str, *, naive_is_utc: bool = False) -> datetime:
    """A request field's timestamp (parse_iso_utc) strictly between the calendar's first and last
    instants, or 400 invalid_field naming the field."""
    try:
        value = parse_iso_utc(text, naive_is_utc=naive_is_utc)
    except ValueError as exc:
        raise ApiError(400, "invalid_field", f"{field}: {exc}", field=field) from None
    if not _FIRST < value < _LAST:
        raise ApiError(400, "invalid_field", f"{field}: must fall after 0001-01-01T00:00:00Z and before "
                       "9999-12-31T23:59:59.999999Z", field=field)
    return value

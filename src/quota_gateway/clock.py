"""Injectable time source: windows, expiry, trials and leases read the clock, never time.time()."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    """Wall-clock time in seconds since the epoch (UTC)."""

    def now(self) -> float:
        return time.time()

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)


class ManualClock(Clock):
    """A clock that only moves when told to; for tests."""

    def __init__(self, start: float | datetime = 1_800_000_000.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        return self._now

    def set(self, when: float | datetime) -> None:
        self._now = when.timestamp() if isinstance(when, datetime) else float(when)

    def advance(self, seconds: float) -> None:
        self._now += seconds


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
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("must fall within the years 1 to 9999 in UTC") from None


_ISO_CACHE: dict[int, str] = {}


def iso_utc(ts: float | datetime | None) -> str | None:
    """ISO-8601 UTC with a `Z`, second precision, as on the wire."""
    if ts is None:
        return None
    if isinstance(ts, datetime):
        ts = ts.timestamp()
    seconds = int(ts)
    text = _ISO_CACHE.get(seconds)
    if text is None:  # window ends repeat on every response: format each once
        if len(_ISO_CACHE) > 4096:
            _ISO_CACHE.clear()
        text = _ISO_CACHE[seconds] = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return text

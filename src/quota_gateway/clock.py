"""Injectable time source: windows, expiry, trials and leases read the clock, never time.time()."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import overload

from .formats.times import parse_iso_utc

__all__ = ["Clock", "ManualClock", "iso_utc", "parse_iso_utc"]  # parse_iso_utc: formats/times.py


class Clock:
    """Wall-clock time in seconds since the epoch (UTC)."""

    def now(self) -> float:
        return time.time()

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)


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


_ISO_CACHE: dict[int, str] = {}


@overload
def iso_utc(ts: float | datetime) -> str: ...
@overload
def iso_utc(ts: None) -> None: ...
@overload
def iso_utc(ts: float | datetime | None) -> str | None: ...


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
        text = _ISO_CACHE[seconds] = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return text

"""Structured (JSON-per-line) logging; secrets never reach a log line (see middleware/logging.py)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)  # structured fields: logger.info(..., extra={"fields": {...}})
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("quota_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class ThrottledWarning:
    """At most one warning line per `every` seconds, the next line counting those left out: a
    Redis failover answers thousands of requests 503 in a few seconds, and one line a moment
    says as much as all of them."""

    def __init__(self, logger: logging.Logger, every: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every, self._monotonic = logger, every, monotonic
        self._next_at = 0.0
        self._left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._monotonic()
        if now < self._next_at:
            self._left_out += 1
            return
        if self._left_out:
            message += f" (and {self._left_out} more in the last {self.every:g} s)"
        self.logger.warning(message, *args)
        self._next_at, self._left_out = now + self.every, 0

"""Structured (JSON-per-line) logging; secrets never reach a log line (see middleware/logging.py)."""

from __future__ import annotations

import logging
import sys
import time

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

"""One structured access-log line per request; never the Authorization header or the body."""

from __future__ import annotations

import logging

from starlette.types import Scope

from .observing import ObservingMiddleware

access_log = logging.getLogger("quota_gateway.access")


class AccessLogMiddleware(ObservingMiddleware):
    def enabled(self) -> bool:
        return access_log.isEnabledFor(logging.INFO)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None)  # templates only: raw paths may carry license keys
        access_log.info("%s %s %s", scope["method"], route, status, extra={"fields": {
            "method": scope["method"],
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 3),
            "client": (scope.get("client") or ("", 0))[0],
        }})

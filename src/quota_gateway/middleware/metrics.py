"""Counts and times every request under its route template (not the raw path: bounded labels)."""

from __future__ import annotations

from starlette.types import Scope

from .observing import ObservingMiddleware


class MetricsMiddleware(ObservingMiddleware):
    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", None) or "unmatched"
        services = getattr(scope["app"].state, "services", None) if "app" in scope else None
        if services is not None:
            services.metrics.observe_request(template, scope["method"], status, seconds)

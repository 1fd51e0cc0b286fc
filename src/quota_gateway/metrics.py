"""Prometheus metrics, one registry per application instance (several apps may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("qg_http_requests_total", "HTTP requests by route, method and status",
                                ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram("qg_http_request_duration_seconds", "HTTP request latency by route",
                                 ("route",), buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.redis_errors = Counter("qg_redis_errors_total", "Redis commands that failed", ("operation",),
                                    registry=self.registry)
        self.db_errors = Counter("qg_db_errors_total", "PostgreSQL operations that failed", ("operation",),
                                 registry=self.registry)
        self._children: dict = {}  # label lookups cost more than the increments: reuse children

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._children.get((route, method, status))
        if children is None:
            children = self._children[(route, method, status)] = (self.requests.labels(route, method, str(status)),
                                                                  self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_endpoint(request: Request) -> Response:
    return Response(request.app.state.services.metrics.render(), media_type=CONTENT_TYPE_LATEST)

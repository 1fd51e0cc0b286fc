"""Prometheus metrics, one registry per application instance (several apps may share a process in tests).

Per-request series (request counts, latency, validation outcomes) are plain dictionaries of
numbers folded into metric families when /metrics is scraped: prometheus_client's own counters
and histograms take a lock per update, which cost the hot path about a fifth of its time.
All updates happen on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from starlette.requests import Request
from starlette.responses import Response

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CountsByLabels:
    """A counter family whose children are dictionary entries (label values -> count)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, label_values: tuple[str, ...]) -> None:
        counts = self.counts
        counts[label_values] = counts.get(label_values, 0) + 1

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, count in self.counts.items():
            family.add_metric(label_values, count)
        yield family

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]


class LatencyByRoute:
    """A histogram family per route: bucket counts (non-cumulative) and the sum, in one list."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.series: dict[str, list] = {}
        registry.register(self)

    def observe(self, route: str, seconds: float) -> None:
        series = self.series.get(route)
        if series is None:
            series = self.series[route] = [0] * (len(_LATENCY_BUCKETS) + 1) + [0.0]
        series[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=("route",))
        for route, series in self.series.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*_LATENCY_BUCKETS, float("inf")), series):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            family.add_metric((route,), buckets, series[-1])
        yield family

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=("route",))]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = CountsByLabels("qg_http_requests", "HTTP requests by route, method and status",
                                       ("route", "method", "status"), self.registry)
        self.latency = LatencyByRoute("qg_http_request_duration_seconds", "HTTP request latency by route",
                                      self.registry)
        self.redis_errors = Counter("qg_redis_errors_total", "Redis commands that failed", ("operation",),
                                    registry=self.registry)
        self.db_errors = Counter("qg_db_errors_total", "PostgreSQL operations that failed", ("operation",),
                                 registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc((route, method, str(status)))
        self.latency.observe(route, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics_endpoint(request: Request) -> Response:
    return Response(request.app.state.services.metrics.render(), media_type=CONTENT_TYPE_LATEST)

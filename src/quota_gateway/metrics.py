"""Prometheus metrics, one set per application instance (several apps may share a process in tests).

Per-request series (request counts, latency, validation outcomes) are plain dictionaries of
numbers folded into metric families when /metrics is scraped: prometheus_client's own counters
and histograms take a lock per update, which cost the hot path about a fifth of its time.
All updates happen on the event loop's thread, so no lock is needed.

With several worker processes (`serve --workers N`), each writes a snapshot of its numbers to a
shared directory every second, and /metrics adds the other workers' latest snapshots to its own
live numbers, so any worker answers for the whole server. Snapshots of workers that have exited
stay: counters never go backwards while the server runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from starlette.responses import Response

from .answers import TEXT
from .background import cancel_and_wait
from .errors import ApiError
from .routing import Call, endpoint

log = logging.getLogger("quota_gateway.metrics")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SHARE_EVERY = 1.0


class CountsByLabels:
    """A counter family whose children are dictionary entries (label values -> count).

    With `exposed`, the entries are counted under keys of the caller's own (several facts of one
    event in one tuple) and folded into label values only when scraped: one update per event
    can then feed both /metrics and an in-process view that needs a fact the labels leave out."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 exposed: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.exposed = exposed
        self.counts: dict[tuple[str, ...], int] = {}
        self.peers: list = []  # other workers' snapshots, set just before a scrape

    def inc(self, label_values: tuple[str, ...]) -> None:
        counts = self.counts
        counts[label_values] = counts.get(label_values, 0) + 1

    def folded(self, counts: dict[tuple[str, ...], int] | None = None) -> dict[tuple[str, ...], int]:
        """`counts` (this process's own by default) keyed by label values, as /metrics shows them."""
        counts = self.counts if counts is None else counts
        if self.exposed is None:
            return dict(counts)
        totals: dict[tuple[str, ...], int] = {}
        for key, count in counts.items():
            label_values = self.exposed(key)
            totals[label_values] = totals.get(label_values, 0) + count
        return totals

    def snapshot(self) -> list:
        return [[list(label_values), count] for label_values, count in self.counts.items()]

    def collect(self):
        totals = dict(self.counts)
        for peer in self.peers:
            for label_values, count in peer:
                key = tuple(label_values)
                totals[key] = totals.get(key, 0) + count
        totals = self.folded(totals)
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, count in totals.items():
            family.add_metric(label_values, count)
        yield family

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]


class LatencyByRoute:
    """A histogram family per route: bucket counts (non-cumulative) and the sum, in one list."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.series: dict[str, list] = {}
        self.peers: list = []

    def observe(self, route: str, seconds: float) -> None:
        series = self.series.get(route)
        if series is None:
            series = self.series[route] = [0] * (len(_LATENCY_BUCKETS) + 1) + [0.0]
        series[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def snapshot(self) -> dict:
        return self.series

    def collect(self):
        totals = {route: list(series) for route, series in self.series.items()}
        for peer in self.peers:
            for route, series in peer.items():
                mine = totals.setdefault(route, [0] * len(series))
                totals[route] = [a + b for a, b in zip(mine, series, strict=True)]
        family = HistogramMetricFamily(self.name, self.documentation, labels=("route",))
        for route, series in totals.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*_LATENCY_BUCKETS, float("inf")), series, strict=False):  # series ends with the sum
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            family.add_metric((route,), buckets, series[-1])
        yield family

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation, labels=("route",))]


class Metrics:
    def __init__(self, shared_dir: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._families: dict[str, CountsByLabels | LatencyByRoute] = {}
        self._shared_dir = Path(shared_dir) if shared_dir else None
        self._sharing: asyncio.Task | None = None
        self.requests = self.counts("qg_http_requests", "HTTP requests by route, method and status",
                                    ("route", "method", "status"))
        self.latency = self._register(LatencyByRoute("qg_http_request_duration_seconds", "HTTP request latency by route"))
        self.redis_errors = self.counts("qg_redis_errors", "Redis commands that failed", ("operation",))
        self.db_errors = self.counts("qg_db_errors", "PostgreSQL operations that failed", ("operation",))

    def counts(self, name: str, documentation: str, labels: tuple[str, ...],
               exposed: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None) -> CountsByLabels:
        return self._register(CountsByLabels(name, documentation, labels, exposed))

    def _register(self, family):
        self._families[family.name] = family
        self.registry.register(family)
        return family

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc((route, method, str(status)))
        self.latency.observe(route, seconds)

    def render(self) -> bytes:
        peers = self._peer_snapshots()
        for name, family in self._families.items():
            family.peers = [snapshot[name] for snapshot in peers if name in snapshot]
        return generate_latest(self.registry)

    # -- sharing between worker processes ----------------------------------------------------

    def start_sharing(self) -> None:
        if self._shared_dir is not None:
            self._shared_dir.mkdir(parents=True, exist_ok=True)
            self._sharing = asyncio.create_task(self._share_loop(), name="metrics-sharing")

    async def stop_sharing(self) -> None:
        if self._sharing is not None:
            await cancel_and_wait(self._sharing)
            self.write_snapshot()

    def write_snapshot(self) -> None:
        if self._shared_dir is None:
            return
        snapshot = {name: family.snapshot() for name, family in self._families.items()}
        target = self._shared_dir / f"{os.getpid()}.json"
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(snapshot))
        temporary.replace(target)  # readers never see half a file

    async def _share_loop(self) -> None:
        while True:
            try:
                self.write_snapshot()
            except OSError as exc:
                log.warning("could not share metrics: %s", exc)
            await asyncio.sleep(_SHARE_EVERY)

    def peer_counts(self, name: str) -> list[tuple[tuple[str, ...], int]]:
        """The other workers' latest entries of the counter family `name`, keyed as counted (before
        folding into labels): how an in-process view adds up every worker of the server."""
        return [(tuple(key), count) for snapshot in self._peer_snapshots() for key, count in snapshot.get(name, [])]

    def _peer_snapshots(self) -> list[dict]:
        if self._shared_dir is None:
            return []
        mine = f"{os.getpid()}.json"
        snapshots = []
        for path in self._shared_dir.glob("*.json"):
            if path.name == mine:
                continue
            try:
                snapshots.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue  # a worker's file being replaced right now: its next scrape counts it
        return snapshots


METRICS_SECURITY = "MetricsOperator"  # the openapi security scheme of the operator credential
_MIN_TOKEN = 16


def operator_digest(token: str) -> bytes | None:
    """The digest the public /metrics compares a presented credential with; None when unset.
    Comparing digests keeps the comparison's time independent of the secret's length too."""
    if not token:
        return None
    if len(token) < _MIN_TOKEN:
        raise ValueError(f"QG_METRICS_TOKEN: at least {_MIN_TOKEN} characters")
    return hashlib.sha256(token.encode()).digest()


async def metrics_endpoint(call: Call) -> Response:
    """Prometheus metrics of the whole server, for the operator (`Authorization: Bearer
    <QG_METRICS_TOKEN>`); tenant access tokens never read them, as the series name every tenant's
    products. The metrics listener (QG_METRICS_BIND) serves them without a credential."""
    expected = call.services.metrics_operator_digest
    if expected is None:
        raise ApiError(403, "metrics_disabled", "the public listener serves no metrics: QG_METRICS_TOKEN is not set "
                                                "(scrape the metrics listener, QG_METRICS_BIND)")
    scheme, _, presented = (call.request.headers.get("authorization") or "").partition(" ")
    given = hashlib.sha256(presented.strip().encode("utf-8", "surrogateescape")).digest()
    if not (hmac.compare_digest(given, expected) and scheme.lower() == "bearer"):
        raise ApiError(401, "unauthorized", "/metrics takes the operator's credential only: Authorization: Bearer "
                                            "<QG_METRICS_TOKEN> (tenant access tokens never read server metrics)",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(call.services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


public_route = endpoint("GET", "/metrics", metrics_endpoint, scope=None, tag="ops", security=METRICS_SECURITY,
                        responses={200: "Prometheus text format",
                                   401: "missing or wrong operator credential (QG_METRICS_TOKEN); code unauthorized",
                                   403: "QG_METRICS_TOKEN is not set: the public listener serves no metrics; "
                                        "code metrics_disabled"},
                        media_type="text/plain", returns=TEXT)

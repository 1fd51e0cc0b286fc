"""The middleware benchmark runs end to end (tiny: it checks the harness, not the speed)."""

from __future__ import annotations

from benchmarks import middleware


def test_middleware_benchmark_reports_overhead():
    best = middleware.run(n=20, rounds=1)
    assert set(best) == {"asgi_bare", "asgi_middleware", "async_client", "wsgi_bare", "wsgi_middleware"}
    assert all(value > 0 for value in best.values())
    assert "middleware overhead per request: ASGI" in middleware.report(best)

"""The load harness runs end to end (tiny and short: it checks the harness, not the speed)."""

from __future__ import annotations

import pytest
from benchmarks import load


@pytest.mark.slow
def test_load_harness_alternates_turns_and_reports_ratios():
    results = load.run(duration=0.5, connections=(4,), keys=20, generator="python", with_redis_py=False, rounds=2)
    level = results["levels"][4]
    assert len(level["bare"]) == len(level["gateway"]) == 2
    for run in level["bare"] + level["gateway"]:
        assert run["requests"] > 0 and run["statuses"]["other"] == 0 and run["statuses"]["socket errors"] == 0
    assert "redis_cpu_us" in level["gateway"][0] or load._cpu_seconds(1) is None
    text = load.report(results)
    assert "throughput b/a = " in text and "turns: " in text and "floating leases:" in text


def test_answer_write_benchmark_measures_all_three_roads():
    from benchmarks import answerwrite

    results = answerwrite.run(number=50, repeat=1)
    assert set(results) == {"asgi, no rate-limit fields", "asgi, with fields", "direct, with fields"}
    assert all(us > 0 for us in results.values()) and "x the answer before the fields" in answerwrite.report(results)


def test_latency_percentiles_pool_turns_by_their_requests():
    turns = [{"requests": 3000, "quantiles_ms": [1.0] * 10}, {"requests": 1000, "quantiles_ms": [10.0] * 10}]
    assert load._latency(turns, 50) == load._latency(turns, 75) == 1.0
    assert load._latency(turns, 76) == load._latency(turns, 99) == 10.0


@pytest.mark.slow
def test_scale_harness_bulk_loads_and_reports():
    from benchmarks import scale

    results = scale.run(300, duration=0.5, rounds=2)
    assert results["cold_ok"] == 300  # every bulk-loaded key validates on its first touch
    assert results["warm_rps"] > 0 and results["small_rps"] > 0 and results["bytes_per_key"] > 0
    assert results["slices"] == 2 and results["paired_rps"] > 0  # cold slices taking turns with warm ones
    text = scale.report(results)
    assert "Redis bytes per warm key" in text and "cold / warm N" in text and "cold / warm, paired turns" in text


def test_cold_slices_are_about_ten_thousand_keys_between_rounds_and_twenty():
    from benchmarks import scale

    assert [scale.cold_slices(n, 4) for n in (300, 20_000, 200_000, 1_000_000)] == [4, 4, 20, 20]
    assert scale.cold_slices(50_000, 4) == 5 and scale.cold_slices(2, 4) == 2

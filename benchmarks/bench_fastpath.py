"""pytest-benchmark: the compiled fast path vs its pure-Python twin.

Run: .venv/bin/python -m pytest benchmarks/bench_fastpath.py --benchmark-enable
"""

from __future__ import annotations

import contextlib
import importlib

import pytest

KEY = importlib.import_module("quota_gateway._fastpath_py").generate_api_key(bytes(range(16)))
NOISY_KEY = " " + KEY.lower()[:12] + "-" + KEY.lower()[12:] + " "
FEATURES = ["api:rate:minute:100", "api:rate:hour:5000", "api:units:day:100000", "api:units:month:1000000",
            "api:tier:premium", "beta", "api:rate:minute:60"]
HEADER = "ExisOneApi exo_at_abcdefghijkl_" + "A1b2" * 8
# A validate script reply for a key with a quota and two windows, as hiredis decodes it.
REPLY = [b"ok", 1, 0, 0, b"Bench API", 463, 10**12, b'["api:tier:premium"]', b"", 0, 100_000_000, 174, 6, 10**9, 463]
RESETS = (b"2026-11-26T19:59:00Z", b"2026-11-26T20:00:00Z", b"2026-11-27T00:00:00Z", b"2026-12-01T00:00:00Z")
WINDOW_ENDS = (1_795_723_140, 1_795_723_200, 1_795_737_600, 1_796_083_200)

CASES = {
    "normalize_api_key": lambda m: m.normalize_api_key(NOISY_KEY),
    "api_key_bucket": lambda m: m.api_key_bucket(KEY),
    "parse_authorization": lambda m: m.parse_authorization(HEADER),
    "compile_rules": lambda m: m.compile_rules(FEATURES),
    "window_bounds_month": lambda m: m.window_bounds(1_800_000_000, "month"),
    "render_validation": lambda m: m.render_validation(REPLY, RESETS),
    "limit_headers": lambda m: m.limit_headers(REPLY, 1_795_723_100, WINDOW_ENDS),
    "normalize_imported_key": lambda m: m.normalize_imported_key(" aaaa-bbbb-cccc-dddd "),
}


def implementations():
    found = {"py": importlib.import_module("quota_gateway._fastpath_py")}
    with contextlib.suppress(ImportError):  # not built: the pure-Python twin only
        found["c"] = importlib.import_module("quota_gateway._fastpath")
    return found


@pytest.mark.parametrize("impl", sorted(implementations()))
@pytest.mark.parametrize("case", sorted(CASES))
def test_fastpath(benchmark, impl, case):
    module = implementations()[impl]
    benchmark.group = case
    benchmark(CASES[case], module)

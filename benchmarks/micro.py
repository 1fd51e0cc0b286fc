"""Compiled vs pure fast path, side by side in one run (timeit; no pytest needed)."""

from __future__ import annotations

import functools
import timeit

from benchmarks.bench_fastpath import CASES, implementations


def run(number: int = 200_000) -> dict:
    impls = implementations()
    results = {}
    for case, fn in sorted(CASES.items()):
        results[case] = {}
        for name, module in impls.items():
            best = min(timeit.repeat(functools.partial(fn, module), number=number, repeat=3))
            results[case][name] = best / number * 1e9  # ns per call
    return results


def report(results: dict) -> str:
    lines = [f"{'function':22} {'pure ns':>9} {'compiled ns':>12} {'speed-up':>9}"]
    for case, times in results.items():
        compiled = times.get("c")
        speedup = f"{times['py'] / compiled:8.1f}x" if compiled else "   (n/a)"
        lines.append(f"{case:22} {times['py']:9.0f} {compiled or float('nan'):12.0f} {speedup}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(run()))

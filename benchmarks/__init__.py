"""Benchmarks: `make bench` (= python -m benchmarks) runs them all and prints side-by-side ratios."""

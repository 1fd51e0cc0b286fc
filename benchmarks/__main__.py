"""`make bench`: every benchmark in one run, printed side by side with its ratio."""

from __future__ import annotations

import argparse

from benchmarks import answerwrite, load, micro, middleware, scale


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per target and turn")
    parser.add_argument("--connections", type=load._levels, default=(32, 128),
                        help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=10, help="alternating turns per target and level")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--keys", type=int, default=0,
                        help="also run the scale benchmark over this many bulk-loaded API keys (e.g. 1000000)")
    args = parser.parse_args()
    if args.keys:
        print(f"== scale: validate over {args.keys:,} bulk-loaded keys vs 1,000 (1 worker) ==")
        print(scale.report(scale.run(args.keys, duration=args.duration)))
    print("== fast path: compiled vs pure-Python (ns per call) ==")
    print(micro.report(micro.run()))
    print("\n== writing an allowed validate answer: the rate-limit fields' cost (uvicorn's cycle, no socket) ==")
    print(answerwrite.report(answerwrite.run()))
    print("\n== client middleware's own overhead (in-process, gateway answer from a canned transport) ==")
    print(middleware.report(middleware.run()))
    if not args.skip_load:
        print("\n== validate vs a bare Starlette endpoint (1 uvicorn worker each, uvloop, httptools) ==")
        print(load.report(load.run(args.duration, args.connections, rounds=args.rounds)))


if __name__ == "__main__":
    main()

"""Load harness: a bare Starlette endpoint (a) vs the gateway's validate against real Redis (b).

Both run under identical uvicorn settings (1 worker, uvloop, httptools) in their own processes;
the same load generator (another process) drives each over 1,000 distinct API keys, and the
ratios b/a are printed. Run: python -m benchmarks.load [--duration S] [--connections 32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from benchmarks import bench_leases, loadgen
from quota_gateway.embedded import PostgresServer, RedisServer, free_port

UVICORN = ["--host", "127.0.0.1", "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
           "--no-access-log"]
PATH = "/api/apilicense/validate"


@contextmanager
def _server(app: str, port: int, env: dict[str, str], factory: bool = False):
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), *UVICORN] + (["--factory"] if factory else [])
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(argv, env={**os.environ, **env, "PYTHONPATH": root}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


MASTER_KEY = "11" * 32


@contextmanager
def embedded_servers() -> Iterator[tuple[RedisServer, PostgresServer, dict[str, str]]]:
    """A throwaway Redis and PostgreSQL for one run, and the gateway's environment to use them."""
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis").start()
        pg = PostgresServer(Path(tmp) / "pg").start()
        try:
            yield redis, pg, {"QG_REDIS_URL": redis.url, "QG_DATABASE_URL": pg.url, "QG_MASTER_KEY": MASTER_KEY,
                              "QG_LOG_LEVEL": "warning"}
        finally:
            pg.stop()
            redis.stop()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(port: int, bodies: list[bytes], headers: dict[str, str], connections: int, duration: float,
             generator: str, pids: dict[str, int], nice: int) -> dict:
    """One measured run; CPU microseconds per request of each process in `pids`."""
    drive = _drive_wrk if generator == "wrk" else _drive_python
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    result = drive(port, bodies, headers, connections, duration, nice)
    for name, pid in pids.items():
        after = _cpu_seconds(pid)
        if after is not None and before[name] is not None and result["requests"]:
            result[f"{name}_cpu_us"] = (after - before[name]) / result["requests"] * 1e6
    return result


def _drive_python(port: int, bodies: list[bytes], headers: dict[str, str], connections: int, duration: float,
                  nice: int) -> dict:
    with multiprocessing.get_context("spawn").Pool(1, initializer=os.nice, initargs=(nice,)) as pool:
        return pool.apply(loadgen.run, ("127.0.0.1", port, PATH, bodies, headers),
                          {"connections": connections, "duration": duration, "warmup": 0})


def _drive_wrk(port: int, bodies: list[bytes], headers: dict[str, str], connections: int, duration: float,
               nice: int) -> dict:
    """wrk (C, one thread) leaves more of a 2-core machine to the server under test than Python can."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bodies").write_bytes(b"\n".join(bodies) + b"\n")
        (Path(tmp) / "headers").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        env = {**os.environ, "QG_BENCH_BODIES": str(Path(tmp) / "bodies"), "QG_BENCH_HEADERS": str(Path(tmp) / "headers")}
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(int(duration), 1)}s", "-s",
                str(Path(__file__).with_name("wrk_driver.lua")), f"http://127.0.0.1:{port}{PATH}"]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True,
                             preexec_fn=lambda: os.nice(nice)).stdout
    result = orjson.loads(next(line for line in out.splitlines() if line.startswith("QG_RESULT "))[10:])
    n = result["requests"]
    return {"requests": n, "seconds": result["duration_us"] / 1e6, "rps": n / (result["duration_us"] / 1e6),
            "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
            "quantiles_ms": [q / 1000 for q in result["quantiles_us"]],
            "statuses": {"2xx": n - result["non2xx"], "other": result["non2xx"], "socket errors": result["socket_errors"]}}


async def _provision(database_url: str, base: str, master_key: str, keys: int) -> tuple[str, list[str], dict]:
    import asyncpg

    from quota_gateway import db
    from quota_gateway.auth.service import create_token
    from quota_gateway.tenants import create_tenant

    await db.migrate_url(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        tenant = await create_tenant(conn, "bench", "Bench", master_key=master_key)
        token = (await create_token(conn, tenant["id"], "bench", ["admin"]))["token"]
    finally:
        await conn.close()
    headers = {"Authorization": f"ExisOneApi {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        product = (await client.post("/api/product", json={"name": "Bench API"})).json()["id"]
        # Rules make the script do real window work: generous enough never to deny in a run.
        for rule in ("api:rate:minute:100000000", "api:units:day:1000000000"):
            await client.post(f"/api/product/{product}/features", json={"name": rule})
        api_keys = []
        for start in range(0, keys, 50):
            batch = await asyncio.gather(*(client.post("/api/apilicense", json={"productId": product,
                                                                                 "maxApiCalls": 10**12})
                                           for _ in range(min(50, keys - start))))
            api_keys += [r.json()["apiKey"] for r in batch]
        customer = (await client.post("/api/customers", json={"name": "Bench"})).json()["id"]
        floating = (await client.post("/api/floating/keys", json={"customerId": customer, "leaseLimit": 1000,
                                                                  "products": [{"productId": product}]})).json()["key"]
    return token, api_keys, {"org": tenant["id"], "key": floating}


def run(duration: float = 3.0, connections: tuple[int, ...] = (32, 128), keys: int = 1000,
        generator: str = "auto", with_redis_py: bool = True, rounds: int = 10, loadgen_nice: int = 10) -> dict:
    """Both targets at each concurrency level: closed-loop load is latency-bound at low concurrency,
    where each validate also waits a Redis round trip, and CPU-bound at high concurrency.

    Both servers run side by side and are measured in alternation, `rounds` short turns each per
    level, in the order ab, ba, ab, ...: on a shared machine throughput drifts by more than the
    difference being measured, and short turns in mirrored order expose both targets to the same
    drift. The ratio reported is of the throughputs summed over all turns.
    The load generator runs at a lower priority (`loadgen_nice`), for both targets alike: it stands
    for clients on other machines, so where it shares cores with the system under test (the
    server, and the gateway's Redis) it should not take their turn."""
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    with embedded_servers() as (redis, pg, env):
        # The lease benchmark is one client address: measure the pool, not the per-address limit.
        env["QG_CLIENT_REQUESTS_PER_MINUTE"] = "0"
        bare_port, gateway_port = free_port(), free_port()
        with _server("benchmarks.bare_app:app", bare_port, {}) as bare, \
                _server("quota_gateway.app:create_app_from_env", gateway_port, env, factory=True) as gateway:
            token, api_keys, pool = asyncio.run(_provision(pg.url, f"http://127.0.0.1:{gateway_port}", MASTER_KEY, keys))
            bare_bodies = [orjson.dumps({"apiKey": f"qgk_{i:028d}", "units": 1}) for i in range(keys)]
            bodies = [orjson.dumps({"apiKey": k, "units": 1}) for k in api_keys]
            headers = {"Authorization": f"ExisOneApi {token}"}
            targets = {"bare": (bare_port, bare_bodies, {}, {"server": bare.pid}),
                       "gateway": (gateway_port, bodies, headers, {"server": gateway.pid,
                                                                   "redis": redis.process.pid})}
            levels: dict[int, dict] = {}
            for n in connections:
                levels[n] = {"bare": [], "gateway": []}
                for port, target_bodies, target_headers, _ in targets.values():
                    _measure(port, target_bodies, target_headers, n, 2.0, generator, {}, loadgen_nice)  # warm-up
                for turn in range(rounds):
                    for name in ("bare", "gateway") if turn % 2 == 0 else ("gateway", "bare"):
                        port, target_bodies, target_headers, pids = targets[name]
                        levels[n][name].append(_measure(port, target_bodies, target_headers, n, duration, generator,
                                                        pids, loadgen_nice))
            with multiprocessing.get_context("spawn").Pool(1) as worker:
                leases = worker.apply(bench_leases.run, ("127.0.0.1", gateway_port, pool["org"], pool["key"]),
                                      {"duration": min(duration, 5.0)})
        if with_redis_py:  # the same gateway, hot path on redis.asyncio (one EVALSHA per pooled connection)
            port = free_port()
            with _server("quota_gateway.app:create_app_from_env", port, {**env, "QG_REDIS_TRANSPORT": "redis-py"},
                         factory=True) as server:
                for n in connections:
                    _measure(port, bodies, headers, n, 2.0, generator, {}, loadgen_nice)  # warm-up
                    levels[n]["redis-py"] = [_measure(port, bodies, headers, n, 2 * duration, generator,
                                                      {"server": server.pid, "redis": redis.process.pid},
                                                      loadgen_nice)]
        return {"generator": generator, "rounds": rounds, "nice": loadgen_nice, "levels": levels, "leases": leases}


def _median(runs: list[dict], field: str) -> float:
    values = [r[field] for r in runs if field in r]
    return statistics.median(values) if values else float("nan")


def _throughput(runs: list[dict]) -> float:
    """Requests per second over all of a target's turns."""
    return sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs)


def _latency(runs: list[dict], percent: float) -> float:
    """A latency percentile of all of a target's requests: each turn's distribution (its quantiles)
    weighted by its number of requests."""
    pooled = sorted((q, r["requests"] / len(r["quantiles_ms"])) for r in runs for q in r["quantiles_ms"])
    threshold, seen = percent / 100 * sum(weight for _, weight in pooled), 0.0
    for value, weight in pooled:
        seen += weight
        if seen >= threshold:
            return value
    return float("nan")


def report(results: dict) -> str:
    lines = [f"load generator: {results['generator']} (nice {results['nice']}); {os.cpu_count()} cores shared by server, "
             f"Redis and generator; {results['rounds']} alternating turns per target and level: req/s and "
             f"latencies over all turns, CPU the median turn's"]
    for connections, level in results["levels"].items():
        a, b = level["bare"], level["gateway"]
        lines += [f"-- {connections} connections", f"{'target':12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  "
                  f"{'server us/req':>13} {'redis us/req':>12}"]
        rows = [("bare (a)", a), ("validate (b)", b)] + ([("b, redis-py", level["redis-py"])] if "redis-py" in level else [])
        for name, runs in rows:
            lines.append(f"{name:12} {_throughput(runs):8.0f} {_latency(runs, 50):8.2f} "
                         f"{_latency(runs, 99):8.2f}  {_median(runs, 'server_cpu_us'):13.1f} "
                         f"{_median(runs, 'redis_cpu_us'):12.1f}")
        errors = sum(r["statuses"]["other"] + r["statuses"]["socket errors"] for _, runs in rows for r in runs)
        if errors:
            lines.append(f"WARNING: {errors} non-2xx answers or socket errors")
        ratios = [y["rps"] / x["rps"] for x, y in zip(a, b, strict=True)]
        p99s = [y["p99_ms"] / x["p99_ms"] for x, y in zip(a, b, strict=True)]
        lines.append(f"throughput b/a = {_throughput(b) / _throughput(a):.2f} (target >= 0.90; turns: "
                     f"{' '.join(f'{r:.2f}' for r in ratios)}); p99 b/a = {_latency(b, 99) / _latency(a, 99):.2f} "
                     f"(target <= 2.00; turns: {' '.join(f'{r:.2f}' for r in p99s)})")
        if "redis-py" in level:
            c = level["redis-py"]
            lines.append(f"with redis.asyncio instead of auto-pipelining: throughput "
                         f"{_throughput(c) / _throughput(a):.2f} of bare")
    lease = results["leases"]
    lines.append(f"floating leases: {lease['pairs_per_sec']:.0f} obtain+release pairs/s (each obtain signs a lease "
                 f"with RSA-2048)")
    return "\n".join(lines)


def _levels(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per target and turn")
    parser.add_argument("--connections", type=_levels, default=(32, 128), help="comma-separated concurrency levels")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="alternating turns per target and level")
    parser.add_argument("--loadgen-nice", type=int, default=10,
                        help="priority of the load generator below the servers under test (0: the same)")
    parser.add_argument("--no-redis-py", action="store_true", help="skip the redis.asyncio comparison run")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else the in-repo asyncio generator")
    args = parser.parse_args(argv)
    print(report(run(args.duration, args.connections, args.keys, args.generator, not args.no_redis_py,
                     args.rounds, args.loadgen_nice)))


if __name__ == "__main__":
    main()

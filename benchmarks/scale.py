"""Scale: validate over many API keys (`python -m benchmarks --keys N`, e.g. 1,000,000).

The keys are bulk-loaded into PostgreSQL with COPY (creating them through the API would take
hours), never touched in Redis, so the first request of each is a cold fill. Printed:
- cold: first touches only (every connection walks its own share of never-seen keys), in slices
  of ~10,000 keys (4 to 20), each slice followed by a warm turn over the keys touched so far, so
  cold and warm meet the same load from the rest of the machine ("cold / warm, paired turns");
- warm over N: the same keys again, uniformly, once every key was touched;
- warm over 1,000 keys created through the API, in alternating turns with the N-key run;
- Redis bytes per warm key (INFO memory's used_memory after warming minus before, over N) and
  the gateway worker's RSS before and after.
One gateway worker (uvloop, httptools), embedded Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson

from benchmarks import load, loadgen
from quota_gateway.embedded import free_port

CONNECTIONS = 64
T = TypeVar("T")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _redis_memory(url: str) -> tuple[int, int]:
    """(used_memory, number of keys) from INFO."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"]), int(client.dbsize())
    finally:
        client.close()


def _redis_cpu(url: str) -> float:
    """CPU seconds the Redis server used so far (INFO cpu)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


class _CpuMeter:
    """CPU seconds the gateway worker and Redis spend over one stretch of load, summed by name:
    on a shared machine, CPU per request compares runs that wall-clock throughput cannot."""

    def __init__(self, pid: int, redis_url: str) -> None:
        self.pid, self.redis_url = pid, redis_url
        self.seconds: dict[str, list[float]] = {}

    def measure(self, name: str, run: Callable[[], T]) -> T:
        gateway, redis = load._cpu_seconds(self.pid) or 0.0, _redis_cpu(self.redis_url)
        result = run()
        spent = self.seconds.setdefault(name, [0.0, 0.0])
        spent[0] += (load._cpu_seconds(self.pid) or 0.0) - gateway
        spent[1] += _redis_cpu(self.redis_url) - redis
        return result

    def per_request_us(self, name: str, requests: int) -> tuple[float, float]:
        gateway, redis = self.seconds[name]
        return gateway / requests * 1e6, redis / requests * 1e6


# Kinds of Redis entry a warm API key may own or share (keyspace.py): the key's hash (metadata,
# counters, generation) and its product's metadata in the key's bucket.
KINDS = {"k": "key hash", "p": "product per bucket", "m": "metadata (before)", "c": "counters (before)",
         "mb": "backup metadata (before)", "gen": "generation (before)"}


def _bytes_by_kind(url: str, sample: int = 200) -> dict:
    """MEMORY USAGE (key, value and Redis's own overhead) averaged over a sample of each kind of
    entry (kinds not present are left out)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        out = {}
        for kind in KINDS:
            sizes = []
            for key in client.scan_iter(f"qg:{{b*}}:{kind}:*", count=1000):
                sizes.append(client.memory_usage(key, samples=0) or 0)
                if len(sizes) >= sample:
                    break
            if sizes:
                out[kind] = sum(sizes) / len(sizes)
        for key in client.scan_iter("qg:{b*}:k:*", count=1000):  # one warm key's hash, taken apart
            out["k_name"] = len(key)
            out["k_m"], out["k_c"] = client.hstrlen(key, "m"), client.hstrlen(key, "c")
            out["k_encoding"] = client.object("encoding", key).decode()
            break
        return out
    finally:
        client.close()


async def _bulk_load(database_url: str, count: int) -> list[str]:
    """`count` API keys of the bench tenant's product, COPYed in batches; returns the keys."""
    import asyncpg

    from quota_gateway import fastpath
    from quota_gateway.apilicense.service import mask
    from quota_gateway.formats.digests import sha256

    conn = await asyncpg.connect(database_url)
    try:
        tenant_id, product_id = await conn.fetchrow("SELECT tenant_id, id FROM products ORDER BY id LIMIT 1")
        keys: list[str] = []
        batch = 100_000
        for start in range(0, count, batch):
            chunk = [fastpath.generate_api_key(secrets.token_bytes(16)) for _ in range(min(batch, count - start))]
            await conn.copy_records_to_table(
                "api_licenses", columns=["tenant_id", "product_id", "key_digest", "bucket", "key_hint"],
                records=[(tenant_id, product_id, sha256(k), fastpath.api_key_bucket(k), mask(k)) for k in chunk])
            keys += chunk
        await conn.execute("ANALYZE api_licenses")
        return keys
    finally:
        await conn.close()


async def _walk(port: int, requests: list[bytes]) -> int:
    """Send each request once on one keep-alive connection; the number of 200 answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ok = 0
    try:
        for request in requests:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            ok += head[9:12] == b"200"
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    await reader.readexactly(int(line[15:]))
    finally:
        writer.close()
    return ok


def _each_once(port: int, bodies: list[bytes], headers: dict[str, str]) -> tuple[float, int]:
    """(requests per second, answers 200) sending every body once, CONNECTIONS disjoint shares."""
    requests = [loadgen._request("127.0.0.1", load.PATH, body, headers) for body in bodies]

    async def main() -> list[int]:
        return await asyncio.gather(*(_walk(port, requests[c::CONNECTIONS]) for c in range(CONNECTIONS)))

    try:
        import uvloop  # as loadgen.run uses: the cold pass and the warm turns load alike

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    ok = sum(asyncio.run(main()))
    return len(bodies) / (time.perf_counter() - started), ok


def cold_slices(keys: int, rounds: int) -> int:
    """How many slices the first touches go in: ~10,000 keys each (a few seconds of load), at least
    `rounds`, at most 20 (each slice adds a warm turn)."""
    return max(1, min(keys, max(rounds, min(20, keys // 10_000))))


def run(keys: int, duration: float = 5.0, rounds: int = 4) -> dict:
    with load.embedded_servers() as (redis, pg, env):
        env["QG_METRICS_BIND"] = ""
        port = free_port()
        with load._server("quota_gateway.app:create_app_from_env", port, env, factory=True) as gateway:
            token, small_keys, _ = asyncio.run(load._provision(pg.url, f"http://127.0.0.1:{port}", load.MASTER_KEY, 1000))
            headers = {"Authorization": f"ExisOneApi {token}"}
            loaded_at = time.perf_counter()
            many = asyncio.run(_bulk_load(pg.url, keys))
            load_seconds = time.perf_counter() - loaded_at
            bodies = [orjson.dumps({"apiKey": k, "units": 1}) for k in many]
            small = [orjson.dumps({"apiKey": k, "units": 1}) for k in small_keys]
            _each_once(port, small, headers)  # the 1k keys warm
            rss_before, (memory_before, keys_before) = _rss_mb(gateway.pid), _redis_memory(redis.url)
            meter = _CpuMeter(gateway.pid, redis.url)
            # First touches, in slices, each followed by a warm turn over the keys touched so far:
            # cold and warm take turns under the same load from the rest of the machine.
            slices = cold_slices(keys, rounds)
            share = -(-keys // slices)
            cold_seconds, cold_ok, paired = 0.0, 0, []
            for start in range(0, keys, share):
                part = bodies[start:start + share]
                rps, ok = meter.measure("cold", lambda p=part: _each_once(port, p, headers))
                cold_seconds, cold_ok = cold_seconds + len(part) / rps, cold_ok + ok
                touched = bodies[:start + share]
                paired.append(meter.measure("warm paired", lambda t=touched: loadgen.run(
                    "127.0.0.1", port, load.PATH, random.sample(t, len(t)), headers, connections=CONNECTIONS,
                    duration=duration, warmup=0)))
            cold_rps = keys / cold_seconds
            (memory_after, keys_after), rss_after = _redis_memory(redis.url), _rss_mb(gateway.pid)
            by_kind = _bytes_by_kind(redis.url)
            random.shuffle(bodies)
            turns: dict[str, list[dict]] = {"many": [], "1k": []}
            for turn in range(rounds):
                for name in ("many", "1k") if turn % 2 == 0 else ("1k", "many"):
                    turns[name].append(meter.measure(name, lambda n=name: loadgen.run(
                        "127.0.0.1", port, load.PATH, bodies if n == "many" else small, headers,
                        connections=CONNECTIONS, duration=duration, warmup=0)))
            rss_end = _rss_mb(gateway.pid)
        served = {name: sum(t["requests"] for t in runs) for name, runs in turns.items()}
        served["cold"] = keys
        served["warm paired"] = sum(t["requests"] for t in paired)
        return {"keys": keys, "load_seconds": load_seconds, "cold_rps": cold_rps, "cold_ok": cold_ok,
                "slices": slices, "paired_rps": load._throughput(paired),
                "warm_rps": load._throughput(turns["many"]), "small_rps": load._throughput(turns["1k"]),
                "cpu_us": {name: meter.per_request_us(name, served[name]) for name in served},
                "bytes_per_key": (memory_after - memory_before) / keys, "bytes_by_kind": by_kind,
                "redis_keys": (keys_before, keys_after), "rss_mb": (rss_before, rss_after, rss_end)}


def report(r: dict) -> str:
    return "\n".join([
        f"keys bulk-loaded (COPY)      {r['keys']:,} in {r['load_seconds']:.1f} s",
        f"cold (first touch) rps       {r['cold_rps']:,.0f}  ({r['cold_ok']:,} answered 200)",
        f"warm over {r['keys']:,} keys rps  {r['warm_rps']:,.0f}",
        f"warm over 1,000 keys rps     {r['small_rps']:,.0f}",
        f"warm N / 1k                  {r['warm_rps'] / r['small_rps']:.2f}x",
        f"cold / warm N                {r['cold_rps'] / r['warm_rps']:.2f}x",
        f"cold / warm, paired turns    {r['cold_rps'] / r['paired_rps']:.2f}x  (the first touches in {r['slices']} "
        f"slices, each followed by a warm turn over the keys touched so far: {r['paired_rps']:,.0f} rps)",
        "CPU us/request (gateway, Redis)  cold {:.0f}, {:.0f}; warm paired {:.0f}, {:.0f}; warm N {:.0f}, {:.0f}; "
        "warm 1k {:.0f}, {:.0f}".format(*r["cpu_us"]["cold"], *r["cpu_us"]["warm paired"], *r["cpu_us"]["many"],
                                        *r["cpu_us"]["1k"]),
        f"cold / warm N by gateway CPU  {r['cpu_us']['many'][0] / r['cpu_us']['cold'][0]:.2f}x",
        f"Redis bytes per warm key     {r['bytes_per_key']:.0f}  (INFO used_memory after the cold pass minus "
        f"before, over N; Redis keys {r['redis_keys'][0]:,} -> {r['redis_keys'][1]:,})",
        "  MEMORY USAGE per entry      " + ", ".join(f"{KINDS[kind]} {size:.0f}"
                                                    for kind, size in r["bytes_by_kind"].items() if kind in KINDS),
        "  a key's hash                name {k_name} bytes, {k_encoding}: metadata {k_m}, counters {k_c} bytes".format(
            **r["bytes_by_kind"]) if "k_name" in r["bytes_by_kind"] else "",
        "worker RSS MB                before {:.0f}, after cold pass {:.0f}, after warm turns {:.0f}".format(*r["rss_mb"]),
    ])


if __name__ == "__main__":
    import sys

    print(report(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
    os._exit(0)

"""Scale: validate over many API keys (`python -m benchmarks --keys N`, e.g. 1,000,000).

The keys are bulk-loaded into PostgreSQL with COPY (creating them through the API would take
hours), never touched in Redis, so the first request of each is a cold fill. Printed:
- cold: first touches only (every connection walks its own share of never-seen keys);
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
from pathlib import Path

import orjson

from benchmarks import load, loadgen
from quota_gateway.embedded import free_port

CONNECTIONS = 64


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _redis_used_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _bytes_by_kind(url: str, sample: int = 200) -> dict[str, float]:
    """MEMORY USAGE (key, value and Redis's own overhead) averaged over a sample of each kind of
    per-key entry: metadata (m:), counters (c:), generation (gen:)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        out = {}
        for kind in ("m", "c", "gen"):
            sizes = []
            for key in client.scan_iter(f"qg:*:{kind}:*", count=1000):
                sizes.append(client.memory_usage(key, samples=0) or 0)
                if len(sizes) >= sample:
                    break
            out[kind] = sum(sizes) / len(sizes) if sizes else 0.0
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

    started = time.perf_counter()
    ok = sum(asyncio.run(main()))
    return len(bodies) / (time.perf_counter() - started), ok


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
            rss_before, memory_before = _rss_mb(gateway.pid), _redis_used_memory(redis.url)
            cold_rps, cold_ok = _each_once(port, bodies, headers)  # every key's first touch
            memory_after, rss_after = _redis_used_memory(redis.url), _rss_mb(gateway.pid)
            by_kind = _bytes_by_kind(redis.url)
            random.shuffle(bodies)
            turns: dict[str, list[dict]] = {"many": [], "1k": []}
            for turn in range(rounds):
                for name in ("many", "1k") if turn % 2 == 0 else ("1k", "many"):
                    turns[name].append(loadgen.run("127.0.0.1", port, load.PATH, bodies if name == "many"
                                                   else small, headers, connections=CONNECTIONS,
                                                   duration=duration, warmup=0))
            rss_end = _rss_mb(gateway.pid)
        return {"keys": keys, "load_seconds": load_seconds, "cold_rps": cold_rps, "cold_ok": cold_ok,
                "warm_rps": load._throughput(turns["many"]), "small_rps": load._throughput(turns["1k"]),
                "bytes_per_key": (memory_after - memory_before) / keys, "bytes_by_kind": by_kind,
                "rss_mb": (rss_before, rss_after, rss_end)}


def report(r: dict) -> str:
    return "\n".join([
        f"keys bulk-loaded (COPY)      {r['keys']:,} in {r['load_seconds']:.1f} s",
        f"cold (first touch) rps       {r['cold_rps']:,.0f}  ({r['cold_ok']:,} answered 200)",
        f"warm over {r['keys']:,} keys rps  {r['warm_rps']:,.0f}",
        f"warm over 1,000 keys rps     {r['small_rps']:,.0f}",
        f"warm N / 1k                  {r['warm_rps'] / r['small_rps']:.2f}x",
        f"cold / warm N                {r['cold_rps'] / r['warm_rps']:.2f}x",
        f"Redis bytes per warm key     {r['bytes_per_key']:.0f}  (MEMORY USAGE per entry: metadata "
        f"{r['bytes_by_kind']['m']:.0f}, counters {r['bytes_by_kind']['c']:.0f}, generation "
        f"{r['bytes_by_kind']['gen']:.0f} where one exists)",
        "worker RSS MB                before {:.0f}, after cold pass {:.0f}, after warm turns {:.0f}".format(*r["rss_mb"]),
    ])


if __name__ == "__main__":
    import sys

    print(report(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
    os._exit(0)

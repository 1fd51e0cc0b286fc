"""A small closed-loop HTTP/1.1 load generator (keep-alive connections, raw asyncio streams).

Runs in its own process so it does not share the server's core. Bounded by duration.
"""

from __future__ import annotations

import asyncio
import time

QUANTILES = 1000  # latency quantiles reported per run (as benchmarks/wrk_driver.lua), for pooling runs


def _request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _connection(host: str, port: int, requests: list[bytes], offset: int, stop_at: float,
                      latencies: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _run(host: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str], connections: int,
               duration: float, warmup: float) -> dict:
    requests = [_request(host, path, b, headers) for b in bodies]
    if warmup:
        warm: list[float] = []
        await asyncio.gather(*(_connection(host, port, requests, c * 7, time.perf_counter() + warmup, warm, {})
                               for c in range(connections)))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, requests, c * 13, started + duration, latencies, statuses)
                           for c in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    quantiles = [latencies[min(n - 1, int((i + 0.5) * n / QUANTILES))] * 1000 for i in range(QUANTILES)] if n else []
    return {"requests": n, "seconds": elapsed, "rps": n / elapsed, "p50_ms": latencies[n // 2] * 1000 if n else 0.0,
            "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0, "quantiles_ms": quantiles,
            "statuses": _summary(statuses)}


def _summary(statuses: dict[int, int]) -> dict[str, int]:
    """The shape the wrk driver reports (a failed connection ends the run with its error)."""
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {"2xx": ok, "other": sum(statuses.values()) - ok, "socket errors": 0}


def run(host: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str], *, connections: int = 32,
        duration: float = 8.0, warmup: float = 2.0) -> dict:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(host, port, path, bodies, headers, connections, duration, warmup))

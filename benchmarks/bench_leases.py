"""Floating licenses: obtain + release pairs per second against a running gateway.

Each connection loops: obtain a lease, release it (two requests a pair), for `duration` seconds.
"""

from __future__ import annotations

import asyncio
import time

import orjson


async def _pairs(host: str, port: int, org: str, key: str, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)

    async def post(path: str, body: dict) -> dict:
        raw = orjson.dumps(body)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
        return orjson.loads(await reader.readexactly(length))

    try:
        while time.perf_counter() < stop_at:
            lease = await post(f"/licensing/{org}/lease/obtain", {"key": key, "expiry": 60})
            if lease.get("success"):
                await post(f"/licensing/{org}/lease/release", {"lease": lease["lease"]})
                counts[0] += 1
            else:
                counts[1] += 1
    finally:
        writer.close()


async def _run(host: str, port: int, org: str, key: str, connections: int, duration: float) -> dict:
    counts = [0, 0]
    started = time.perf_counter()
    await asyncio.gather(*(_pairs(host, port, org, key, started + duration, counts) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"pairs_per_sec": counts[0] / elapsed, "pairs": counts[0], "refused": counts[1]}


def run(host: str, port: int, org: str, key: str, *, connections: int = 16, duration: float = 5.0) -> dict:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(host, port, org, key, connections, duration))

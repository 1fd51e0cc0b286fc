"""Event → webhook and event → e-mail arrival latency through a real gateway process.

Starts its own PostgreSQL and Redis (embedded), one gateway (uvicorn, background worker on), a
loopback HTTP receiver and a loopback SMTP server (aiosmtpd). Then creates licenses one at a time
through `POST /api/licenses` and measures, per license, from the API call's return (the event is
committed) to the webhook's arrival and to the license e-mail's arrival.

    python -m benchmarks.bench_events [--count 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quota_gateway import db
from quota_gateway.auth.service import create_token
from quota_gateway.config import Settings
from quota_gateway.embedded import PostgresServer, RedisServer, free_port
from quota_gateway.tenants import create_tenant

MASTER_KEY = "11" * 32


class Arrivals:
    """license id -> arrival time (perf_counter), filled from the receivers' threads."""

    def __init__(self) -> None:
        self.webhook: dict[int, float] = {}
        self.mail: dict[str, float] = {}


def _webhook_receiver(arrivals: Arrivals, port: int) -> uvicorn.Server:
    async def hook(request: Request) -> Response:
        event = orjson.loads(await request.body())
        if event["type"] == "license.created":
            arrivals.webhook[event["data"]["licenseId"]] = time.perf_counter()
        return Response("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


class _MailHandler:
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server, session, envelope) -> str:
        self.arrivals.mail[envelope.rcpt_tos[0]] = time.perf_counter()
        return "250 OK"


def _percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return "no samples"
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"


async def _setup(database_url: str) -> str:
    await db.migrate_url(database_url)
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        tenant = await create_tenant(conn, "bench", "Bench", master_key=MASTER_KEY)
        return (await create_token(conn, tenant["id"], "bench", ["admin"]))["token"]
    finally:
        await conn.close()


async def _measure(base: str, token: str, count: int, arrivals: Arrivals, webhook_url: str, smtp_port: int) -> dict:
    headers = {"Authorization": f"ExisOneApi {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        await http.put("/api/smtp", json={"host": "127.0.0.1", "port": smtp_port, "security": "none",
                                          "from": "bench@example.com"})
        await http.put("/api/email/settings", json={"deliverLicenses": True})
        await http.post("/api/webhooks", json={"url": webhook_url, "events": ["license.created"]})
        product = (await http.post("/api/product", json={"name": "Bench"})).json()["id"]
        committed: dict[int, tuple[float, str]] = {}
        for n in range(count):
            email = f"buyer{n}@example.com"
            r = await http.post("/api/licenses", json={"productId": product, "email": email, "validityDays": 30})
            committed[r.json()["id"]] = (time.perf_counter(), email)
            await asyncio.sleep(0.05)  # one event at a time: latency, not throughput
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and (len(arrivals.webhook) < count or len(arrivals.mail) < count):
            await asyncio.sleep(0.01)
    webhook = [arrivals.webhook[i] - t for i, (t, _) in committed.items() if i in arrivals.webhook]
    mail = [arrivals.mail[e] - t for _, (t, e) in committed.items() if e in arrivals.mail]
    return {"webhook": webhook, "mail": mail}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_events")
    parser.add_argument("--count", type=int, default=50, help="licenses created, one at a time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qg-bench-events-") as tmp:
        os.chmod(tmp, 0o755)  # the embedded PostgreSQL runs as an unprivileged user
        pg = PostgresServer(Path(tmp) / "pg").start()
        redis = RedisServer(Path(tmp) / "redis").start()
        gateway = None
        try:
            token = asyncio.run(_setup(pg.url))
            arrivals = Arrivals()
            hook_port, smtp_port, port = free_port(), free_port(), free_port()
            receiver = _webhook_receiver(arrivals, hook_port)
            smtp = Controller(_MailHandler(arrivals), hostname="127.0.0.1", port=smtp_port)
            smtp.start()
            settings = Settings(redis_url=redis.url, database_url=pg.url, master_key=MASTER_KEY,
                                webhook_allow_private=True, log_level="warning")
            env = {**os.environ, **settings.to_env()}
            gateway = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                        "quota_gateway.app:create_app_from_env", "--port", str(port),
                                        "--log-level", "warning"], env=env)
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            result = asyncio.run(_measure(base, token, args.count, arrivals, f"http://127.0.0.1:{hook_port}/hook",
                                          smtp_port))
            print(f"event -> webhook arrival: {_percentiles(result['webhook'])}")
            print(f"event -> e-mail arrival:  {_percentiles(result['mail'])}")
            smtp.stop()
            receiver.should_exit = True
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(timeout=15)
            redis.stop()
            pg.stop()


if __name__ == "__main__":
    main()

"""An allowed validate answer's head written through uvicorn's own checks vs as a trusted head
(quota_gateway.httpprotocol), side by side in one run: µs per answer, cycle set-up included."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from quota_gateway.httpprotocol import TRUSTED_HEAD, TrustedHeadCycle

# the nine fields of an allowed answer: uvicorn's two defaults, then the hot route's seven
_DEFAULTS = [(b"date", b"Mon, 07 Dec 2026 21:00:00 GMT"), (b"server", b"uvicorn")]
_HEAD = [(b"content-type", b"application/json"), (b"content-length", b"180"),
         (b"ratelimit", b'"minute";r=99;t=42'), (b"ratelimit-policy", b'"minute";q=100;w=60'),
         (b"x-ratelimit-limit", b"100"), (b"x-ratelimit-remaining", b"99"), (b"x-ratelimit-reset", b"42")]


class _Sink:
    def write(self, data: bytes) -> None:
        pass


class _Flow:
    write_paused = False


def _cycle(cls: type[RequestResponseCycle]) -> RequestResponseCycle:
    return cls(scope={"method": "POST", "http_version": "1.1"}, transport=_Sink(), flow=_Flow(),  # type: ignore[arg-type]
               logger=None, access_logger=None, access_log=False, default_headers=_DEFAULTS,  # type: ignore[arg-type]
               message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True,
               on_response=lambda: None)


async def _per_answer(cls: type[RequestResponseCycle], message: dict[str, Any], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        await _cycle(cls).send(message)
    return (time.perf_counter() - started) / number * 1e6


async def _run(number: int, repeat: int) -> dict[str, float]:
    plain = {"type": "http.response.start", "status": 200, "headers": _HEAD}
    trusted = {**plain, TRUSTED_HEAD: True}
    best = {"uvicorn": float("inf"), "trusted": float("inf")}
    for _ in range(repeat):  # alternating, best of each
        best["uvicorn"] = min(best["uvicorn"], await _per_answer(RequestResponseCycle, plain, number))
        best["trusted"] = min(best["trusted"], await _per_answer(TrustedHeadCycle, trusted, number))
    return best


def run(number: int = 20_000, repeat: int = 5) -> dict[str, float]:
    return asyncio.run(_run(number, repeat))


def report(results: dict[str, float]) -> str:
    return (f"uvicorn's checks {results['uvicorn']:.2f} us, trusted head {results['trusted']:.2f} us per answer "
            f"({results['uvicorn'] / results['trusted']:.1f}x)")


if __name__ == "__main__":
    print(report(run()))

"""What writing a validate answer costs the server, side by side in one run, on uvicorn's own
httptools request cycle over a transport that drops the bytes (µs per answer, cycle set-up
included):

- `asgi, no rate-limit fields`: the allowed answer's head before issue 11 (content type, length)
  through ASGI `send`, as the hot route wrote it then;
- `asgi, with fields`: the same plus the five rate-limit fields, through ASGI `send`;
- `direct, with fields`: the head with fields as the hot route writes it now (`directanswer`).

The first two differ by what the fields cost through uvicorn's per-field checks; the third is
what they cost as served."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from quota_gateway import directanswer

_DEFAULTS = [(b"date", b"Mon, 07 Dec 2026 21:00:00 GMT"), (b"server", b"uvicorn")]
_PLAIN = [(b"content-type", b"application/json"), (b"content-length", b"180")]
_FIELDS = [(b"x-ratelimit-limit", b"100"), (b"x-ratelimit-remaining", b"99"), (b"x-ratelimit-reset", b"1796648460"),
           (b"ratelimit", b'"calls_minute";r=99;t=42'), (b"ratelimit-policy", b'"calls_minute";q=100;w=60')]
_BODY = b"x" * 180


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Flow:
    write_paused = False


def _cycle() -> RequestResponseCycle:
    arguments: dict[str, Any] = dict(scope={"method": "POST", "http_version": "1.1"}, transport=_Sink(), flow=_Flow(),
                                     logger=None, access_logger=None, access_log=False, default_headers=_DEFAULTS,
                                     message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True,
                                     on_response=lambda: None)
    return RequestResponseCycle(**arguments)


async def _through_asgi(headers: list) -> None:
    send = _cycle().send
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})


async def _direct(headers: list) -> None:
    if not directanswer.write(_cycle().send, 200, headers, _BODY):
        raise RuntimeError("directanswer stepped aside on uvicorn's own cycle")


async def _per_answer(write: Callable[[list], Any], headers: list, number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        await write(headers)
    return (time.perf_counter() - started) / number * 1e6


async def _run(number: int, repeat: int) -> dict[str, float]:
    cases = {"asgi, no rate-limit fields": (_through_asgi, _PLAIN), "asgi, with fields": (_through_asgi, _PLAIN + _FIELDS),
             "direct, with fields": (_direct, _PLAIN + _FIELDS)}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):  # in turns, best of each
        for name, (write, headers) in cases.items():
            best[name] = min(best[name], await _per_answer(write, headers, number))
    return best


def run(number: int = 20_000, repeat: int = 5) -> dict[str, float]:
    return asyncio.run(_run(number, repeat))


def report(results: dict[str, float]) -> str:
    base = results["asgi, no rate-limit fields"]
    return "\n".join(f"{name:28} {us:6.2f} us per answer ({us / base:.2f}x the answer before the fields)"
                     for name, us in results.items())


if __name__ == "__main__":
    print(report(run()))

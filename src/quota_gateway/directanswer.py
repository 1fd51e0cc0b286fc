"""A small, complete answer written straight onto uvicorn's httptools connection.

ASGI's `send`, in uvicorn's httptools protocol, checks every header field of an answer with two
regular expressions and lowercases it: about 5k instructions per field, and an allowed validate
answer has nine (uvicorn's `date` and `server`, content type and length, five rate-limit
fields), rendered by the server from numbers and fixed names. `write` puts the status line, the
fields and the body on the transport in one write and completes the request exactly as uvicorn's
`send` does for a fixed-length body (answer started and complete, the request's event set, the
connection closed unless kept alive, the protocol told so it starts a pipelined request or arms
the keep-alive timer).

It does so only when `send` is the bound `send` of uvicorn's httptools request cycle in its
plain state: no answer started yet, connection open, writes not paused, no uvicorn access log.
Anything else (the h11 protocol, a test transport, a wrapped `send`, a paused socket) returns
False and the caller sends through ASGI. `tests/test_directanswer.py` holds the two roads
byte-identical on a real uvicorn server; the cycle's constructor and attributes are checked at import, so a
uvicorn whose cycle differs turns this off instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

# what `write` reads and sets on a cycle (uvicorn's names)
_CYCLE_STATE = ("scope", "transport", "flow", "access_log", "default_headers", "message_event", "on_response",
                "disconnected", "keep_alive", "waiting_for_100_continue", "response_started", "response_complete",
                "chunked_encoding", "expected_content_length")


def _known_cycle() -> type | None:
    """uvicorn's httptools cycle, if it is built and holds its state as this module expects."""
    arguments: dict[str, Any] = dict(scope={}, transport=None, flow=None, logger=None, access_logger=None,
                                     access_log=False, default_headers=[], message_event=None,
                                     expect_100_continue=False, keep_alive=True, on_response=None)
    try:
        cycle = RequestResponseCycle(**arguments)
    except TypeError:  # another constructor: another cycle
        return None
    return RequestResponseCycle if all(hasattr(cycle, name) for name in _CYCLE_STATE) else None


_CYCLE: Any = _known_cycle()  # Any: `type(cycle) is _CYCLE` must not narrow `cycle` to `type`
_fields_of: list[Any] = [None, b""]  # uvicorn's default fields (replaced each second: the date) and their text


def write(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Write a fixed-length answer whose `headers` (lowercase names, values without CR or LF) the
    server rendered itself. False: not possible here; send it through ASGI instead."""
    cycle: Any = getattr(send, "__self__", None)
    if type(cycle) is not _CYCLE or cycle.response_started or cycle.disconnected or cycle.access_log \
            or cycle.flow.write_paused:
        return False
    status_line = STATUS_LINE.get(status)
    if status_line is None:
        return False
    defaults = cycle.default_headers
    cached = _fields_of
    if cached[0] is not defaults:
        cached[0], cached[1] = defaults, b"".join(name.lower() + b": " + value + b"\r\n" for name, value in defaults)
    head = [status_line, cached[1]]
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        head.append(b"connection: close\r\n")
    head += (b"\r\n", body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    transport = cycle.transport
    transport.write(b"".join(head))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()
    return True

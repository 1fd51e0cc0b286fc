"""The HTTP protocol `serve` runs: uvicorn's httptools protocol with bounded request heads
(`abuse.headers`), plus trusted answer heads for the hot route.

uvicorn checks every answer field with two regular expressions and lowercases its name: about
5.5k instructions a field under callgrind. An allowed validate answer has nine fields (date,
server, content-type, content-length and the five rate-limit fields), so these checks were a fifth
of the server's own work per validation. The hot route builds its head from fixed lowercase names
and values it renders itself (digits, window names), so there is nothing to check.

The protocol advertises the ASGI scope extension `TRUSTED_HEAD`. An app that sees it may put
`TRUSTED_HEAD: True` in its `http.response.start` message; the head then must carry
`content-length` and no `connection` or `transfer-encoding` field, and it is written as given,
after uvicorn's own default fields (date, server). Every other message, and every app that does
not ask, goes through uvicorn's code unchanged. Where the installed uvicorn lacks the hook used
here, the extension is not advertised and nothing changes.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from .abuse.headers import BoundedHttpToolsProtocol

TRUSTED_HEAD = "quota_gateway.trusted_head"
_SUPPORTED = hasattr(HttpToolsProtocol, "_start_asgi_task")


class TrustedHeadCycle(RequestResponseCycle):
    """uvicorn's request/response cycle; `send` writes a trusted head without re-checking it."""

    _defaults_source: list | None = None  # uvicorn's default fields, replaced by a new list each second
    _defaults_head = b""

    async def send(self, message: Any) -> None:
        if self.response_started or not message.get(TRUSTED_HEAD) or self.access_log:
            await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [STATUS_LINE[message["status"]], _default_head(self.default_headers)]
        for name, value in message["headers"]:
            if name == b"content-length":
                self.expected_content_length = int(value)
                self.chunked_encoding = False
            content += (name, b": ", value, b"\r\n")
        if self.chunked_encoding is None:
            raise RuntimeError("a trusted head must carry content-length")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


def _default_head(fields: list) -> bytes:
    """uvicorn's default fields as head lines, rendered once per list uvicorn hands out."""
    if fields is not TrustedHeadCycle._defaults_source:
        TrustedHeadCycle._defaults_head = b"".join(name.lower() + b": " + value + b"\r\n" for name, value in fields)
        TrustedHeadCycle._defaults_source = fields
    return TrustedHeadCycle._defaults_head


class GatewayHttpProtocol(BoundedHttpToolsProtocol):
    """Bounded request heads; answers may use trusted heads (see the module's text)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if _SUPPORTED:
            self.scope["extensions"] = {TRUSTED_HEAD: {}}

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn builds the cycle itself; ours differs only by the branch in `send`
        cycle.__class__ = TrustedHeadCycle
        super()._start_asgi_task(cycle, app)

"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the tests.

It accepts AUTH (any user name with the password in `passwords`, also without TLS unless
`auth_require_tls`), records each accepted message with its envelope and whether it came over
TLS, and refuses the next N messages on command. With `ssl_context` it speaks implicit TLS
(SMTPS); with `tls_context` it offers STARTTLS (and insists on it with `require_starttls`).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from quota_gateway.embedded import free_port


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float
    login: str | None = None
    tls: bool = False
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        self.message = email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[assignment]

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


class SmtpCapture:
    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, tls_context: ssl.SSLContext | None = None,
                 require_starttls: bool = False, auth_require_tls: bool = False) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.passwords: dict[str, str] = {}
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._fail_next = 0
        self._fail_reply = "451 4.3.0 temporarily refused by the test"
        self._controller = Controller(self, hostname=self.host, port=self.port, authenticator=self._authenticate,
                                      auth_require_tls=auth_require_tls, ssl_context=ssl_context,
                                      tls_context=tls_context, require_starttls=require_starttls)

    # --- aiosmtpd hooks (run on the server's own thread and loop) ---
    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if self.passwords.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                return self._fail_reply
            login = session.authenticated and session.auth_data
            tls = server.transport is not None and server.transport.get_extra_info("ssl_object") is not None
            self._messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                               time.time(), login if isinstance(login, str) else None, tls))
        return "250 Message accepted for delivery"

    # --- test side ---
    def start(self) -> SmtpCapture:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._fail_next = 0
        self.passwords.clear()

    def fail_next(self, count: int = 1, reply: str = "451 4.3.0 temporarily refused by the test") -> None:
        with self._lock:
            self._fail_next = count
            self._fail_reply = reply

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMail]:
        """At least `count` messages, polling (never one long sleep); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} message(s), got {len(self.messages)}")
            await asyncio.sleep(0.01)
        return self.messages

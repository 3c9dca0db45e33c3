"""A real SMTP server for tests and the bench: aiosmtpd on a free loopback port.

STARTTLS (or implicit TLS) with a certificate from a throwaway CA (trustme), AUTH
required after TLS, and a switch to refuse mail (4xx or 5xx) to simulate an outage.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.servers.ports import free_port

USER = "mailer"
PASSWORD = "s3cret-smtp-pass"


@dataclass
class Recorder:
    """The aiosmtpd handler: keeps what it accepted, refuses on demand."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse: str | None = None  # e.g. "451 4.3.0 Try again later" while set
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [
                m for m in self.messages if any(a.addr_spec == address for a in m["To"].addresses)
            ]


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = (
        isinstance(data, LoginPassword)
        and data.login == USER.encode()
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # False: the server answers 535


@dataclass
class SmtpServer:
    host: str
    port: int
    ca_file: Path
    recorder: Recorder
    controller: Controller

    def config(self, **changes: Any) -> dict[str, Any]:
        """The ``notify.transport`` mapping that reaches this server."""
        return {
            "kind": "smtp",
            "host": self.host,
            "port": self.port,
            "security": "starttls",
            "username": USER,
            "password": PASSWORD,
            "ca_file": str(self.ca_file),
            "timeout": "10s",
            "retries": 0,
            "backoff": "1s",
            **changes,
        }


@contextmanager
def smtp_server(folder: Path, *, implicit_tls: bool = False) -> Iterator[SmtpServer]:
    """Start aiosmtpd on 127.0.0.1 with TLS and AUTH; stop it afterwards."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = folder / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    recorder = Recorder()
    port = free_port()
    tls: dict[str, Any] = (
        {"ssl_context": server_context}
        if implicit_tls
        else {"tls_context": server_context, "require_starttls": True}
    )
    # aiosmtpd cannot tell that an implicit-TLS session is encrypted: it would hide AUTH
    # (auth_require_tls) or warn (auth_required without it); there AUTH is offered, and
    # our client logs in, but the server does not insist.
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_required=not implicit_tls,
        auth_require_tls=not implicit_tls,
        **tls,
    )
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, ca_file, recorder, controller)
    finally:
        controller.stop()

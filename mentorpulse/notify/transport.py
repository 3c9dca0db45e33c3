"""Transports: how a rendered message leaves the building.

A transport is one small interface whose result says whether a retry is worth it
(Alertmanager's notifier shape): ``FileTransport`` for the demo and tests,
``SmtpTransport`` for real mail.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import structlog

from mentorpulse.backoff import Backoff
from mentorpulse.config.schema import NotifyConfig, resolve_path
from mentorpulse.config.schema import SmtpTransport as SmtpConfig

log = structlog.get_logger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened: ``retryable`` means the same message may succeed later."""

    ok: bool
    retryable: bool = False
    error: str | None = None


class Transport(Protocol):
    def send(self, message: EmailMessage) -> SendResult: ...

    def close(self) -> None: ...


class FileTransport:
    """One ``.eml`` file per message, named by Message-ID: for the demo, tests, dry runs.

    Writing is atomic (temp file then ``os.replace``) so a crash never leaves half a file,
    and a resend of the same Message-ID overwrites the same file, so delivery is idempotent.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, message: EmailMessage) -> Path:
        """Where the message with this Message-ID lands."""
        message_id = str(message.get("Message-ID", "")).strip().strip("<>")
        name = _UNSAFE.sub("_", message_id).strip("._") or "no-message-id"
        return self.folder / f"{name[:200]}.eml"

    def send(self, message: EmailMessage) -> SendResult:
        target = self.path_for(message)
        try:
            # Private: the files hold names, addresses and reports (mkstemp makes 0600).
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(message.as_bytes())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # a full disk or a permission problem may well clear up
            return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")
        log.debug("eml_written", path=str(target))
        return SendResult(ok=True)

    def close(self) -> None:
        """Nothing to release."""


class SmtpTransport:
    """SMTP with STARTTLS or implicit TLS and AUTH, one connection reused per batch.

    A 250 reply to DATA is success. 4xx replies and connection problems are retried here
    a few times with exponential backoff and jitter, then reported as retryable (the
    outbox tries again later); 5xx replies are permanent for that message. A refused
    login is retryable: the message is fine, the credentials need fixing. Errors carry
    the server's reply, never the password.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        ca_file: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.ca_file = ca_file
        self._sleep = sleep
        # The one doubling formula of the house; the pauses only spread upwards (+25%).
        self._backoff = Backoff(
            first=config.backoff,
            cap=config.backoff * 2**16,
            spread=(1.0, 1.25),
            rng=rng or random.Random(),  # noqa: S311 - jitter, not cryptography
        )
        self._client: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        if self._client is not None:
            return self._client
        cfg = self.config
        timeout = cfg.timeout.total_seconds()
        client: smtplib.SMTP
        if cfg.security == "tls":
            client = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=timeout, context=self._context())
        else:
            client = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        try:
            client.ehlo()
            if cfg.security == "starttls":
                client.starttls(context=self._context())
                client.ehlo()
            if cfg.username is not None and cfg.password is not None:
                client.login(cfg.username, cfg.password)
        except BaseException:
            _quietly_close(client)
            raise
        self._client = client
        return client

    def close(self) -> None:
        """End the session politely; a dead connection is simply dropped."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                _quietly_close(client)

    def send(self, message: EmailMessage) -> SendResult:
        attempts = self.config.retries + 1
        result = SendResult(ok=False, retryable=True, error="not attempted")
        for attempt in range(attempts):
            result = self._send_once(message)
            if result.ok or not result.retryable:
                return result
            if attempt + 1 < attempts:
                self._sleep(self._backoff.delay(attempt + 1).total_seconds())
        return result

    def _send_once(self, message: EmailMessage) -> SendResult:
        where = f"{self.config.host}:{self.config.port}"
        try:
            client = self._connect()
            client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            code, reply = next(iter(exc.recipients.values()))
            return _reply_result(code, reply, where)
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            log.error("smtp_auth_failed", server=where, code=exc.smtp_code)
            return SendResult(
                ok=False,
                retryable=True,
                error=f"{where}: login refused ({exc.smtp_code} {_text(exc.smtp_error)})",
            )
        except smtplib.SMTPResponseException as exc:
            self.close()
            return _reply_result(exc.smtp_code, exc.smtp_error, where)
        except smtplib.SMTPNotSupportedError as exc:  # e.g. no STARTTLS / AUTH offered
            self.close()
            return SendResult(ok=False, retryable=True, error=f"{where}: {exc}")
        except (TimeoutError, smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            self.close()
            return SendResult(
                ok=False, retryable=True, error=f"{where}: {type(exc).__name__}: {exc}"
            )
        return SendResult(ok=True)


def _reply_result(code: int, reply: bytes | str, where: str) -> SendResult:
    """4xx: try again later; 5xx: this message will never be accepted."""
    return SendResult(
        ok=False, retryable=not 500 <= code < 600, error=f"{where}: {code} {_text(reply)}"
    )


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _quietly_close(client: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        client.close()


def build_transport(config: NotifyConfig, base_dir: Path, data_dir: Path) -> Transport:
    """The transport the config asks for: the outbox folder it writes is relative to the
    data folder, the CA file it reads to the config file's folder."""
    transport = config.transport
    if transport.kind == "file":
        return FileTransport(resolve_path(data_dir, transport.path))
    ca_file = resolve_path(base_dir, transport.ca_file) if transport.ca_file else None
    return SmtpTransport(transport, ca_file=ca_file)

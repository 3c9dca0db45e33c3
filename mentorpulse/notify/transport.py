"""Transports: how a rendered message leaves the building.

A transport is one small interface whose result says whether a retry is worth it
(Alertmanager's notifier shape). Only the file transport exists today; SMTP is a new class
plus one branch in :func:`build_transport`.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import structlog

from mentorpulse.config.schema import NotifyConfig

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
            self.folder.mkdir(parents=True, exist_ok=True)
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


def build_transport(config: NotifyConfig, base_dir: Path) -> Transport:
    """The transport the config asks for; relative paths are relative to the config file."""
    transport = config.transport
    if transport.kind == "file":
        folder = Path(transport.path)
        return FileTransport(folder if folder.is_absolute() else base_dir / folder)
    raise NotImplementedError(f"transport kind {transport.kind!r}")  # pragma: no cover

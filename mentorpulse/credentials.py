"""Refresh tokens from interactive sign-ins, encrypted at rest.

Small setups sign in once (`mentorpulse auth google|microsoft`) instead of configuring a
service account; the refresh token they get is as good as a password, so it is stored
only encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with a key the operator keeps outside
the file, in ``$MENTORPULSE_SECRET_KEY``. Several comma-separated keys rotate: the first
encrypts, any of them decrypts.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mentorpulse.errors import UserError

if TYPE_CHECKING:  # cryptography loads when a token is sealed or opened, not with the CLI
    from cryptography.fernet import MultiFernet

KEY_ENV = "MENTORPULSE_SECRET_KEY"


def generate_key() -> str:
    """A new random key for ``$MENTORPULSE_SECRET_KEY``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


def require_key() -> None:
    """Fail now, with the fix, if ``$MENTORPULSE_SECRET_KEY`` is unset or malformed: before
    a sign-in flow asks a person to consent, not after."""
    _cipher(None)


def _cipher(key: str | None) -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    value = key if key is not None else os.environ.get(KEY_ENV, "")
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise UserError(
            f"{KEY_ENV} is not set: stored sign-in tokens are encrypted with it "
            "(create one with `mentorpulse auth key`)"
        )
    try:
        return MultiFernet([Fernet(part.encode("ascii")) for part in keys])
    except (ValueError, UnicodeEncodeError):
        raise UserError(
            f"{KEY_ENV} is not a valid key: expected 32 url-safe base64-encoded bytes "
            "(create one with `mentorpulse auth key`)"
        ) from None


class TokenStore:
    """Named secrets in one JSON file of ciphertexts, readable only by its owner."""

    def __init__(self, path: Path, key: str | None = None) -> None:
        self.path = path
        self._key = key

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise UserError(f"{self.path}: cannot read the token store ({error})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise UserError(f"{self.path}: not a mentorpulse token store")
        return data

    def load(self, name: str) -> str | None:
        """The secret saved under ``name``, or None if nobody signed in for it yet."""
        from cryptography.fernet import InvalidToken

        sealed = self._read().get(name)
        if sealed is None:
            return None
        try:
            return _cipher(self._key).decrypt(sealed.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise UserError(
                f"{self.path}: the token for {name!r} does not decrypt with {KEY_ENV} "
                "(was the key changed?); sign in again"
            ) from None

    def save(self, name: str, secret: str) -> None:
        """Store ``secret`` under ``name``."""
        data = self._read()
        data[name] = _cipher(self._key).encrypt(secret.encode("utf-8")).decode("ascii")
        self._write(data)

    def forget(self, name: str) -> bool:
        """Drop the secret saved under ``name``; True if there was one."""
        data = self._read()
        if name not in data:
            return False
        del data[name]
        self._write(data)
        return True

    def _write(self, data: dict[str, str]) -> None:
        """Replace the file atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

"""Signed, expiring tokens for links people click: attendance answers, sign-in links,
dashboard sessions and CSRF tokens.

A token carries a small JSON payload, the time it was signed and an HMAC-SHA256 of both
under the house's key (itsdangerous), with a *purpose* as salt, so a token minted for one
use (say an attendance answer) is refused for another (a sign-in). The key material comes
from the caller (:func:`mentorpulse.storage.keys.signing_keys`); several keys rotate: the
newest signs, any of them verifies. A refused token says why (expired or invalid) but never
echoes the token: callers log the reason, not the token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

# Purposes: one salt per use, so tokens never cross from one use to another.
ANSWER = "attendance-answer"
SIGN_IN = "dashboard-sign-in"
SESSION = "dashboard-session"
CSRF = "dashboard-csrf"


class BadToken(Exception):
    """A token that cannot be used: ``expired`` (well signed, too old) or invalid."""

    def __init__(self, reason: str, *, expired: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


class Signer:
    """Signs and reads tokens for one purpose with the house's keys (newest last)."""

    def __init__(self, keys: Sequence[bytes], purpose: str) -> None:
        if not keys:
            raise ValueError("no signing key")
        self._serializer = URLSafeTimedSerializer(list(keys), salt=purpose)

    def sign(self, payload: Mapping[str, Any]) -> str:
        """A URL-safe token for ``payload`` (small JSON: ids, an email, a nonce)."""
        token = self._serializer.dumps(dict(payload))
        return token if isinstance(token, str) else token.decode("ascii")

    def read(self, token: str, *, max_age: timedelta) -> dict[str, Any]:
        """The payload of a token signed with one of the keys at most ``max_age`` ago.

        Raises :class:`BadToken`; its message never contains the token.
        """
        if len(token) > 4096:  # a link is untrusted input: bound what is parsed
            raise BadToken("token too long", expired=False)
        try:
            payload = self._serializer.loads(token, max_age=int(max_age.total_seconds()))
        except SignatureExpired:
            raise BadToken("token expired", expired=True) from None
        except BadData:
            raise BadToken("token invalid", expired=False) from None
        if not isinstance(payload, dict):
            raise BadToken("token invalid", expired=False)
        return payload

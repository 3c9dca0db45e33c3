"""The house's signing keys: made once, shared by every process through the database.

Links in emails (attendance answers, sign-in links) and dashboard sessions are signed with
these keys (:mod:`mentorpulse.signing`). Keeping them in the database means every worker of
a pool signs and verifies alike with nothing to distribute, and a restart keeps sent links
valid. ``$MENTORPULSE_SIGNING_KEY`` (comma-separated, newest last) replaces them for
operators who keep keys in a secret store; rotating it keeps older keys verifying.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from mentorpulse.storage.models import SigningKey

KEY_ENV = "MENTORPULSE_SIGNING_KEY"


def signing_keys(db: Db) -> list[bytes]:
    """The keys to sign with (the last) and verify with (any), oldest first.

    The first call on a new database creates one random 256-bit key; concurrent first
    calls agree on one (the loser of the insert reads the winner's).
    """
    configured = [k.strip() for k in os.environ.get(KEY_ENV, "").split(",") if k.strip()]
    if configured:
        return [k.encode("utf-8") for k in configured]
    stored = list(db.scalars(select(SigningKey.key).order_by(SigningKey.id)))
    if stored:
        return [k.encode("ascii") for k in stored]
    try:
        with db.begin_nested():
            db.execute(
                insert(SigningKey).values(
                    id=1, key=secrets.token_urlsafe(32), created_at=datetime.now(UTC)
                )
            )
    except IntegrityError:
        pass
    return [k.encode("ascii") for k in db.scalars(select(SigningKey.key).order_by(SigningKey.id))]

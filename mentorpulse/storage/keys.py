"""The house's signing keys: made once, shared by every process through the database.

Links in emails (attendance answers, sign-in links) and dashboard sessions are signed with
these keys (:mod:`mentorpulse.signing`). Keeping them in the database means every worker of
a pool signs and verifies alike with nothing to distribute, and a restart keeps sent links
valid. ``$MENTORPULSE_SIGNING_KEY`` (comma-separated, newest last, each at least 32
characters) replaces them for operators who keep keys in a secret store; rotating it keeps
older keys verifying. Every reader goes through :func:`signing_keys`, which caches them for
:data:`CACHE_SECONDS`, so all pages of a process agree on them.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from mentorpulse.errors import UserError
from mentorpulse.storage.models import SigningKey

KEY_ENV = "MENTORPULSE_SIGNING_KEY"
MIN_KEY_LENGTH = 32  # characters of a key given in $MENTORPULSE_SIGNING_KEY
CACHE_SECONDS = 60.0  # how long a process reuses the keys it read before reading again

# The one cache of every reader (answer links, sign-in links, dashboard sessions and CSRF),
# per database: all of a process's pages agree on the keys, and see a change within
# CACHE_SECONDS.
_cache: weakref.WeakKeyDictionary[Engine, tuple[str, float, list[bytes]]] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def signing_keys(db: Db) -> list[bytes]:
    """The keys to sign with (the last) and verify with (any), oldest first.

    The first call on a new database creates one random 256-bit key; concurrent first
    calls agree on one (the loser of the insert reads the winner's).
    """
    configured = os.environ.get(KEY_ENV, "")
    engine = db.get_bind().engine
    with _cache_lock:
        cached = _cache.get(engine)
    if cached is not None and cached[0] == configured and time.monotonic() < cached[1]:
        return cached[2]
    keys, created = _read(db, configured)
    if not created:  # a key made in this transaction is not kept until it is committed
        with _cache_lock:
            _cache[engine] = (configured, time.monotonic() + CACHE_SECONDS, keys)
    return keys


def configured_keys(configured: str | None = None) -> list[bytes]:
    """The keys ``$MENTORPULSE_SIGNING_KEY`` gives (none: the database's are used); a key
    shorter than :data:`MIN_KEY_LENGTH` is refused with one message, never the key."""
    if configured is None:
        configured = os.environ.get(KEY_ENV, "")
    given = [k.strip() for k in configured.split(",") if k.strip()]
    short = [n for n, k in enumerate(given, 1) if len(k) < MIN_KEY_LENGTH]
    if short:
        raise UserError(
            f"{KEY_ENV}: key {short[0]} of {len(given)} is shorter than {MIN_KEY_LENGTH} "
            "characters; give random keys (comma-separated, newest last), e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            code=2,
        )
    return [k.encode("utf-8") for k in given]


def _read(db: Db, configured: str) -> tuple[list[bytes], bool]:
    """The keys, and whether this call created the first one."""
    given = configured_keys(configured)
    if given:
        return given, False
    stored = list(db.scalars(select(SigningKey.key).order_by(SigningKey.id)))
    if stored:
        return [k.encode("ascii") for k in stored], False
    try:
        with db.begin_nested():
            db.execute(
                insert(SigningKey).values(
                    id=1, key=secrets.token_urlsafe(32), created_at=datetime.now(UTC)
                )
            )
    except IntegrityError:
        pass
    keys = [k.encode("ascii") for k in db.scalars(select(SigningKey.key).order_by(SigningKey.id))]
    return keys, True

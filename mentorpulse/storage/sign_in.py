"""Dashboard sign-in links (the nonce of each link sent, used at most once) and the
sessions they open (kept until signed out or expired).

The caller opens the transaction; nothing here commits.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session as Db

from mentorpulse.storage.models import DashboardSession, SignInLink


def record_link(db: Db, *, nonce: str, email: str, now: datetime, expires_at: datetime) -> None:
    """Keep a link that is about to be sent (its nonce is unique: random, 128 bits)."""
    db.add(SignInLink(nonce=nonce, email=email, created_at=now, expires_at=expires_at))
    db.flush()


def links_since(db: Db, email: str, since: datetime) -> int:
    """How many links were sent to ``email`` since ``since`` (to bound mail to one person)."""
    query = select(func.count()).where(SignInLink.email == email, SignInLink.created_at >= since)
    return int(db.scalar(query) or 0)


def use_link(db: Db, nonce: str, *, now: datetime) -> bool:
    """Mark the link used; False when it is unknown, already used or expired.

    One conditional UPDATE, so two clicks racing each other sign in once.
    """
    result = db.execute(
        update(SignInLink)
        .where(
            SignInLink.nonce == nonce,
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(used_at=now),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def link_used(db: Db, nonce: str) -> bool:
    """Whether the link was used already (an unknown nonce counts as used: never sent)."""
    used = db.execute(select(SignInLink.used_at).where(SignInLink.nonce == nonce)).first()
    return used is None or used[0] is not None


def forget_links(db: Db, *, before: datetime) -> int:
    """Drop links that expired before ``before``; returns how many."""
    result = db.execute(
        delete(SignInLink).where(SignInLink.expires_at < before),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def open_session(db: Db, sid: str, *, email: str, now: datetime, expires_at: datetime) -> None:
    """Keep a session that was just signed in (``sid``: random, 128 bits)."""
    db.add(
        DashboardSession(
            sid_hash=_sid_hash(sid), email=email, created_at=now, expires_at=expires_at
        )
    )
    db.flush()


def session_open(db: Db, sid: str, *, now: datetime) -> bool:
    """Whether the session is still signed in (not signed out, not expired)."""
    query = select(DashboardSession.expires_at).where(DashboardSession.sid_hash == _sid_hash(sid))
    expires_at = db.scalar(query)
    return expires_at is not None and expires_at > now


def close_session(db: Db, sid: str) -> None:
    """Sign the session out (nothing when it is gone already)."""
    db.execute(
        delete(DashboardSession).where(DashboardSession.sid_hash == _sid_hash(sid)),
        execution_options={"synchronize_session": False},
    )


def forget_sessions(db: Db, *, before: datetime) -> int:
    """Drop sessions that expired before ``before``; returns how many."""
    result = db.execute(
        delete(DashboardSession).where(DashboardSession.expires_at < before),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]

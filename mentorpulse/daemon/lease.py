"""Named leases in the database: who holds a piece of work, and until when.

The daemon lock is one: on SQLite a second daemon on the same database must refuse to
start. Taking a lease is one conditional write, so two workers racing for it cannot both
win; a worker that dies simply stops renewing and its lease expires.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from mentorpulse.storage.models import Lease


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire(
    sessions: sessionmaker[Session], name: str, holder: str, *, ttl: timedelta, now: datetime
) -> str | None:
    """Take or renew ``name``; returns ``None`` on success, else the current holder."""
    expires = now + ttl
    with sessions.begin() as db:
        try:
            with db.begin_nested():
                db.execute(insert(Lease).values(name=name, holder=holder, expires_at=expires))
        except IntegrityError:
            taken = db.execute(
                update(Lease)
                .where(Lease.name == name, (Lease.expires_at < now) | (Lease.holder == holder))
                .values(holder=holder, expires_at=expires)
            )
            if taken.rowcount == 0:  # type: ignore[attr-defined]
                return db.scalar(select(Lease.holder).where(Lease.name == name)) or "unknown"
    return None


def release(sessions: sessionmaker[Session], name: str, holder: str) -> None:
    with sessions.begin() as db:
        db.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))

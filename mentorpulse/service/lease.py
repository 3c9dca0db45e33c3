"""Named leases in the database: who holds a piece of work, and until when.

The daemon lock is one: on SQLite a second daemon on the same database must refuse to
start. Taking a lease is one conditional write, so two workers racing for it cannot both
win; a worker that dies simply stops renewing and its lease expires. A holder that died
on this very machine need not be waited for: its process is gone, so its lease is taken
over at once (again by a conditional write naming the dead holder, so one taker wins).

A holder is ``host:pid``, followed by ``/`` and a fingerprint of the process space (boot
and PID namespace) where the platform has one: two containers that share a host name,
or two machines cloned with the same one, never mistake each other's PIDs for their own.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.storage import runs

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The outcome of ``acquire()``: whether the caller holds the lease now, who does,
    and until when; ``took_over`` names a dead holder on this machine it replaced.

    True exactly when the caller holds the lease: ``if lease.acquire(...)`` reads "we
    hold it", and a refusal is falsy whoever holds it instead.
    """

    acquired: bool
    holder: str
    expires_at: datetime
    took_over: str | None = None

    def __bool__(self) -> bool:
        return self.acquired


def _process_space() -> str | None:
    """Which PIDs ours can be compared with: same boot of the same kernel, same namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def _host() -> str:
    """This machine's name, cut so that a holder always fits its column."""
    return socket.gethostname()[:160]


def holder_name(pid: int | None = None) -> str:
    """This process (or ``pid`` on this machine) as a lease holder."""
    space = _process_space()
    name = f"{_host()}:{os.getpid() if pid is None else pid}"
    return f"{name}/{space}" if space else name


def display(holder: str) -> str:
    """``host:pid``, the part of a holder a person reads."""
    return holder.partition("/")[0]


def alive_here(holder: str) -> bool | None:
    """Whether ``holder``'s process is alive, if it is one of this machine's process space
    (None: another host or namespace, whose PIDs mean nothing here)."""
    name, _, space = holder.partition("/")
    host, _, pid_text = name.rpartition(":")
    ours = _process_space()
    if host != _host() or (space and ours and space != ours):
        return None
    if not pid_text.isdigit() or int(pid_text) == 0:
        return None
    if int(pid_text) == os.getpid():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` is a process of this machine's process space that has exited."""
    return alive_here(holder) is False


def acquire(
    database: sessionmaker[Db], name: str, holder: str, *, ttl: timedelta, now: datetime
) -> LeaseState:
    """Take or renew ``name`` for ``ttl``; if another holds it, say who and until when.

    The result is true when ``holder`` holds the lease (see :class:`LeaseState`)."""
    expires = now + ttl
    mine = LeaseState(acquired=True, holder=holder, expires_at=expires)
    for _attempt in range(3):  # the holder may release it between our reads
        with database.begin() as db:
            if runs.insert_lease(db, name, holder, expires):
                return mine
            if runs.take_lease(db, name, holder, expires, now=now, replacing=None):
                return mine
            current = runs.lease_holder(db, name)
            if current is None:
                continue
            other, until = current
            if not _dead_here(other):
                return LeaseState(acquired=False, holder=other, expires_at=until)
            if runs.take_lease(db, name, holder, expires, now=now, replacing=other):
                log.warning("lease_taken_over", lease=name, dead_holder=other, holder=holder)
                return LeaseState(True, holder, expires, took_over=other)
            # another process took it over first: read who
    return LeaseState(acquired=False, holder="unknown", expires_at=expires)


def release(database: sessionmaker[Db], name: str, holder: str) -> None:
    """Give the lease up, if ``holder`` still holds it."""
    with database.begin() as db:
        runs.release_lease(db, name, holder)

"""Leases (who holds a piece of work, until when) and job runs (when a stage last ran).

Taking a lease is one conditional write, so two workers racing for it cannot both win.
The process logic around them (holder names, dead-holder takeover) is the service's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from mentorpulse.storage.models import JobRun, Lease


def insert_lease(db: Db, name: str, holder: str, expires_at: datetime) -> bool:
    """Create the lease for ``holder``; False if it exists already (whoever holds it)."""
    try:
        with db.begin_nested():
            db.execute(insert(Lease).values(name=name, holder=holder, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def take_lease(
    db: Db, name: str, holder: str, expires_at: datetime, *, now: datetime, replacing: str | None
) -> bool:
    """Move the lease to ``holder`` if it expired or is already theirs (``replacing`` None),
    or if ``replacing`` still holds it; True if the write took."""
    still_held_by = (
        (Lease.expires_at < now) | (Lease.holder == holder)
        if replacing is None
        else Lease.holder == replacing
    )
    taken = db.execute(
        update(Lease)
        .where(Lease.name == name, still_held_by)
        .values(holder=holder, expires_at=expires_at)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def lease_holder(db: Db, name: str) -> tuple[str, datetime] | None:
    """Who holds the lease and until when; None when nobody does."""
    row = db.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).one_or_none()
    return None if row is None else (row[0], row[1])


def release_lease(db: Db, name: str, holder: str) -> None:
    """Give the lease up, if ``holder`` still holds it."""
    db.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))


def record_run(db: Db, stage: str, error: str | None, now: datetime) -> bool:
    """Keep when ``stage`` ran and whether it failed; returns whether its run before had
    failed. A stage's first run in two processes at once: one gets an IntegrityError."""
    row = db.get(JobRun, stage)
    if row is None:
        row = JobRun(name=stage, last_run_at=now, failing=False)
        db.add(row)
    was_failing = bool(row.failing)
    row.last_run_at = now
    row.failing = error is not None
    if error is None:
        row.last_success_at = now
    else:
        row.last_error, row.last_error_at = error, now
    return was_failing


def last_run_at(db: Db, stage: str) -> datetime | None:
    """When ``stage`` last ran (None: never)."""
    return db.scalar(select(JobRun.last_run_at).where(JobRun.name == stage))


def last_runs(db: Db, stages: list[str]) -> dict[str, datetime]:
    """When each of ``stages`` last ran (those that never did are missing)."""
    rows = db.execute(select(JobRun.name, JobRun.last_run_at).where(JobRun.name.in_(stages)))
    return {row.name: row.last_run_at for row in rows}


def job_runs(db: Db) -> dict[str, JobRun]:
    """Every recorded stage run by job name."""
    return {r.name: r for r in db.scalars(select(JobRun))}


def get_lease(db: Db, name: str) -> Lease | None:
    """The lease's row, if anyone holds (or held) it."""
    return db.get(Lease, name)

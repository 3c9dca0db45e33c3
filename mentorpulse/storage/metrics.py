"""The database-wide figures `/metrics` exports: findings, outbox, live workers.

Read at scrape time in the caller's (read-only) transaction; the per-source figures come
from :func:`mentorpulse.storage.sources.sources` and ``event_counts``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, DateTime, column, func, inspect, select, table, text
from sqlalchemy.orm import Session as Db

from mentorpulse.storage.models import Finding, OutboxMessage

# Why a row's last send attempt failed, from its status: the outbox keeps no other record.
FAILURE_KINDS = {"pending": "retrying", "failed": "permanent", "unknown": "delivery_unknown"}
QUEUED = ("pending", "sending")
# Every status notify gives a row, so each is exported (0 included) before it first occurs.
OUTBOX_STATUSES = (
    "digest",
    "pending",
    "sending",
    "sent",
    "digested",
    "failed",
    "unknown",
    "cancelled",
)  # waiting to go out (or going out now)
PROCRASTINATE_WORKERS = "procrastinate_workers"


def findings_by_rule_and_state(db: Db) -> list[tuple[str, str, int]]:
    """(rule id, state, how many findings) for every pair present."""
    rows = db.execute(
        select(Finding.rule_id, Finding.state, func.count()).group_by(
            Finding.rule_id, Finding.state
        )
    )
    return [(rule, state, count) for rule, state, count in rows]


def outbox_by_status(db: Db) -> dict[str, int]:
    """How many outbox rows are in each status (every known status, 0 included)."""
    rows = db.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
    return dict.fromkeys(OUTBOX_STATUSES, 0) | dict(rows.all())


def send_failures_by_kind(db: Db) -> dict[str, int]:
    """Rows whose last send attempt failed, by kind (see :data:`FAILURE_KINDS`)."""
    rows = db.execute(
        select(OutboxMessage.status, func.count())
        .where(OutboxMessage.last_error.is_not(None), OutboxMessage.status.in_(FAILURE_KINDS))
        .group_by(OutboxMessage.status)
    ).all()
    counts = dict.fromkeys(FAILURE_KINDS.values(), 0)
    for status, count in rows:
        counts[FAILURE_KINDS[status]] = count
    return counts


def oldest_queued_at(db: Db) -> datetime | None:
    """When the oldest row still waiting to be sent was written (None: nothing waits)."""
    return db.scalar(
        select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status.in_(QUEUED))
    )


def live_workers(db: Db, *, now: datetime, stalled_after: timedelta) -> int | None:
    """Procrastinate workers whose heartbeat is newer than ``stalled_after``; None when
    the database has no Procrastinate schema (an embedded daemon)."""
    connection: Connection = db.connection()
    if connection.dialect.name != "postgresql" or not inspect(connection).has_table(
        PROCRASTINATE_WORKERS
    ):
        return None
    workers = table(PROCRASTINATE_WORKERS, column("last_heartbeat", DateTime(timezone=True)))
    return (
        db.scalar(
            select(func.count())
            .select_from(workers)
            .where(workers.c.last_heartbeat > now - stalled_after)
        )
        or 0
    )


def ping(db: Db) -> None:
    """One round trip: raises if the database cannot answer."""
    db.execute(text("SELECT 1"))

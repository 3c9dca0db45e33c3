"""The outbox table: rows written once per idempotency key, claimed, leased, finished.

The decisions (what to send, when to retry, what a lost lease means) are notify's; these
are the statements they run, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.storage.locks import begin_write
from mentorpulse.storage.models import Finding, OutboxMessage, Pairing, Person, Program

BATCH = 200  # rows per INSERT: well under SQLite's bound-parameter limit


def insert_new(db: Db, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows whose idempotency key is new; returns how many were inserted."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:
        raise NotImplementedError(f"outbox enqueue on {dialect!r} is not supported")
    inserted = 0
    for start in range(0, len(rows), BATCH):
        stmt = (
            insert(OutboxMessage)
            .values(rows[start : start + BATCH])
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(OutboxMessage.id)  # rowcount is unreliable here; returned ids are not
        )
        inserted += len(db.execute(stmt).all())
    return inserted


def _skip_locked(db: Db, query: Select[OutboxMessage]) -> Select[OutboxMessage]:
    """On PostgreSQL, rows another worker has locked are skipped, not waited for."""
    if db.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def lock_due(db: Db, *, now: datetime, limit: int) -> list[OutboxMessage]:
    """Up to ``limit`` rows due for sending (or whose sender's lease expired), locked for
    this transaction (on SQLite, under its write lock: two runs never share rows)."""
    begin_write(db)
    query = (
        select(OutboxMessage)
        .where(
            or_(
                and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now),
                and_(OutboxMessage.status == "sending", OutboxMessage.lease_until < now),
            )
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    return list(db.scalars(_skip_locked(db, query)))


def lease_one(db: Db, message_id: int, *, now: datetime, until: datetime) -> bool:
    """Lease one row that is still pending and due; False if another worker took it.

    One conditional UPDATE: atomic on both databases, no lock held beyond it.
    """
    result = db.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.status == "pending",
            OutboxMessage.next_attempt_at <= now,
        )
        .values(status="sending", lease_until=until, attempts=OutboxMessage.attempts + 1),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish_sent(db: Db, message_id: int, *, now: datetime, lease_until: datetime | None) -> bool:
    """Mark a row sent in one conditional UPDATE (with ``lease_until``: only while it is
    still ``sending`` under that lease); False if no row matched.

    One statement and no read before it: the dispatcher commits this once per message,
    so its round trips are the dispatch rate's floor on PostgreSQL. It runs on the
    session's connection, not through the ORM (a third less CPU): a copy of the row
    loaded in this session keeps its old values until refreshed.
    """
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        # No wait for the WAL flush: a server crash in the next instant could lose the
        # mark, and the row is then resent with its Message-ID, as after a lost lease.
        connection.execute(text("SET LOCAL synchronous_commit = off"))
    conditions = [OutboxMessage.id == message_id]
    if lease_until is not None:
        conditions += [OutboxMessage.status == "sending", OutboxMessage.lease_until == lease_until]
    result = connection.execute(
        update(OutboxMessage)
        .where(*conditions)
        .values(status="sent", sent_at=now, lease_until=None, last_error=None)
    )
    return result.rowcount == 1


def get_for_write(db: Db, message_id: int) -> OutboxMessage:
    """A row, read under the write lock the change that follows needs."""
    begin_write(db)  # the ownership check and the write it guards see the same row
    row = db.get(OutboxMessage, message_id)
    if row is None:
        raise LookupError(f"outbox row {message_id} does not exist")
    return row


def lock_due_digest_items(db: Db, *, now: datetime) -> list[OutboxMessage]:
    """Digest items whose window closed, by recipient, locked for this transaction."""
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.status == "digest", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.recipient, OutboxMessage.next_attempt_at, OutboxMessage.id)
    )
    query = _skip_locked(db, query)
    begin_write(db)  # SQLite: two runs must not fold the same items into two digests
    return list(db.scalars(query))


def unsent_of_findings(db: Db, *, except_template: str) -> list[OutboxMessage]:
    """Rows about a finding that are not sent yet (pending or waiting for a digest)."""
    return list(
        db.scalars(
            select(OutboxMessage).where(
                OutboxMessage.status.in_(("pending", "digest")),
                OutboxMessage.finding_key.is_not(None),
                OutboxMessage.template != except_template,
            )
        )
    )


def recipients_of_findings(
    db: Db, finding_keys: Collection[str], *, except_template: str
) -> list[tuple[str, str, str]]:
    """(finding key, recipient, status) of the rows, neither failed nor cancelled, that
    told (or are about to tell) someone of these episodes."""
    if not finding_keys:
        return []
    rows = db.execute(
        select(OutboxMessage.finding_key, OutboxMessage.recipient, OutboxMessage.status)
        .where(
            OutboxMessage.finding_key.in_(list(finding_keys)),
            OutboxMessage.status.not_in(("failed", "cancelled")),
            OutboxMessage.template != except_template,
        )
        .distinct()
    )
    return [(key, recipient, status) for key, recipient, status in rows if key is not None]


def queued_keys(db: Db, keys: Collection[str]) -> set[str]:
    """Which of these idempotency keys have a row already."""
    return set(
        db.scalars(
            select(OutboxMessage.idempotency_key).where(
                OutboxMessage.idempotency_key.in_(list(keys))
            )
        )
    )


def retry(db: Db, *, now: datetime, ids: Iterable[int] = ()) -> int:
    """Put failed (or unknown) rows back in the queue, due now; returns how many."""
    query = update(OutboxMessage).where(OutboxMessage.status.in_(("failed", "unknown")))
    id_list = list(ids)
    if id_list:
        query = query.where(OutboxMessage.id.in_(id_list))
    result = db.execute(
        query.values(status="pending", next_attempt_at=now, lease_until=None),
        execution_options={"synchronize_session": False},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge(
    db: Db,
    *,
    before: datetime,
    statuses: Iterable[str] = ("sent", "digested"),
    keep: Iterable[str] = (),
    keep_prefixes: Iterable[str] = (),
    keep_since: Iterable[tuple[str, datetime]] = (),
) -> int:
    """Delete finished rows older than ``before``; returns how many.

    A purged key is forgotten, so rows of episodes still firing (``keep``: their finding
    keys) stay, or their reminders would be sent again; so do rows whose idempotency key
    starts with one of ``keep_prefixes`` (the scheduled reports of the current period),
    and rows whose key starts with ``prefix`` created since ``since`` (``keep_since``: the
    attendance questions that could still be asked again).
    """
    query = delete(OutboxMessage).where(
        OutboxMessage.status.in_(tuple(statuses)),
        OutboxMessage.created_at < before,
        *(~OutboxMessage.idempotency_key.startswith(p, autoescape=True) for p in keep_prefixes),
        *(
            ~and_(
                OutboxMessage.idempotency_key.startswith(prefix, autoescape=True),
                OutboxMessage.created_at >= since,
            )
            for prefix, since in keep_since
        ),
    )
    kept = list(keep)
    if kept:
        query = query.where(
            or_(OutboxMessage.finding_key.is_(None), OutboxMessage.finding_key.not_in(kept))
        )
    result = db.execute(query, execution_options={"synchronize_session": False})
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def counts(db: Db) -> dict[str, int]:
    """Rows per status, for ``outbox list`` and metrics."""
    return {
        status: int(n)
        for status, n in db.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
    }


def latest(db: Db, *, statuses: Collection[str] = (), limit: int) -> list[OutboxMessage]:
    """The newest rows first, of these statuses (all when none is given)."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if statuses:
        query = query.where(OutboxMessage.status.in_(list(statuses)))
    return list(db.scalars(query))


def firing_since(db: Db) -> list[tuple[str, datetime]]:
    """(fingerprint, firing since) of each firing finding: the episodes still notifying."""
    rows = db.execute(
        select(Finding.fingerprint, Finding.firing_since).where(Finding.state == "firing")
    )
    return [(fingerprint, since) for fingerprint, since in rows if since is not None]


def findings_to_notify(
    db: Db, *, resolved_since: datetime | None
) -> list[tuple[Finding, Pairing, Program, Person, Person]]:
    """Firing findings (and, with ``resolved_since``, those resolved since then) with their
    pairing, program, mentor and mentee, in the order they were found."""
    mentor = aliased(Person)
    mentee = aliased(Person)
    states = Finding.state == "firing"
    if resolved_since is not None:
        states = or_(states, (Finding.state == "resolved") & (Finding.until >= resolved_since))
    rows = db.execute(
        select(Finding, Pairing, Program, mentor, mentee)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(Program, Program.id == Pairing.program_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(states)
        .order_by(Finding.id)
    )
    return [(f, p, program, m, e) for f, p, program, m, e in rows]


def id_of(db: Db, idempotency_key: str) -> int | None:
    """The row queued under ``idempotency_key``, if any."""
    return db.scalar(
        select(OutboxMessage.id).where(OutboxMessage.idempotency_key == idempotency_key)
    )

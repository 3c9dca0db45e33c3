"""The outbox: notifications written once, claimed under a lease, marked sent or failed.

A row is written in the same transaction as the decision to send it, keyed by its
idempotency key, so re-running a stage never queues a second copy. Sending happens
later, by whichever worker claims the row; a worker that dies mid-send leaves a
"sending" row whose lease expires, and the next worker sends it again with the same
Message-ID (receivers and our FileTransport de-duplicate on it) - unless the row is
``at_most_once``, in which case it becomes ``unknown`` and the operator is told.

Digest items are rows too (status ``digest``): when their window closes,
:func:`compose_digests` folds every due item of a recipient into one new row, in one
transaction, so each item is carried by exactly one digest email.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session as Db

from mentorpulse.backoff import OUTBOX_BACKOFF
from mentorpulse.notify.render import header_safe
from mentorpulse.notify.route import DIGEST, RESOLVED, Notification
from mentorpulse.storage.locks import begin_write
from mentorpulse.storage.models import OutboxMessage

log = structlog.get_logger(__name__)

DEFAULT_DOMAIN = "mentorpulse.invalid"
MAX_ERROR_CHARS = 2000
BATCH = 200  # rows per INSERT: well under SQLite's bound-parameter limit


def sender_domain(sender: str) -> str:
    """The right-hand side of our Message-IDs: the sender's domain."""
    return sender.rpartition("@")[2] or DEFAULT_DOMAIN


def message_id_for(key: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A Message-ID derived from the idempotency key: every retry of a message shares it."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def enqueue(
    db: Db,
    notifications: Iterable[Notification],
    *,
    now: datetime,
    domain: str = DEFAULT_DOMAIN,
) -> int:
    """Insert rows for new notifications; a key already queued (or sent) is a no-op.

    ``domain`` is the right-hand side of the Message-ID, fixed at enqueue time so that
    every retry carries the same one. Returns how many rows were actually inserted.
    """
    rows: list[dict[str, Any]] = [
        {
            "idempotency_key": n.idempotency_key,
            "recipient": n.recipient,
            "template": n.template,
            "payload": n.payload,
            "status": "digest" if n.digest else "pending",
            "attempts": 0,
            "next_attempt_at": n.due or now,
            "lease_until": None,
            "message_id": message_id_for(n.idempotency_key, domain),
            "created_at": now,
            "sent_at": None,
            "last_error": None,
            "finding_key": n.finding_key,
            "digest_key": None,
            "at_most_once": n.at_most_once,
        }
        for n in notifications
    ]
    if not rows:
        return 0
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
    log.info("outbox_enqueued", offered=len(rows), inserted=inserted)
    return inserted


def claim_due(db: Db, *, now: datetime, lease: timedelta, limit: int = 100) -> list[OutboxMessage]:
    """Take up to ``limit`` rows that are due (or whose sender died) for this worker.

    At-most-once rows (HR reports) come back *listed, not leased*: the caller leases
    each with :func:`claim_one` right before sending it, so a crash mid-batch leaves at
    most one of them in doubt instead of the whole batch. The caller must commit before
    sending, so other workers see the lease.
    """
    begin_write(db)  # SQLite: read and lease under one write lock, or two runs share rows
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
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = []
    for row in db.scalars(query):
        if row.status == "sending":
            if row.at_most_once:
                # It may or may not have gone out; sending again could duplicate it.
                row.status = "unknown"
                row.lease_until = None
                row.last_error = "the sender's lease expired mid-send: delivery unknown"
                log.error(
                    "outbox_delivery_unknown",
                    message_row=row.id,
                    recipient_domain=row.recipient.rpartition("@")[2],
                    hint="check the mail server's log; `mentorpulse outbox retry` resends",
                )
                continue
            log.warning("outbox_lease_expired", message_row=row.id, attempts=row.attempts)
        rows.append(row)
        if row.at_most_once:
            continue  # leased by claim_one, alone, right before its send
        row.status = "sending"
        row.lease_until = now + lease
        row.attempts = (row.attempts or 0) + 1
    db.flush()
    return rows


def claim_one(db: Db, message_id: int, *, now: datetime, lease: timedelta) -> datetime | None:
    """Lease one listed at-most-once row for its send; returns the lease's end, or None if
    another worker took it (or it stopped being due) since it was listed.

    One conditional UPDATE: atomic on both databases, no lock held beyond it.
    """
    until = now + lease
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
    return until if result.rowcount == 1 else None  # type: ignore[attr-defined]


def mark_sent(
    db: Db, message_id: int, *, now: datetime, lease_until: datetime | None = None
) -> bool:
    """The transport accepted the message: it is never sent again.

    With ``lease_until``, only if the row is still under the claim we made (else another
    worker took it over and owns its outcome); returns whether the row was updated.
    """
    row = _owned(db, message_id, lease_until)
    if row is None:
        return False
    row.status = "sent"
    row.sent_at = now
    row.lease_until = None
    row.last_error = None
    return True


def mark_failed(
    db: Db,
    message_id: int,
    *,
    error: str,
    retryable: bool,
    now: datetime,
    lease_until: datetime | None = None,
) -> bool:
    """Record a failed attempt: retry later with backoff, or give up for good."""
    row = _owned(db, message_id, lease_until)
    if row is None:
        return False
    # A server's reply may hold anything; PostgreSQL refuses a NUL, and a failed write
    # here would strand the row in "sending".
    row.last_error = header_safe(error)[:MAX_ERROR_CHARS]
    row.lease_until = None
    if retryable:
        row.status = "pending"
        row.next_attempt_at = now + backoff(row.attempts)
    else:
        row.status = "failed"
    return True


def release(db: Db, message_id: int, *, lease_until: datetime) -> bool:
    """Hand back a claimed row that was not sent: due again at once, attempt not counted."""
    row = _owned(db, message_id, lease_until)
    if row is None:
        return False
    row.status = "pending"
    row.lease_until = None
    row.attempts = max(row.attempts - 1, 0)
    return True


def _owned(db: Db, message_id: int, lease_until: datetime | None) -> OutboxMessage | None:
    begin_write(db)  # the ownership check and the write it guards see the same row
    row = _get(db, message_id)
    if lease_until is not None and (row.status != "sending" or row.lease_until != lease_until):
        log.warning("outbox_lease_lost", message_row=message_id, status=row.status)
        return None
    return row


def compose_digests(db: Db, *, now: datetime, domain: str = DEFAULT_DOMAIN) -> int:
    """Fold each recipient's due digest items into one ``digest`` row; returns how many.

    Items are locked (``SKIP LOCKED`` on PostgreSQL) and marked in the same transaction
    that inserts the digest row, so two workers never put one item in two emails. The
    digest's key is derived from its items, so its Message-ID is stable across retries.
    An empty digest is never written: no due items, no row.
    """
    query = (
        select(OutboxMessage)
        .where(OutboxMessage.status == "digest", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.recipient, OutboxMessage.next_attempt_at, OutboxMessage.id)
    )
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    begin_write(db)  # SQLite: two runs must not fold the same items into two digests
    groups: dict[str, list[OutboxMessage]] = {}
    for row in db.scalars(query):
        groups.setdefault(row.recipient.lower(), []).append(row)
    composed: list[Notification] = []
    for items in groups.values():
        keys = sorted(i.idempotency_key for i in items)
        key = "digest:" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:40]
        composed.append(
            Notification(
                recipient=items[0].recipient,
                template=DIGEST,
                idempotency_key=key,
                payload={
                    "recipient_name": items[0].payload.get("recipient_name"),
                    "items": [{"template": i.template, **i.payload} for i in items],
                },
            )
        )
        for item in items:
            item.status = "digested"
            item.digest_key = key
    db.flush()
    if composed:
        enqueue(db, composed, now=now, domain=domain)
        log.info(
            "digests_composed", digests=len(composed), items=sum(len(g) for g in groups.values())
        )
    return len(composed)


def cancel_stale(db: Db, live: Collection[str]) -> int:
    """Unsent rows of episodes that no longer notify (resolved, silenced, inhibited) are
    cancelled: a reminder held back by quiet hours or a digest window must not go out
    after its finding resolved. ``live`` holds the finding keys that still notify."""
    rows = db.scalars(
        select(OutboxMessage).where(
            OutboxMessage.status.in_(("pending", "digest")),
            OutboxMessage.finding_key.is_not(None),
            OutboxMessage.template != RESOLVED,
        )
    )
    cancelled = 0
    for row in rows:
        if row.finding_key not in live:
            row.status = "cancelled"
            row.last_error = "its finding stopped notifying before this was sent"
            cancelled += 1
    if cancelled:
        log.info("outbox_cancelled", rows=cancelled)
    return cancelled


def told(db: Db, finding_keys: Iterable[str]) -> dict[str, list[tuple[str, bool]]]:
    """Who was (or is about to be) told of each episode: address, and whether by digest."""
    keys = list(finding_keys)
    out: dict[str, list[tuple[str, bool]]] = {}
    if not keys:
        return out
    rows = db.execute(
        select(OutboxMessage.finding_key, OutboxMessage.recipient, OutboxMessage.status)
        .where(
            OutboxMessage.finding_key.in_(keys),
            OutboxMessage.status.not_in(("failed", "cancelled")),
            OutboxMessage.template != RESOLVED,
        )
        .distinct()
    )
    for finding_key, recipient, status in rows:
        assert finding_key is not None
        out.setdefault(finding_key, []).append((recipient, status in ("digest", "digested")))
    return out


def retry(
    db: Db,
    *,
    now: datetime,
    ids: Iterable[int] = (),
) -> int:
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
) -> int:
    """Delete finished rows older than ``before``; returns how many.

    A purged key is forgotten, so rows of episodes still firing (``keep``: their finding
    keys) stay, or their reminders would be sent again; so do rows whose idempotency key
    starts with one of ``keep_prefixes`` (the scheduled reports of the current period).
    """
    query = delete(OutboxMessage).where(
        OutboxMessage.status.in_(tuple(statuses)),
        OutboxMessage.created_at < before,
        *(~OutboxMessage.idempotency_key.startswith(p, autoescape=True) for p in keep_prefixes),
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


def backoff(attempts: int) -> timedelta:
    """The wait after a row's ``attempts``-th failed send (see :mod:`mentorpulse.backoff`)."""
    return OUTBOX_BACKOFF.delay(attempts)


def _get(db: Db, message_id: int) -> OutboxMessage:
    row = db.get(OutboxMessage, message_id)
    if row is None:
        raise LookupError(f"outbox row {message_id} does not exist")
    return row

"""The outbox: notifications written once, claimed under a lease, marked sent or failed.

A row is written in the same transaction as the decision to send it, keyed by its
idempotency key, so re-running a stage never queues a second copy. Sending happens
later, by whichever worker claims the row; a worker that dies mid-send leaves a
"sending" row whose lease expires, and the next worker sends it again with the same
Message-ID (receivers and our FileTransport de-duplicate on it).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mentorpulse.notify.route import Notification
from mentorpulse.storage.models import OutboxMessage

log = structlog.get_logger(__name__)

DEFAULT_DOMAIN = "mentorpulse.invalid"
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
MAX_ERROR_CHARS = 2000
BATCH = 200  # rows per INSERT: well under SQLite's bound-parameter limit
_JITTER = random.Random()  # noqa: S311 - spreads retries apart; not cryptography


def message_id_for(key: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A Message-ID derived from the idempotency key: every retry of a message shares it."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def enqueue(
    db: Session,
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
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": None,
            "message_id": message_id_for(n.idempotency_key, domain),
            "created_at": now,
            "sent_at": None,
            "last_error": None,
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


def claim_due(
    db: Session, *, now: datetime, lease: timedelta, limit: int = 100
) -> list[OutboxMessage]:
    """Take up to ``limit`` rows that are due (or whose sender died) for this worker.

    The caller must commit before sending, so other workers see the lease.
    """
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
    rows = list(db.scalars(query))
    for row in rows:
        if row.status == "sending":
            log.warning("outbox_lease_expired", message_row=row.id, attempts=row.attempts)
        row.status = "sending"
        row.lease_until = now + lease
        row.attempts = (row.attempts or 0) + 1
    db.flush()
    return rows


def mark_sent(db: Session, message_id: int, *, now: datetime) -> None:
    """The transport accepted the message: it is never sent again."""
    row = _get(db, message_id)
    row.status = "sent"
    row.sent_at = now
    row.lease_until = None
    row.last_error = None


def mark_failed(
    db: Session, message_id: int, *, error: str, retryable: bool, now: datetime
) -> None:
    """Record a failed attempt: retry later with backoff, or give up for good."""
    row = _get(db, message_id)
    row.last_error = error[:MAX_ERROR_CHARS]
    row.lease_until = None
    if retryable:
        row.status = "pending"
        row.next_attempt_at = now + backoff(row.attempts)
    else:
        row.status = "failed"


def backoff(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """1 min · 2^attempts, capped at 1 h, with up to 10% jitter so workers do not align."""
    base = min(BACKOFF_BASE * (1 << min(max(attempts, 0), 16)), BACKOFF_CAP)
    jitter = (rng or _JITTER).uniform(0.0, 0.1)
    return base * (1 + jitter)


def _get(db: Session, message_id: int) -> OutboxMessage:
    row = db.get(OutboxMessage, message_id)
    if row is None:
        raise LookupError(f"outbox row {message_id} does not exist")
    return row

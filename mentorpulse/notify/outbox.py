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
from sqlalchemy.orm import Session as Db

from mentorpulse.backoff import OUTBOX_BACKOFF
from mentorpulse.notify.route import DIGEST, RESOLVED, Notification
from mentorpulse.storage import outbox as stored
from mentorpulse.storage.models import OutboxMessage
from mentorpulse.text import one_line

log = structlog.get_logger(__name__)

DEFAULT_DOMAIN = "mentorpulse.invalid"
MAX_ERROR_CHARS = 2000


def sender_domain(sender: str) -> str:
    """The right-hand side of our Message-IDs: the sender's domain."""
    return sender.rpartition("@")[2] or DEFAULT_DOMAIN


def message_id_for(key: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A Message-ID derived from the idempotency key: every retry of a message shares it."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def outbox_row(n: Notification, *, now: datetime, domain: str = DEFAULT_DOMAIN) -> dict[str, Any]:
    """The outbox row a notification becomes: its Message-ID is fixed here, once."""
    return {
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
    rows = [outbox_row(n, now=now, domain=domain) for n in notifications]
    if not rows:
        return 0
    inserted = stored.insert_new(db, rows)
    log.info("outbox_enqueued", offered=len(rows), inserted=inserted)
    return inserted


def claim_due(db: Db, *, now: datetime, lease: timedelta, limit: int = 100) -> list[OutboxMessage]:
    """Take up to ``limit`` rows that are due (or whose sender died) for this worker.

    At-most-once rows (HR reports) come back *listed, not leased*: the caller leases
    each with :func:`claim_one` right before sending it, so a crash mid-batch leaves at
    most one of them in doubt instead of the whole batch. The caller must commit before
    sending, so other workers see the lease.
    """
    rows = []
    for row in stored.lock_due(db, now=now, limit=limit):
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

    """
    until = now + lease
    return until if stored.lease_one(db, message_id, now=now, until=until) else None


def mark_sent(
    db: Db, message_id: int, *, now: datetime, lease_until: datetime | None = None
) -> bool:
    """The transport accepted the message: it is never sent again.

    With ``lease_until``, only if the row is still under the claim we made (else another
    worker took it over and owns its outcome); returns whether the row was updated.
    """
    if stored.finish_sent(db, message_id, now=now, lease_until=lease_until):
        return True
    _owned(db, message_id, lease_until)  # a lost lease, logged (or LookupError: no row)
    return False


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
    row.last_error = one_line(error)[:MAX_ERROR_CHARS]
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
    row = stored.get_for_write(db, message_id)
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
    groups: dict[str, list[OutboxMessage]] = {}
    for row in stored.lock_due_digest_items(db, now=now):
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
    cancelled = 0
    for row in stored.unsent_of_findings(db, except_template=RESOLVED):
        if row.finding_key not in live:
            row.status = "cancelled"
            row.last_error = "its finding stopped notifying before this was sent"
            cancelled += 1
    if cancelled:
        log.info("outbox_cancelled", rows=cancelled)
    return cancelled


def told(db: Db, finding_keys: Iterable[str]) -> dict[str, list[tuple[str, bool]]]:
    """Who was (or is about to be) told of each episode: address, and whether by digest."""
    out: dict[str, list[tuple[str, bool]]] = {}
    rows = stored.recipients_of_findings(db, list(finding_keys), except_template=RESOLVED)
    for finding_key, recipient, status in rows:
        out.setdefault(finding_key, []).append((recipient, status in ("digest", "digested")))
    return out


def backoff(attempts: int) -> timedelta:
    """The wait after a row's ``attempts``-th failed send (see :mod:`mentorpulse.backoff`)."""
    return OUTBOX_BACKOFF.delay(attempts)

"""The dispatcher: claim due outbox rows, send each, record the outcome.

The claim is committed *before* sending so that other workers see the lease and skip the
rows; each outcome is committed on its own so one slow or failing message never holds
back (or rolls back) the others, and a row that cannot be rendered fails alone. An
at-most-once row is leased on its own right before its send, so a crash leaves at most
one of them ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import SEND_MARGIN
from mentorpulse.notify.outbox import (
    DEFAULT_DOMAIN,
    claim_due,
    claim_one,
    compose_digests,
    mark_failed,
    mark_sent,
    release,
)
from mentorpulse.notify.render import RenderError, render
from mentorpulse.notify.transport import SendResult, Transport
from mentorpulse.storage.models import OutboxMessage

log = structlog.get_logger(__name__)

LEASE_MARGIN = SEND_MARGIN  # default send budget: stop this long before a lease expires


@dataclass(frozen=True)
class DispatchCounts:
    sent: int
    failed: int  # given up for good
    retried: int  # failed this time, will be tried again later
    released: int = 0  # handed back unsent: the lease ran short (too slow a transport)

    def __add__(self, other: DispatchCounts) -> DispatchCounts:
        return DispatchCounts(
            sent=self.sent + other.sent,
            failed=self.failed + other.failed,
            retried=self.retried + other.retried,
            released=self.released + other.released,
        )


def dispatch(
    database: sessionmaker[Db],
    transport: Transport,
    *,
    sender: str,
    now: datetime,
    lease: timedelta = timedelta(minutes=5),
    template_dir: Path | None = None,
    limit: int = 100,
    domain: str = DEFAULT_DOMAIN,
    clock: Callable[[], datetime] | None = None,
    send_budget: timedelta = LEASE_MARGIN,
) -> DispatchCounts:
    """Send every due message once; returns how many were sent, failed, retried, released.

    Due digest items are folded into digest emails first. Rows are claimed ``limit`` at a
    time until none is due, so one call drains the queue; ``lease`` must cover sending
    one batch: with a ``clock``, no send starts with less than ``send_budget`` left of
    the lease, and the rows not sent are handed back (``released``). The transport is
    closed at the end (one SMTP session per call).
    """
    total = DispatchCounts(sent=0, failed=0, retried=0)
    try:
        with _one_connection(database) as held:
            with held.begin() as db:
                compose_digests(db, now=now, domain=domain)
            while True:
                counts, more = _dispatch_batch(
                    held,
                    transport,
                    sender=sender,
                    now=now,
                    lease=lease,
                    template_dir=template_dir,
                    limit=limit,
                    clock=clock,
                    send_budget=send_budget,
                )
                total += counts
                if not more:
                    return total
    finally:
        transport.close()


@contextmanager
def _one_connection(database: sessionmaker[Db]) -> Iterator[sessionmaker[Db]]:
    """Every transaction of one dispatch call on one database connection, each still
    committed on its own: taking a connection from the pool per message cost PostgreSQL a
    liveness ping each (a round trip, as dear as the UPDATE). If the database goes away
    mid-call, the call fails and the unrecorded row is resent after its lease."""
    engine = database.kw.get("bind")
    if not isinstance(engine, Engine):
        yield database  # bound to something else already: use it as it is
        return
    with engine.connect() as connection:
        yield sessionmaker(class_=database.class_, **{**database.kw, "bind": connection})


def _dispatch_batch(
    database: sessionmaker[Db],
    transport: Transport,
    *,
    sender: str,
    now: datetime,
    lease: timedelta,
    template_dir: Path | None,
    limit: int,
    clock: Callable[[], datetime] | None,
    send_budget: timedelta,
) -> tuple[DispatchCounts, bool]:
    """One batch; returns its counts and whether more rows may be due (a full batch)."""

    def current() -> datetime:
        return clock() if clock is not None else now

    claimed_at = current()
    with database.begin() as db:
        claimed = claim_due(db, now=claimed_at, lease=lease, limit=limit)
        for row in claimed:
            db.expunge(row)  # detached, loaded copies: rendering needs no database
    lease_until = claimed_at + lease  # what claim_due gave the batch's at-least-once rows
    counts = DispatchCounts(sent=0, failed=0, retried=0)
    for index, item in enumerate(claimed):
        if clock is not None and current() >= lease_until - send_budget:
            released = _release(database, claimed[index:], lease_until=lease_until, lease=lease)
            return counts + DispatchCounts(0, 0, 0, released=released), False
        row_lease = lease_until
        if item.at_most_once:
            # Leased alone, right before its send: a crash now leaves one row in doubt.
            with database.begin() as db:
                leased = claim_one(db, item.id, now=current(), lease=lease)
            if leased is None:
                continue  # another worker has it
            row_lease = leased
            item.attempts += 1
        result = _send_one(item, transport, sender=sender, now=now, template_dir=template_dir)
        with database.begin() as db:
            _record(db, item, result, now=current(), lease_until=row_lease)
        counts += _counted(item, result)
    return counts, len(claimed) == limit


def _release(
    database: sessionmaker[Db],
    rows: list[OutboxMessage],
    *,
    lease_until: datetime,
    lease: timedelta,
) -> int:
    """Too slow: another worker may take these rows soon. Hand them back unsent rather
    than race it (a race would only ever duplicate, never lose); returns how many."""
    rest = [r for r in rows if not r.at_most_once]  # never leased
    with database.begin() as db:
        for row in rest:
            release(db, row.id, lease_until=lease_until)
    log.warning(
        "outbox_batch_released",
        rows=len(rest),
        lease=str(lease),
        hint="sending is slower than notify.lease allows: raise notify.lease",
    )
    return len(rest)


def _record(
    db: Db, item: OutboxMessage, result: SendResult, *, now: datetime, lease_until: datetime
) -> None:
    """Mark the row sent or failed, if it is still under the claim we made."""
    if result.ok:
        mark_sent(db, item.id, now=now, lease_until=lease_until)
    else:
        mark_failed(
            db,
            item.id,
            error=result.error or "unknown error",
            retryable=result.retryable,
            now=now,
            lease_until=lease_until,
        )


def _counted(item: OutboxMessage, result: SendResult) -> DispatchCounts:
    """One send's outcome, logged and counted."""
    if result.ok:
        log.info(
            "notification_sent",
            message_row=item.id,
            recipient_domain=_domain(item.recipient),
            attempt=item.attempts,
        )
        return DispatchCounts(sent=1, failed=0, retried=0)
    if result.retryable:
        log.warning(
            "notification_retry", message_row=item.id, attempt=item.attempts, error=result.error
        )
        return DispatchCounts(sent=0, failed=0, retried=1)
    log.error("notification_failed", message_row=item.id, error=result.error)
    return DispatchCounts(sent=0, failed=1, retried=0)


def _send_one(
    item: OutboxMessage,
    transport: Transport,
    *,
    sender: str,
    now: datetime,
    template_dir: Path | None,
) -> SendResult:
    try:
        message = render(item, sender=sender, template_dir=template_dir, now=now)
    except RenderError as exc:
        log.warning("notification_unrenderable", message_row=item.id, error=str(exc))
        return SendResult(ok=False, retryable=False, error=f"render: {exc}")
    try:
        return transport.send(message)
    except Exception as exc:  # a transport bug must not strand the rest of the batch
        log.exception("transport_crashed", message_row=item.id)
        return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "?"

"""The dispatcher: claim due outbox rows, send each, record the outcome.

The claim is committed *before* sending so that other workers see the lease and skip the
rows; each outcome is committed on its own so one slow or failing message never holds
back (or rolls back) the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker

from mentorpulse.notify.outbox import (
    DEFAULT_DOMAIN,
    claim_due,
    compose_digests,
    mark_failed,
    mark_sent,
    release,
)
from mentorpulse.notify.render import RenderError, render
from mentorpulse.notify.transport import SendResult, Transport
from mentorpulse.storage.models import OutboxMessage

log = structlog.get_logger(__name__)

LEASE_MARGIN = timedelta(seconds=30)  # stop sending a claimed batch this long before it expires


@dataclass(frozen=True)
class DispatchCounts:
    sent: int
    failed: int  # given up for good
    retried: int  # failed this time, will be tried again later


def dispatch(
    session_factory: sessionmaker[Session],
    transport: Transport,
    *,
    sender: str,
    now: datetime,
    lease: timedelta = timedelta(minutes=5),
    template_dir: Path | None = None,
    limit: int = 100,
    domain: str = DEFAULT_DOMAIN,
    clock: Callable[[], datetime] | None = None,
) -> DispatchCounts:
    """Send every due message once; returns how many were sent, failed and put back.

    Due digest items are folded into digest emails first. Rows are claimed ``limit`` at a
    time until none is due, so one call drains the queue; ``lease`` must cover sending
    one batch: with a ``clock``, rows whose lease is about to run out are handed back
    unsent. The transport is closed at the end (one SMTP session per call).
    """
    total = DispatchCounts(sent=0, failed=0, retried=0)
    try:
        with session_factory.begin() as db:
            compose_digests(db, now=now, domain=domain)
        while True:
            counts = _dispatch_batch(
                session_factory,
                transport,
                sender=sender,
                now=now,
                lease=lease,
                template_dir=template_dir,
                limit=limit,
                clock=clock,
            )
            total = DispatchCounts(
                sent=total.sent + counts.sent,
                failed=total.failed + counts.failed,
                retried=total.retried + counts.retried,
            )
            if counts.sent + counts.failed + counts.retried < limit:
                return total
    finally:
        transport.close()


def _dispatch_batch(
    session_factory: sessionmaker[Session],
    transport: Transport,
    *,
    sender: str,
    now: datetime,
    lease: timedelta,
    template_dir: Path | None,
    limit: int,
    clock: Callable[[], datetime] | None,
) -> DispatchCounts:
    with session_factory.begin() as db:
        claimed = claim_due(db, now=now, lease=lease, limit=limit)
        for row in claimed:
            db.expunge(row)  # detached, loaded copies: rendering needs no database
    lease_until = now + lease  # what claim_due gave every row of the batch
    sent = failed = retried = 0
    for index, item in enumerate(claimed):
        if clock is not None and clock() >= lease_until - LEASE_MARGIN:
            # Too slow: another worker may take these rows soon. Hand them back unsent
            # rather than race it (a race would only ever duplicate, never lose).
            with session_factory.begin() as db:
                for rest in claimed[index:]:
                    release(db, rest.id, lease_until=lease_until)
            log.warning("outbox_batch_released", rows=len(claimed) - index)
            return DispatchCounts(sent=sent, failed=failed, retried=retried)
        result = _send_one(item, transport, sender=sender, now=now, template_dir=template_dir)
        with session_factory.begin() as db:
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
        if result.ok:
            sent += 1
            log.info(
                "notification_sent",
                message_row=item.id,
                recipient_domain=_domain(item.recipient),
                attempt=item.attempts,
            )
        elif result.retryable:
            retried += 1
            log.warning(
                "notification_retry", message_row=item.id, attempt=item.attempts, error=result.error
            )
        else:
            failed += 1
            log.error("notification_failed", message_row=item.id, error=result.error)
    return DispatchCounts(sent=sent, failed=failed, retried=retried)


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
        return SendResult(ok=False, retryable=False, error=f"render: {exc}")
    try:
        return transport.send(message)
    except Exception as exc:  # a transport bug must not strand the rest of the batch
        log.exception("transport_crashed", message_row=item.id)
        return SendResult(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}")


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "?"

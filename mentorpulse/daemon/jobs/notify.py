"""The notify stage: firing findings → outbox rows (exactly once each) → delivery."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import aliased

from mentorpulse.daemon.jobs.context import Context
from mentorpulse.notify.dispatch import DispatchCounts, dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import Alert, notifications_for
from mentorpulse.notify.transport import build_transport
from mentorpulse.storage.models import (
    Finding,
    Pairing,
    Person,
    Program,
)

log = structlog.get_logger(__name__)


@dataclass
class NotifyStats:
    queued: int
    sent: int
    failed: int
    retried: int


def send_notifications(ctx: Context) -> NotifyStats:
    """Turn firing findings into outbox rows (exactly once each), then deliver them."""
    now = ctx.clock()
    with ctx.sessions.begin() as db:
        queued = enqueue(
            db,
            notifications_for(_alerts(db)),
            now=now,
            domain=ctx.config.notify.sender.rpartition("@")[2],
        )
    transport = build_transport(ctx.config.notify, ctx.config.base_dir)
    counts: DispatchCounts = dispatch(
        ctx.sessions, transport, sender=ctx.config.notify.sender, now=now
    )
    log.info("notifications_done", queued=queued, sent=counts.sent, failed=counts.failed)
    return NotifyStats(
        queued=queued, sent=counts.sent, failed=counts.failed, retried=counts.retried
    )


def _alerts(db: DbSession) -> list[Alert]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    rows = db.execute(
        select(Finding, Program, mentor, mentee)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(Program, Program.id == Pairing.program_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(Finding.state == "firing", Pairing.active)
    )
    return [
        Alert(
            fingerprint=finding.fingerprint,
            rule_id=finding.rule_id,
            severity=finding.severity,
            state=finding.state,
            firing_since=finding.firing_since,
            facts={k: str(v) for k, v in finding.facts.items() if k != "pairing"},
            program=program.id,
            program_name=program.name or program.id,
            mentor_email=mentor_row.email,
            mentor_name=mentor_row.name,
            mentee_email=mentee_row.email,
            mentee_name=mentee_row.name,
            mentor_timezone=mentor_row.timezone,
            silenced=finding.silence_id is not None,
        )
        for finding, program, mentor_row, mentee_row in rows
    ]

"""The sessions stage: event copies folded into sessions, each judged from its evidence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session as DbSession

from mentorpulse.connectors.base import AttendanceEvidence, EventRecord
from mentorpulse.daemon.jobs.context import Context
from mentorpulse.storage import repository
from mentorpulse.storage.models import (
    Evidence,
    Pairing,
    Person,
)
from mentorpulse.storage.models import Session as SessionRow
from mentorpulse.tracking.attendance import Outcome, Verdict, judge, mark_rescheduled, session_key

log = structlog.get_logger(__name__)


@dataclass
class SessionStats:
    pairings: int = 0
    changed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def rebuild_sessions(ctx: Context) -> SessionStats:
    """Fold event copies into sessions and judge them, for the pairings that need it.

    A pairing needs it when its events changed, or when one of its sessions was upcoming
    and has ended since (time alone changes its verdict).
    """
    now = ctx.clock()
    stats = SessionStats()
    with ctx.sessions.begin() as db:
        due = set(db.scalars(select(Pairing.id).where(Pairing.events_changed)))
        due |= set(
            db.scalars(
                select(SessionRow.pairing_id).where(
                    SessionRow.outcome == Outcome.UPCOMING.value, SessionRow.end <= now
                )
            )
        )
        pairings = {p.id: p for p in db.scalars(select(Pairing).where(Pairing.id.in_(due)))}
        emails = dict(db.execute(select(Person.id, Person.email)).all())
        copies = repository.events_of_pairings(db, sorted(due))
        logs = repository.conference_logs(db, sorted(due))
        for pairing_id, records in copies.items():
            pairing = pairings[pairing_id]
            program = ctx.config.program(pairing.program_id)
            # A replacement booked within half a cadence interval is a rescheduling;
            # the next regular meeting is not.
            every = program.cadence.every if program else timedelta(days=14)
            changed = _rebuild_pairing(
                db,
                pairing,
                records,
                mentor=emails[pairing.mentor_id],
                mentee=emails[pairing.mentee_id],
                reschedule_window=every / 2,
                now=now,
                logs=logs,
            )
            pairing.events_changed = False
            if changed:
                pairing.sessions_changed = True
                stats.changed += changed
            stats.pairings += 1
    with ctx.sessions() as db:
        for outcome, count in db.execute(
            select(SessionRow.outcome, func.count()).group_by(SessionRow.outcome)
        ):
            stats.outcomes[outcome] = count
    log.info("sessions_rebuilt", pairings=stats.pairings, changed=stats.changed)
    return stats


def _rebuild_pairing(
    db: DbSession,
    pairing: Pairing,
    records: list[EventRecord],
    *,
    mentor: str,
    mentee: str,
    reschedule_window: timedelta,
    now: datetime,
    logs: Mapping[tuple[str, str], list[AttendanceEvidence]],
) -> int:
    groups: dict[str, list[EventRecord]] = defaultdict(list)
    for record in records:
        groups[session_key(record)].append(record)
    verdicts: dict[str, tuple[datetime, Verdict, EventRecord]] = {}
    for key, copies in groups.items():
        verdict = judge(
            copies, mentor=mentor, mentee=mentee, now=now, conference=_conference(copies, logs)
        )
        newest = max(copies, key=_newest)
        verdicts[key] = (newest.start, verdict, newest)
    for key, replacement in mark_rescheduled(
        [(k, start, v) for k, (start, v, _r) in verdicts.items()], window=reschedule_window
    ).items():
        start, _old, newest = verdicts[key]
        verdicts[key] = (start, replacement, newest)

    existing = {
        s.key: s for s in db.scalars(select(SessionRow).where(SessionRow.pairing_id == pairing.id))
    }
    changed = 0
    for key, (_start, verdict, newest) in verdicts.items():
        row = existing.pop(key, None)
        values = {
            "start": newest.start,
            "end": newest.end,
            "zone": newest.zone,
            "outcome": verdict.outcome.value,
            "confidence": verdict.confidence,
            "cancelled_by": verdict.cancelled_by,
            "cancelled_hours_before": verdict.cancelled_hours_before,
        }
        if row is not None and all(getattr(row, k) == v for k, v in values.items()):
            continue
        if row is None:
            row = SessionRow(pairing_id=pairing.id, key=key, updated_at=now, **values)
            db.add(row)
            db.flush()
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now
            for old in db.scalars(select(Evidence).where(Evidence.session_id == row.id)):
                db.delete(old)
        for rank, proof in enumerate(verdict.evidence):
            db.add(
                Evidence(
                    session_id=row.id,
                    rank=rank,
                    kind=proof.kind,
                    party=proof.party,
                    detail=proof.detail,
                )
            )
        changed += 1
    for row in existing.values():
        # Its event copies are gone. A future meeting was called off; a past one fell
        # out of the sync window or was tidied away: its history is kept as judged.
        if row.start >= now:
            db.delete(row)
            changed += 1
    return changed


def _conference(
    copies: list[EventRecord], logs: Mapping[tuple[str, str], list[AttendanceEvidence]]
) -> list[AttendanceEvidence]:
    """The meeting's conference log, once: both parties' copies may each have fetched it."""
    best: dict[str, AttendanceEvidence] = {}
    for copy in copies:
        for item in logs.get((copy.source_id, copy.provider_id), ()):
            if item.email not in best or item.seconds_present > best[item.email].seconds_present:
                best[item.email] = item
    return [best[email] for email in sorted(best)]


def _newest(record: EventRecord) -> tuple[int, datetime]:
    return (record.sequence, record.updated or datetime.min.replace(tzinfo=UTC))

"""The sessions stage: event copies folded into sessions, each judged from its evidence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session as Db

from mentorpulse.model import AttendanceEvidence, EventRecord, Outcome
from mentorpulse.stages.context import Context
from mentorpulse.storage import repository
from mentorpulse.storage.models import (
    Evidence,
    MentoringSession,
    Pairing,
    Person,
)
from mentorpulse.storage.repository import chunks
from mentorpulse.tracking.attendance import (
    Proof,
    Verdict,
    fold_copies,
    judge,
    mark_rescheduled,
    session_key,
)

log = structlog.get_logger(__name__)


@dataclass
class SessionStats:
    pairings: int = 0
    changed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def rebuild_sessions(ctx: Context) -> SessionStats:
    """Fold event copies into sessions and judge them, for the pairings that need it.

    A pairing needs it when its events changed, or when one of its sessions was upcoming
    and has ended since (time alone changes its verdict). Pairings are rebuilt a batch at
    a time: their events and stored sessions read in one query each, the changes written
    back in a few batched statements, not one flush per session (a first run builds every
    session of the organisation at once).
    """
    now = ctx.clock()
    stats = SessionStats()
    with ctx.db.begin() as db:
        due = set(db.scalars(select(Pairing.id).where(Pairing.events_changed)))
        due |= set(
            db.scalars(
                select(MentoringSession.pairing_id).where(
                    MentoringSession.outcome == Outcome.UPCOMING.value, MentoringSession.end <= now
                )
            )
        )
        emails = dict(db.execute(select(Person.id, Person.email)).all())
        ordered = sorted(due)
        # A batch of pairings at a time, so memory follows the batch, not the history.
        for batch in chunks(ordered, _BATCH):
            pairings = {p.id: p for p in db.scalars(select(Pairing).where(Pairing.id.in_(batch)))}
            copies = repository.events_of_pairings(db, batch)
            logs = repository.conference_logs(db, batch)
            stored = _stored_sessions(db, batch)
            writes = _Writes()
            for pairing_id, records in copies.items():
                pairing = pairings[pairing_id]
                program = ctx.config.program(pairing.program_id)
                # A replacement booked within half a cadence interval is a rescheduling:
                # nearer the cancelled slot than the next regular one, which it is not
                # (README, "What a session's outcome means").
                every = program.cadence.every if program else timedelta(days=14)
                changed = _rebuild_pairing(
                    writes,
                    pairing,
                    records,
                    stored.get(pairing_id, {}),
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
            writes.apply(db)
            db.flush()
            db.expunge_all()  # the batch's pairings are written; let them go
    with ctx.db() as db:
        for outcome, count in db.execute(
            select(MentoringSession.outcome, func.count()).group_by(MentoringSession.outcome)
        ):
            stats.outcomes[outcome] = count
    log.info("sessions_rebuilt", pairings=stats.pairings, changed=stats.changed)
    return stats


_BATCH = 250  # pairings rebuilt together: memory follows this, not the organisation
_VALUES = (
    "start",
    "end",
    "zone",
    "outcome",
    "confidence",
    "cancelled_by",
    "cancelled_hours_before",
)


def _stored_sessions(
    db: Db, pairing_ids: Sequence[int]
) -> dict[int, dict[str, tuple[int, dict[str, Any]]]]:
    """pairing → session key → (row id, its judged values), read as plain rows."""
    table = MentoringSession.__table__
    columns = [table.c.pairing_id, table.c.key, table.c.id, *(table.c[n] for n in _VALUES)]
    found: dict[int, dict[str, tuple[int, dict[str, Any]]]] = defaultdict(dict)
    for chunk in chunks(pairing_ids):
        for pairing_id, key, row_id, *values in db.execute(
            select(*columns).where(table.c.pairing_id.in_(chunk))
        ):
            found[pairing_id][key] = (row_id, dict(zip(_VALUES, values, strict=True)))
    return found


@dataclass
class _Writes:
    """Session changes collected over all pairings, written in batches by :meth:`apply`."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    new_evidence: dict[tuple[int, str], list[Proof]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)  # sessions whose evidence is redone
    deleted: list[int] = field(default_factory=list)

    def add_evidence(self, session_id: int, proofs: Sequence[Proof]) -> None:
        self.evidence += [
            {
                "session_id": session_id,
                "rank": rank,
                "kind": proof.kind,
                "party": proof.party,
                "detail": proof.detail,
            }
            for rank, proof in enumerate(proofs)
        ]

    def apply(self, db: Db) -> None:
        # Core inserts, not ORM bulk ones: those split a batch wherever a value is None.
        table = cast(Table, MentoringSession.__table__)
        if self.inserts:
            returned = db.execute(
                insert(table).returning(table.c.id, table.c.pairing_id, table.c.key),
                self.inserts,
            )
            for session_id, pairing_id, key in returned:
                self.add_evidence(session_id, self.new_evidence[(pairing_id, key)])
        if self.updates:
            db.execute(update(MentoringSession), self.updates)
        for chunk in chunks(self.replaced + self.deleted):
            db.execute(delete(Evidence).where(Evidence.session_id.in_(chunk)))
        for chunk in chunks(self.deleted):
            db.execute(delete(MentoringSession).where(MentoringSession.id.in_(chunk)))
        if self.evidence:
            db.execute(insert(cast(Table, Evidence.__table__)), self.evidence)


def _rebuild_pairing(
    writes: _Writes,
    pairing: Pairing,
    records: list[EventRecord],
    existing: dict[str, tuple[int, dict[str, Any]]],
    *,
    mentor: str,
    mentee: str,
    reschedule_window: timedelta,
    now: datetime,
    logs: Mapping[tuple[str, str], list[AttendanceEvidence]],
) -> int:
    by_uid: dict[str, list[EventRecord]] = defaultdict(list)
    for record in records:
        by_uid[session_key(record)].append(record)
    groups = fold_copies(by_uid, keep=existing)
    verdicts: dict[str, tuple[Verdict, EventRecord]] = {}
    for key, copies in groups.items():
        verdict = judge(
            copies, mentor=mentor, mentee=mentee, now=now, conference=_conference(copies, logs)
        )
        verdicts[key] = (verdict, max(copies, key=_newest))
    for key, replacement in mark_rescheduled(
        [(k, newest.start, v) for k, (v, newest) in verdicts.items()], window=reschedule_window
    ).items():
        verdicts[key] = (replacement, verdicts[key][1])

    existing = dict(existing)
    changed = 0
    for key, (verdict, newest) in verdicts.items():
        found = existing.pop(key, None)
        values = {
            "start": newest.start,
            "end": newest.end,
            "zone": newest.zone,
            "outcome": verdict.outcome.value,
            "confidence": verdict.confidence,
            "cancelled_by": verdict.cancelled_by,
            "cancelled_hours_before": verdict.cancelled_hours_before,
        }
        if found is None:
            writes.inserts.append(
                {"pairing_id": pairing.id, "key": key, "updated_at": now, **values}
            )
            writes.new_evidence[(pairing.id, key)] = list(verdict.evidence)
        else:
            session_id, stored = found
            if stored == values:
                continue
            writes.updates.append({"id": session_id, "updated_at": now, **values})
            writes.replaced.append(session_id)
            writes.add_evidence(session_id, verdict.evidence)
        changed += 1
    for key in by_uid.keys() - groups.keys():
        # Folded into another UID's session: a copy of that meeting, never a session.
        absorbed = existing.pop(key, None)
        if absorbed is not None:
            writes.deleted.append(absorbed[0])
            changed += 1
    for session_id, stored in existing.values():
        # Its event copies are gone. A future meeting was called off; a past one fell
        # out of the sync window or was tidied away: its history is kept as judged.
        if stored["start"] >= now:
            writes.deleted.append(session_id)
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

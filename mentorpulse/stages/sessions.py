"""The sessions stage: event copies folded into sessions, each judged from its evidence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.model import AttendanceEvidence, EventRecord, ParticipantAnswer
from mentorpulse.stages.context import Context
from mentorpulse.storage import answers as stored_answers
from mentorpulse.storage import attendance, events
from mentorpulse.storage import sessions as stored
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.models import Pairing
from mentorpulse.tracking.attendance import (
    Proof,
    Verdict,
    fold_copies,
    judge,
    mark_rescheduled,
    session_key,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Bucket:
    """A share of the pairings for the worker pool: those whose id modulo ``count`` is
    ``index``. Sessions and rules of one pairing never depend on another's, so buckets
    can be evaluated by different workers at once."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def in_bucket(pairing_ids: list[int], bucket: Bucket | None) -> list[int]:
    """The ids of ``bucket`` (all of them without one)."""
    if bucket is None:
        return pairing_ids
    return [i for i in pairing_ids if i % bucket.count == bucket.index]


@dataclass
class SessionStats:
    pairings: int = 0
    changed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def rebuild_sessions(ctx: Context, *, bucket: Bucket | None = None) -> SessionStats:
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
        due = in_bucket(stored.pairings_to_rebuild(db, now), bucket)
        emails = stored.person_emails(db)
        # A batch of pairings at a time, so memory follows the batch, not the history.
        for batch in chunks(due, _BATCH):
            _rebuild_batch(ctx, db, batch, emails=emails, now=now, stats=stats)
    with ctx.db() as db:
        stats.outcomes.update(stored.outcome_counts(db))
    log.info("sessions_rebuilt", pairings=stats.pairings, changed=stats.changed)
    return stats


_BATCH = 100  # pairings rebuilt together: memory follows this, not the organisation


def rebuild_pairings(ctx: Context, db: Db, pairing_ids: Sequence[int]) -> SessionStats:
    """Judge these pairings' sessions again now, in the caller's transaction: an answer
    to an attendance check shows at once, not at the next sessions run."""
    stats = SessionStats()
    emails = stored.person_emails(db)
    _rebuild_batch(ctx, db, list(pairing_ids), emails=emails, now=ctx.clock(), stats=stats)
    return stats


def _rebuild_batch(
    ctx: Context,
    db: Db,
    batch: Sequence[int],
    *,
    emails: Mapping[int, str],
    now: datetime,
    stats: SessionStats,
) -> None:
    """Rebuild one batch of pairings: read in one query per kind, written in batches."""
    pairings = stored.pairings_by_id(db, batch)
    copies = events.events_of_pairings(db, batch)
    logs = attendance.conference_logs(db, batch)
    answers = stored_answers.answers(db, pairings=batch)
    sessions = stored.stored_sessions(db, batch)
    writes = stored.SessionWrites()
    for pairing_id, records in copies.items():
        pairing = pairings[pairing_id]
        program = ctx.config.program(pairing.program_id)
        # A replacement booked within half a cadence interval is a rescheduling:
        # nearer the cancelled slot than the next regular one, which it is not
        # (README, "What a session's outcome means").
        every = program.cadence.every if program else timedelta(days=14)
        verdicts, folded = _judge_pairing(
            records,
            sessions.get(pairing_id, {}),
            mentor=emails[pairing.mentor_id],
            mentee=emails[pairing.mentee_id],
            reschedule_window=every / 2,
            now=now,
            logs=logs,
            answers=answers,
        )
        changed = _write_pairing(
            writes, pairing, verdicts, folded, sessions.get(pairing_id, {}), now=now
        )
        pairing.events_changed = False
        if changed:
            pairing.sessions_changed = True
            stats.changed += changed
        stats.pairings += 1
    writes.apply(db)
    db.flush()
    db.expunge_all()  # the batch's pairings are written; let them go


def _judge_pairing(
    records: list[EventRecord],
    existing: stored.StoredSessions,
    *,
    mentor: str,
    mentee: str,
    reschedule_window: timedelta,
    now: datetime,
    logs: Mapping[tuple[str, str], list[AttendanceEvidence]],
    answers: Mapping[int, list[ParticipantAnswer]],
) -> tuple[dict[str, tuple[Verdict, EventRecord]], set[str]]:
    """Each session of the pairing (by key): its verdict and its newest event copy; and
    the keys folded into another key's session."""
    by_uid: dict[str, list[EventRecord]] = defaultdict(list)
    for record in records:
        by_uid[session_key(record)].append(record)
    groups = fold_copies(by_uid, keep=existing)
    verdicts: dict[str, tuple[Verdict, EventRecord]] = {}
    for key, copies in groups.items():
        stored_id = existing[key][0] if key in existing else None
        verdict = judge(
            copies,
            mentor=mentor,
            mentee=mentee,
            now=now,
            conference=_conference(copies, logs),
            answers=answers.get(stored_id, ()) if stored_id is not None else (),
        )
        verdicts[key] = (verdict, max(copies, key=_newest))
    for key, replacement in mark_rescheduled(
        [(k, newest.start, v) for k, (v, newest) in verdicts.items()], window=reschedule_window
    ).items():
        verdicts[key] = (replacement, verdicts[key][1])
    return verdicts, set(by_uid.keys() - groups.keys())


def _write_pairing(
    writes: stored.SessionWrites,
    pairing: Pairing,
    verdicts: Mapping[str, tuple[Verdict, EventRecord]],
    folded: set[str],
    existing: stored.StoredSessions,
    *,
    now: datetime,
) -> int:
    """Queue the pairing's session changes; returns how many sessions changed."""
    existing = dict(existing)
    changed = 0
    for key, (verdict, newest) in verdicts.items():
        found = existing.pop(key, None)
        values = _judged(verdict, newest)
        evidence = _evidence(verdict.evidence)
        if found is None:
            row = {"pairing_id": pairing.id, "key": key, "updated_at": now, **values}
            writes.add(row, evidence)
        elif found[1] != values:
            writes.change({"id": found[0], "updated_at": now, **values}, evidence)
        else:
            continue
        changed += 1
    for key in folded:
        # Folded into another UID's session: a copy of that meeting, never a session.
        absorbed = existing.pop(key, None)
        if absorbed is not None:
            writes.deleted.append(absorbed[0])
            changed += 1
    for session_id, values in existing.values():
        # Its event copies are gone. A future meeting was called off; a past one fell
        # out of the sync window or was tidied away: its history is kept as judged.
        if values["start"] >= now:
            writes.deleted.append(session_id)
            changed += 1
    return changed


def _judged(verdict: Verdict, newest: EventRecord) -> dict[str, Any]:
    """A session's judged values (:data:`stored.JUDGED`), as stored."""
    return {
        "start": newest.start,
        "end": newest.end,
        "zone": newest.zone,
        "outcome": verdict.outcome.value,
        "confidence": verdict.confidence,
        "cancelled_by": verdict.cancelled_by,
        "cancelled_hours_before": verdict.cancelled_hours_before,
    }


def _evidence(proofs: Sequence[Proof]) -> list[dict[str, Any]]:
    """The evidence rows of a verdict, strongest first."""
    return [
        {"rank": rank, "kind": proof.kind, "party": proof.party, "detail": proof.detail}
        for rank, proof in enumerate(proofs)
    ]


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

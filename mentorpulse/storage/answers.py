"""Attendance checks: the sessions to ask about, and the parties' answers.

Each function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import Outcome, ParticipantAnswer
from mentorpulse.storage.batch import in_lists
from mentorpulse.storage.models import (
    AttendanceAnswer,
    MentoringSession,
    OutboxMessage,
    Pairing,
    Person,
    Program,
)

# A session is asked about while its outcome is one of these (the calendar's best guess).
ASKED_OUTCOMES = (Outcome.PRESUMED_HELD.value, Outcome.UNKNOWN.value)


class AskedSession(NamedTuple):
    """A session as an attendance question words it, with both parties."""

    id: int
    pairing_id: int
    program_id: str
    program_name: str | None
    start: datetime
    end: datetime
    zone: str | None
    outcome: str
    mentor_email: str
    mentor_name: str | None
    mentor_timezone: str | None
    mentee_email: str
    mentee_name: str | None
    mentee_timezone: str | None


def _asked_query() -> Select[*tuple[Any, ...]]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    return (
        select(
            MentoringSession.id,
            MentoringSession.pairing_id,
            Pairing.program_id,
            Program.name,
            MentoringSession.start,
            MentoringSession.end,
            MentoringSession.zone,
            MentoringSession.outcome,
            mentor.email,
            mentor.name,
            mentor.timezone,
            mentee.email,
            mentee.name,
            mentee.timezone,
        )
        .join(Pairing, Pairing.id == MentoringSession.pairing_id)
        .join(Program, Program.id == Pairing.program_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
    )


def sessions_to_ask(
    db: Db, program_id: str, *, ended_after: datetime, ended_before: datetime
) -> list[AskedSession]:
    """Sessions of an active pairing of ``program_id`` that ended in the interval and that
    the calendar alone judges (presumed held or unknown), oldest first."""
    query = (
        _asked_query()
        .where(
            Pairing.program_id == program_id,
            Pairing.active,
            MentoringSession.outcome.in_(ASKED_OUTCOMES),
            MentoringSession.end > ended_after,
            MentoringSession.end <= ended_before,
        )
        .order_by(MentoringSession.end, MentoringSession.id)
    )
    return [AskedSession._make(row) for row in db.execute(query)]


def asked_session(db: Db, session_id: int) -> AskedSession | None:
    """One session with its pairing's people (None: it is gone)."""
    row = db.execute(_asked_query().where(MentoringSession.id == session_id)).first()
    return AskedSession._make(row) if row is not None else None


def record_answer(db: Db, session_id: int, email: str, *, happened: bool, now: datetime) -> bool:
    """Keep a party's answer (replacing their earlier one) and flag the session's pairing
    so its sessions are judged again; returns whether the answer changed.

    One upsert on (session, address): two first answers at the same moment (two tabs, a
    double click) both land, the later one kept, instead of one failing on the unique key.
    """
    email = email.lower()
    found = db.scalars(
        select(AttendanceAnswer.happened).where(
            AttendanceAnswer.session_id == session_id, AttendanceAnswer.email == email
        )
    ).first()
    if found is not None and found == happened:
        return False
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    row = {"session_id": session_id, "email": email, "happened": happened}
    stmt = insert(AttendanceAnswer).values(**row, answered_at=now, first_answered_at=now)
    db.execute(
        stmt.on_conflict_do_update(
            index_elements=["session_id", "email"],
            set_={"happened": happened, "answered_at": now},
        )
    )
    session = db.get_one(MentoringSession, session_id)
    db.get_one(Pairing, session.pairing_id).events_changed = True
    db.flush()
    return True


def answers(
    db: Db, *, sessions: Sequence[int] = (), pairings: Sequence[int] = ()
) -> dict[int, list[ParticipantAnswer]]:
    """The answers about these sessions, or about the sessions of these pairings, by
    session id, each session's in order of address: what ``explain``, the dashboard's
    pairing page, an answer page and the sessions stage read."""
    by_pairing = bool(pairings)
    found: dict[int, list[ParticipantAnswer]] = defaultdict(list)
    for chunk in in_lists(sorted(set(pairings if by_pairing else sessions))):
        query = select(AttendanceAnswer).order_by(
            AttendanceAnswer.session_id, AttendanceAnswer.email
        )
        if by_pairing:
            query = query.join(
                MentoringSession, MentoringSession.id == AttendanceAnswer.session_id
            ).where(MentoringSession.pairing_id.in_(chunk))
        else:
            query = query.where(AttendanceAnswer.session_id.in_(chunk))
        for row in db.scalars(query):
            found[row.session_id].append(
                ParticipantAnswer(row.email, row.happened, row.answered_at)
            )
    return dict(found)


def questions_queued(db: Db, template: str) -> list[tuple[str, dict[str, Any]]]:
    """Every attendance question in the outbox (recipient, payload), oldest first."""
    query = (
        select(OutboxMessage.recipient, OutboxMessage.payload)
        .where(OutboxMessage.template == template)
        .order_by(OutboxMessage.id)
    )
    return [(recipient, dict(payload)) for recipient, payload in db.execute(query)]


def cancel_moot_questions(db: Db, template: str, *, now: datetime) -> int:
    """Unsent questions about sessions that are gone, or that the calendar now says were
    called off or are still ahead (moved), are cancelled: nobody is asked whether a
    cancelled meeting took place. So are questions held back (quiet hours, a digest) past
    their ``send_by`` (they would arrive closed). Returns how many."""
    rows = list(
        db.scalars(
            select(OutboxMessage).where(
                OutboxMessage.template == template,
                OutboxMessage.status.in_(("pending", "digest")),
            )
        )
    )
    if not rows:
        return 0
    ids = {row.payload.get("session_id") for row in rows}
    live: dict[int, str] = {}
    for chunk in in_lists(sorted(i for i in ids if isinstance(i, int))):
        query = select(MentoringSession.id, MentoringSession.outcome).where(
            MentoringSession.id.in_(chunk)
        )
        live.update(dict(db.execute(query).all()))
    cancelled = 0
    for row in rows:
        session_id = row.payload.get("session_id")
        outcome = live.get(session_id) if isinstance(session_id, int) else None
        send_by = row.payload.get("send_by")
        if outcome is None or outcome in MOOT_OUTCOMES:
            row.status = "cancelled"
            row.last_error = "its session was cancelled, moved or removed before this was sent"
            cancelled += 1
        elif isinstance(send_by, int) and now.timestamp() > send_by:
            row.status = "cancelled"
            row.last_error = "held back too long: it would have arrived (nearly) closed"
            cancelled += 1
    return cancelled


# Outcomes after which an unsent question is moot (see cancel_moot_questions).
MOOT_OUTCOMES = (Outcome.CANCELLED.value, Outcome.RESCHEDULED.value, Outcome.UPCOMING.value)

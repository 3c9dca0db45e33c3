"""The report's queries: a handful of aggregates grouped by pairing and outcome.

However many pairings there are, each figure is one round trip, and the same ``select()``
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import ATTENDED, CONFIRMATION_EVIDENCE
from mentorpulse.storage.models import (
    Event,
    Evidence,
    Finding,
    MentoringSession,
    Pairing,
    Person,
    Program,
    Source,
)

OPEN_STATES = ("pending", "firing")
_ATTENDED = sorted(outcome.value for outcome in ATTENDED)


@dataclass(frozen=True, slots=True)
class PairingRow:
    """An active pairing as the report lists it."""

    id: int
    program: str
    program_name: str | None
    mentor_email: str
    mentee_email: str
    mentor_name: str | None
    mentee_name: str | None


@dataclass(frozen=True, slots=True)
class FigureRows:
    """What the report's figures are computed from, keyed by pairing id."""

    pairings: list[PairingRow]
    counts: dict[int, dict[str, int]] = field(default_factory=dict)  # outcome → sessions
    last_attended: dict[int, datetime] = field(default_factory=dict)
    next_scheduled: dict[int, datetime] = field(default_factory=dict)
    open_findings: dict[int, int] = field(default_factory=dict)
    confirmed: dict[int, int] = field(default_factory=dict)  # held by a participant's answer
    # (pairing id, start, outcome) of every session starting in the range, by start: the
    # charts bucket them into months of the report's zone, which SQL cannot do portably.
    sessions: list[tuple[int, datetime, str]] = field(default_factory=list)


def figure_rows(
    db: Db,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    programs: Collection[str] | None = None,
) -> FigureRows:
    """Active pairings (by program, mentor, mentee) with their sessions starting in
    ``[start, end)`` counted by outcome, their last attended session before ``end``, their
    first upcoming one from ``now`` on, and their open findings.

    ``programs`` limits every figure to those program ids (None: every program).
    """
    active = and_(Pairing.id == MentoringSession.pairing_id, Pairing.active.is_(True))
    if programs is not None:
        active = and_(active, Pairing.program_id.in_(sorted(programs)))
    in_range = and_(MentoringSession.start >= start, MentoringSession.start < end)
    last_attended = dict(
        db.execute(
            select(MentoringSession.pairing_id, func.max(MentoringSession.start))
            .join(Pairing, active)
            .where(MentoringSession.outcome.in_(_ATTENDED), MentoringSession.start < end)
            .group_by(MentoringSession.pairing_id)
        ).all()
    )
    next_scheduled = dict(
        db.execute(
            select(MentoringSession.pairing_id, func.min(MentoringSession.start))
            .join(Pairing, active)
            .where(MentoringSession.outcome == "upcoming", MentoringSession.start >= now)
            .group_by(MentoringSession.pairing_id)
        ).all()
    )
    # One row per session in the range (the charts need each one's month); the counts by
    # outcome are summed from them rather than asked for again.
    sessions: list[tuple[int, datetime, str]] = []
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for pairing_id, start_at, outcome in db.execute(
        select(MentoringSession.pairing_id, MentoringSession.start, MentoringSession.outcome)
        .join(Pairing, active)
        .where(in_range)
        .order_by(MentoringSession.start, MentoringSession.id)
    ):
        sessions.append((pairing_id, start_at, outcome))
        counts[pairing_id][outcome] = counts[pairing_id].get(outcome, 0) + 1
    return FigureRows(
        _active_pairings(db, programs),
        counts,
        last_attended,
        next_scheduled,
        _open_findings(db, programs),
        _confirmed(db, active, in_range),
        sessions,
    )


def _confirmed(
    db: Db, active: ColumnElement[bool], in_range: ColumnElement[bool]
) -> dict[int, int]:
    """Held sessions per pairing whose deciding evidence (rank 0) is a participant's own
    answer to the attendance check."""
    return dict(
        db.execute(
            select(MentoringSession.pairing_id, func.count())
            .join(Pairing, active)
            .join(Evidence, and_(Evidence.session_id == MentoringSession.id, Evidence.rank == 0))
            .where(
                in_range,
                MentoringSession.outcome == "held",
                Evidence.kind == CONFIRMATION_EVIDENCE,
            )
            .group_by(MentoringSession.pairing_id)
        ).all()
    )


def _active_pairings(db: Db, programs: Collection[str] | None) -> list[PairingRow]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    query = (
        select(
            Pairing.id,
            Pairing.program_id,
            Program.name,
            mentor.email,
            mentee.email,
            mentor.name,
            mentee.name,
        )
        .join(Program, Program.id == Pairing.program_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(Pairing.active.is_(True))
        .order_by(Pairing.program_id, mentor.email, mentee.email)
    )
    if programs is not None:
        query = query.where(Pairing.program_id.in_(sorted(programs)))
    return [PairingRow(*row) for row in db.execute(query)]


def _open_findings(db: Db, programs: Collection[str] | None) -> dict[int, int]:
    active = and_(Pairing.id == Finding.pairing_id, Pairing.active.is_(True))
    if programs is not None:
        active = and_(active, Pairing.program_id.in_(sorted(programs)))
    return {
        pairing_id: count
        for pairing_id, count in db.execute(
            select(Finding.pairing_id, func.count())
            .join(Pairing, active)
            .where(Finding.state.in_(OPEN_STATES))
            .group_by(Finding.pairing_id)
        )
        if pairing_id is not None
    }


def last_successes(db: Db, source_ids: Collection[str]) -> dict[str, datetime | None]:
    """When each source last synced successfully (None: never), for those stored."""
    return dict(
        db.execute(
            select(Source.id, Source.last_success_at).where(Source.id.in_(list(source_ids)))
        ).all()
    )


def earliest_events(db: Db, source_ids: Collection[str]) -> dict[str, datetime]:
    """The start of each source's earliest stored event, for those with events."""
    return dict(
        db.execute(
            select(Event.source_id, func.min(Event.start))
            .where(Event.source_id.in_(list(source_ids)))
            .group_by(Event.source_id)
        ).all()
    )

"""The report's queries: a handful of aggregates grouped by pairing and outcome.

However many pairings there are, each figure is one round trip, and the same ``select()``
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import ATTENDED
from mentorpulse.storage.models import Event, Finding, MentoringSession, Pairing, Person, Source

OPEN_STATES = ("pending", "firing")
_ATTENDED = sorted(outcome.value for outcome in ATTENDED)


@dataclass(frozen=True, slots=True)
class PairingRow:
    """An active pairing as the report lists it."""

    id: int
    program: str
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


def figure_rows(db: Db, *, start: datetime, end: datetime, now: datetime) -> FigureRows:
    """Active pairings (by program, mentor, mentee) with their sessions starting in
    ``[start, end)`` counted by outcome, their last attended session before ``end``, their
    first upcoming one from ``now`` on, and their open findings."""
    active = and_(Pairing.id == MentoringSession.pairing_id, Pairing.active.is_(True))
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for pairing_id, outcome, count in db.execute(
        select(MentoringSession.pairing_id, MentoringSession.outcome, func.count())
        .join(Pairing, active)
        .where(MentoringSession.start >= start, MentoringSession.start < end)
        .group_by(MentoringSession.pairing_id, MentoringSession.outcome)
    ):
        counts[pairing_id][outcome] = count
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
    return FigureRows(
        _active_pairings(db), counts, last_attended, next_scheduled, _open_findings(db)
    )


def _active_pairings(db: Db) -> list[PairingRow]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    rows = db.execute(
        select(Pairing.id, Pairing.program_id, mentor.email, mentee.email, mentor.name, mentee.name)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(Pairing.active.is_(True))
        .order_by(Pairing.program_id, mentor.email, mentee.email)
    )
    return [PairingRow(*row) for row in rows]


def _open_findings(db: Db) -> dict[int, int]:
    return {
        pairing_id: count
        for pairing_id, count in db.execute(
            select(Finding.pairing_id, func.count())
            .join(Pairing, and_(Pairing.id == Finding.pairing_id, Pairing.active.is_(True)))
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

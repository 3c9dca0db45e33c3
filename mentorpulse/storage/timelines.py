"""What a pairing's timeline is made of: the pairing with its people, its sessions, the
evidence behind them, and the sources that cover it. Read by evaluation, backtest and
``explain``; one query per kind of row (chunked), never one per pairing or session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import Outcome
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.models import (
    Event,
    EventPairing,
    Evidence,
    Finding,
    MentoringSession,
    Pairing,
    Person,
    Source,
)


@dataclass(frozen=True, slots=True)
class PairingRow:
    """A pairing with its mentor's and mentee's rows."""

    pairing: Pairing
    mentor: Person
    mentee: Person


class SessionRow(NamedTuple):
    """A stored session with what the rules and ``explain`` read of it."""

    id: int
    pairing_id: int
    key: str
    start: datetime
    end: datetime
    outcome: str
    confidence: float
    cancelled_by: str | None
    cancelled_hours_before: float | None
    missed_by: str | None  # the party of the evidence that decided a ``missed`` verdict


def pairings(db: Db, ids: Collection[int] | None = None) -> list[PairingRow]:
    """Pairings (all, or the ids given) with their people, by key."""
    query = _with_people().order_by(Pairing.key)
    if ids is None:
        return [PairingRow(*row) for row in db.execute(query)]
    found: list[PairingRow] = []
    for chunk in chunks(sorted(ids)):
        found += [PairingRow(*row) for row in db.execute(query.where(Pairing.id.in_(chunk)))]
    return sorted(found, key=lambda row: row.pairing.key)


def pairings_due(
    db: Db, now: datetime, *, everything: bool, judged_states: Collection[str]
) -> list[PairingRow]:
    """The pairings to judge at ``now``: with ``everything``, all of them; else those whose
    sessions changed, whose next deadline has passed, or that hold a finding in one of
    ``judged_states`` (whose data went stale or recovered since)."""
    query = _with_people()
    if not everything:
        holding = select(Finding.pairing_id).where(Finding.state.in_(sorted(judged_states)))
        # A subquery: there may be more such pairings than one statement takes parameters.
        query = query.where(
            or_(Pairing.sessions_changed, Pairing.next_deadline <= now, Pairing.id.in_(holding))
        )
    return [PairingRow(*row) for row in db.execute(query)]


def _with_people() -> Select[Pairing, Person, Person]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    return (
        select(Pairing, mentor, mentee)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
    )


def pairing_exists(db: Db, pairing_id: int) -> bool:
    return db.get(Pairing, pairing_id) is not None


def pairing_ids_of(db: Db, mentor_email: str, mentee_email: str) -> list[int]:
    """The pairings (one per program) of this mentor with this mentee."""
    mentor = aliased(Person)
    mentee = aliased(Person)
    query = (
        select(Pairing.id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(mentor.email == mentor_email, mentee.email == mentee_email)
        .order_by(Pairing.id)
    )
    return list(db.scalars(query))


_SESSION_COLUMNS = (
    MentoringSession.id,
    MentoringSession.pairing_id,
    MentoringSession.key,
    MentoringSession.start,
    MentoringSession.end,
    MentoringSession.outcome,
    MentoringSession.confidence,
    MentoringSession.cancelled_by,
    MentoringSession.cancelled_hours_before,
)


def sessions_of(db: Db, pairing_ids: Sequence[int]) -> dict[int, list[SessionRow]]:
    """The sessions of the pairings, by pairing id. Who missed a ``missed`` session is
    looked up for those few sessions only."""
    rows: list[Any] = []
    for chunk in chunks(pairing_ids):
        query = select(*_SESSION_COLUMNS).where(MentoringSession.pairing_id.in_(chunk))
        rows += db.execute(query).all()
    missed_by = _deciding_party(db, [row.id for row in rows if row.outcome == Outcome.MISSED])
    found: dict[int, list[SessionRow]] = defaultdict(list)
    for row in rows:
        found[row.pairing_id].append(SessionRow._make((*row, missed_by.get(row.id))))
    return found


def _deciding_party(db: Db, session_ids: Sequence[int]) -> dict[int, str | None]:
    """The party of the evidence that decided each session's outcome."""
    found: dict[int, str | None] = {}
    for chunk in chunks(session_ids):
        query = select(Evidence.session_id, Evidence.party).where(
            Evidence.session_id.in_(chunk), Evidence.rank == 0
        )
        found.update((session_id, party) for session_id, party in db.execute(query))
    return found


def evidence_of(db: Db, session_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each session's evidence, strongest first, as the words ``explain`` shows."""
    found: dict[int, list[str]] = defaultdict(list)
    for chunk in chunks(session_ids):
        query = (
            select(Evidence.session_id, Evidence.detail)
            .where(Evidence.session_id.in_(chunk))
            .order_by(Evidence.session_id, Evidence.rank)
        )
        for session_id, detail in db.execute(query):
            found[session_id].append(detail)
    return found


def sources_of_pairings(db: Db, pairing_ids: Sequence[int]) -> dict[int, set[str]]:
    """The sources holding an event of each pairing."""
    found: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(pairing_ids):
        query = (
            select(EventPairing.pairing_id, Event.source_id)
            .join(Event, Event.id == EventPairing.event_id)
            .where(EventPairing.pairing_id.in_(chunk))
            .distinct()
        )
        for pairing_id, source_id in db.execute(query):
            found[pairing_id].add(source_id)
    return found


def sources_by_id(db: Db) -> dict[str, Source]:
    """Every stored source (its health decides whether a timeline can be trusted)."""
    return {s.id: s for s in db.scalars(select(Source))}


def mark_judged(pairing: Pairing, next_deadline: datetime | None) -> None:
    """The rules judged the pairing's sessions as they are; look again at the deadline."""
    pairing.next_deadline = next_deadline
    pairing.sessions_changed = False

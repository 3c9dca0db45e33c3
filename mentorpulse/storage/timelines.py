"""What a pairing's timeline is made of: the pairing with its people, its sessions, the
evidence behind them, and the sources that cover it. Read by evaluation, backtest and
``explain``; one query per kind of row (chunked), never one per pairing or session.

Rows are Core rows (plain tuples), not ORM objects: evaluation reads every session of
every pairing, and building an object per row cost more than judging it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import ATTENDED, CONFIRMATION_EVIDENCE, DISPUTED_EVIDENCE, Outcome
from mentorpulse.storage.batch import among, in_lists
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


class PairingRow(NamedTuple):
    """A pairing with what the rules and ``explain`` read of it and of its people."""

    id: int
    key: str
    program_id: str
    started_on: date
    ended_on: date | None
    active: bool
    next_deadline: datetime | None
    sessions_changed: bool
    mentor_email: str
    mentee_email: str
    mentor_timezone: str | None


class SessionRow(NamedTuple):
    """A stored session with what the rules (``rules.kinds.Session``) and ``explain`` read
    of it: the rules judge these rows as they are."""

    start: datetime
    end: datetime
    outcome: Outcome
    cancelled_by: str | None
    cancelled_hours_before: float | None
    missed_by: str | None  # the party of the evidence that decided a ``missed`` verdict
    id: int
    pairing_id: int
    confidence: float
    disputed: bool = False  # the pair answered its attendance check differently


def pairings(db: Db, ids: Collection[int] | None = None) -> list[PairingRow]:
    """Pairings (all, or the ids given) with their people, by key."""
    query = _with_people().order_by(Pairing.key)
    if ids is None:
        return [PairingRow._make(row) for row in db.execute(query)]
    found: list[PairingRow] = []
    for chunk in in_lists(sorted(ids)):
        rows = db.execute(query.where(among(db, Pairing.id, chunk)))
        found += [PairingRow._make(row) for row in rows]
    return sorted(found, key=lambda row: row.key)


def pairings_of_program(db: Db, program_id: str) -> list[PairingRow]:
    """A program's pairings with their people, by key."""
    query = _with_people().where(Pairing.program_id == program_id).order_by(Pairing.key)
    return [PairingRow._make(row) for row in db.execute(query)]


def pairing_ids_due(
    db: Db, now: datetime, *, everything: bool, judged_states: Collection[str]
) -> list[int]:
    """The pairings to judge at ``now``, by id: with ``everything``, all of them; else those
    whose sessions changed, whose next deadline has passed, or that hold a finding in one
    of ``judged_states`` (whose data went stale or recovered since)."""
    query = select(Pairing.id).order_by(Pairing.id)
    if not everything:
        holding = select(Finding.pairing_id).where(Finding.state.in_(sorted(judged_states)))
        # A subquery: there may be more such pairings than one statement takes parameters.
        query = query.where(
            or_(Pairing.sessions_changed, Pairing.next_deadline <= now, Pairing.id.in_(holding))
        )
    return list(db.scalars(query))


def _with_people() -> Select[*tuple[Any, ...]]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    return (
        select(
            Pairing.id,
            Pairing.key,
            Pairing.program_id,
            Pairing.started_on,
            Pairing.ended_on,
            Pairing.active,
            Pairing.next_deadline,
            Pairing.sessions_changed,
            mentor.email,
            mentee.email,
            mentor.timezone,
        )
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


_OUTCOMES = {o.value: o for o in Outcome}


def _session_query(db: Db) -> tuple[Select[Any], bool]:
    """The session columns the rules and ``explain`` read, with who missed a ``missed``
    one (asked of those few only), and whether times come as SQLite text.

    Times are read raw: the UtcDateTime decorator costs two Python calls per value
    (600,000 values at 10,000 pairings), so :func:`sessions_of` makes them aware UTC. On
    SQLite the query appends the zone to the stored UTC text, one parse per value.
    """
    text = db.get_bind().dialect.name == "sqlite"
    start: Any = type_coerce(MentoringSession.start, DateTime(timezone=True))
    end: Any = type_coerce(MentoringSession.end, DateTime(timezone=True))
    if text:
        start = type_coerce(MentoringSession.start, String()).concat("+00:00")
        end = type_coerce(MentoringSession.end, String()).concat("+00:00")
    # A party's "no, it did not take place" names who answered, not who stayed away.
    deciding = select(Evidence.party).where(
        Evidence.session_id == MentoringSession.id,
        Evidence.rank == 0,
        Evidence.kind != CONFIRMATION_EVIDENCE,
    )
    missed_by = case(
        (MentoringSession.outcome == Outcome.MISSED.value, deciding.scalar_subquery()),
        else_=None,
    )
    dispute = select(Evidence.kind).where(
        Evidence.session_id == MentoringSession.id, Evidence.rank == 0
    )
    deciding_kind = case(
        (MentoringSession.outcome == Outcome.UNKNOWN.value, dispute.scalar_subquery()),
        else_=None,
    )
    query = select(
        MentoringSession.id,
        MentoringSession.pairing_id,
        start,
        end,
        MentoringSession.outcome,
        MentoringSession.confidence,
        MentoringSession.cancelled_by,
        MentoringSession.cancelled_hours_before,
        missed_by,
        deciding_kind,
    )
    return query, text


def sessions_of(
    db: Db, pairing_ids: Sequence[int], *, ending_after: datetime | None = None
) -> dict[int, list[SessionRow]]:
    """The sessions of the pairings, by pairing id, times aware UTC (``datetime.UTC``:
    PostgreSQL connections speak UTC, see ``storage.engine``).

    With ``ending_after``, only those that end (or start) after it, and each pairing's
    first attended session if it ended earlier: what the rules read when none looks back further
    (``rules.kinds.holds_anchors`` says when that is the whole story).
    """
    query, text = _session_query(db)
    connection = db.connection()  # Core rows: the ORM's result machinery adds nothing here
    found: dict[int, list[SessionRow]] = defaultdict(list)
    outcomes, parse = _OUTCOMES, datetime.fromisoformat
    new = tuple.__new__  # SessionRow(...) adds a Python call per row (0.3 s at 300k rows)
    for chunk in in_lists(pairing_ids):
        if ending_after is None:
            statement: Any = query.where(among(db, MentoringSession.pairing_id, chunk))
        else:
            statement = _ending_after(
                query, among(db, MentoringSession.pairing_id, chunk), ending_after
            )
        with connection.execute(statement) as result:
            # The driver's own tuples: no column here needs SQLAlchemy's result processing
            # (times are made aware below), and Row objects cost 0.2-0.3 s at 300k rows.
            rows = result.cursor.fetchall()
        convert = not text and bool(rows) and rows[0][2].tzinfo is not UTC
        for id_, pairing_id, began, ended, outcome, confidence, by, notice, party, kind in rows:
            if text:
                start, end = parse(began), parse(ended)
            elif convert:
                start, end = began.astimezone(UTC), ended.astimezone(UTC)
            else:
                start, end = began, ended
            row = (
                start,
                end,
                outcomes[outcome],
                by,
                notice,
                party,
                id_,
                pairing_id,
                confidence,
                kind == DISPUTED_EVIDENCE,
            )
            found[pairing_id].append(new(SessionRow, row))
    return found


_ATTENDED = sorted(o.value for o in ATTENDED)


def _ending_after(query: Select[Any], in_chunk: ColumnElement[bool], moment: datetime) -> Any:
    """``query`` for the sessions of ``chunk`` that end (or start: whatever a calendar
    said of the end) after ``moment``, and for each pairing's first attended session (by
    end) that ended by then, if the first half does not hold it (``in_chunk``: the
    pairings). Both halves name the chunk: PostgreSQL does not carry it across the join,
    and scanned every session."""
    session = MentoringSession
    first = (
        select(session.pairing_id, func.min(session.end).label("end"))
        .where(
            in_chunk,
            session.outcome.in_(_ATTENDED),
            session.end <= moment,
        )
        .group_by(session.pairing_id)
        .subquery("first_attended")
    )
    return union_all(
        query.where(in_chunk, or_(session.end > moment, session.start > moment)),
        query.join(
            first, and_(first.c.pairing_id == session.pairing_id, first.c.end == session.end)
        ).where(
            in_chunk,
            session.outcome.in_(_ATTENDED),
            session.start <= moment,
        ),
    )


def evidence_of(db: Db, session_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each session's evidence, strongest first, as the words ``explain`` shows."""
    found: dict[int, list[str]] = defaultdict(list)
    for chunk in in_lists(session_ids):
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
    for chunk in in_lists(pairing_ids):
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


def mark_judged(db: Db, deadlines: Sequence[tuple[PairingRow, datetime | None]]) -> None:
    """The rules judged these pairings' sessions as they are; look again at each one's
    deadline. One statement for the batch, and only rows that change are written: on
    PostgreSQL one UPDATE over two arrays, as psycopg spends ~20 us of CPU on each row
    of an executemany (0.2 s when a first evaluation sets 10,000 deadlines)."""
    changed = [
        (row.id, deadline)
        for row, deadline in deadlines
        if row.sessions_changed or row.next_deadline != deadline
    ]
    if not changed:
        return
    if db.get_bind().dialect.name == "postgresql":
        ids = bindparam("ids", [pid for pid, _ in changed], type_=ARRAY(Integer))
        moments = [deadline for _, deadline in changed]
        when = bindparam("deadlines", moments, type_=ARRAY(DateTime(timezone=True)))
        judged = select(
            func.unnest(ids).label("pid"), func.unnest(when).label("deadline")
        ).subquery("judged")
        statement: Any = (
            update(Pairing)
            .where(Pairing.id == judged.c.pid)
            .values(next_deadline=judged.c.deadline, sessions_changed=False)
        )
        db.connection().execute(statement)
        return
    statement = (
        update(Pairing)
        .where(Pairing.id == bindparam("pid"))
        .values(next_deadline=bindparam("deadline"), sessions_changed=False)
    )
    rows = [{"pid": pid, "deadline": deadline} for pid, deadline in changed]
    db.connection().execute(statement, rows)

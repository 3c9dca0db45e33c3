"""The shared pass of evaluation: windows found by bisection, batches, stored times.

Evaluation reads every session of every pairing once, in batches of pairings, straight
from Core rows; these tests hold it to what judging one pairing at a time, moment by
moment, would say.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.model import Outcome
from mentorpulse.rules.kinds import in_window, within
from mentorpulse.stages import evaluate, evaluate_rules
from mentorpulse.storage import timelines as stored_timelines
from mentorpulse.storage.models import Finding, MentoringSession, Pairing, Person, Program
from tests.unit.test_rules_incremental import ROSTER, START, Edit, _apply, _context

BERLIN = ZoneInfo("Europe/Berlin")
# The autumn change of 2026: 03:00 CEST on 25 October is 02:00 CET (01:00 UTC).
FALL_BACK = datetime(2026, 10, 25, 1, tzinfo=UTC)


@given(
    offsets=st.lists(st.integers(min_value=-40 * 60, max_value=40 * 60), max_size=30),
    window_days=st.integers(min_value=1, max_value=20),
    now_offset=st.integers(min_value=-36 * 60, max_value=36 * 60),
)
def test_within_is_in_window_for_each_moment(
    offsets: list[int], window_days: int, now_offset: int
) -> None:
    """Around a DST change the window's start is a wall-clock moment: bisection must keep
    exactly the moments the one-by-one check keeps, in order."""
    window = timedelta(days=window_days)
    now = FALL_BACK + window + timedelta(minutes=now_offset)
    moments = sorted(FALL_BACK + timedelta(minutes=m) for m in offsets)
    expected = [m for m in moments if in_window(m, window, now, BERLIN)]
    assert list(within(moments, window, now, BERLIN)) == expected


def _stored_findings(ctx: Any) -> list[tuple[Any, ...]]:
    with ctx.db() as db:
        return [
            (f.fingerprint, f.state, f.since, f.firing_since, f.until, f.facts, f.reason)
            for f in db.scalars(select(Finding).order_by(Finding.fingerprint))
        ]


def test_findings_do_not_depend_on_the_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairings judged one per batch or all in one batch get the same findings."""
    clock = [START + timedelta(days=30)]
    sides = [_context(clock), _context(clock)]
    edits = [
        Edit(p, slot, day=3 * slot + p, hour=9, outcome=outcome, by_mentee=p == 1, notice=2.0)
        for p in range(len(ROSTER))
        for slot, outcome in enumerate(
            [Outcome.HELD, Outcome.MISSED, Outcome.CANCELLED, Outcome.MISSED][: p + 1]
        )
    ]
    try:
        for ctx in sides:
            for edit in edits:
                _apply(ctx, edit)
        evaluate_rules(sides[0], full=True)
        monkeypatch.setattr(evaluate, "_BATCH", 1)
        evaluate_rules(sides[1], full=True)
        assert _stored_findings(sides[0]) == _stored_findings(sides[1])
        assert _stored_findings(sides[0]), "the edits make findings"
    finally:
        for ctx in sides:
            ctx.engine.dispose()


def _one_session(db: Db, start: datetime) -> int:
    db.add(Program(id="eng", name="eng"))
    db.add_all([Person(email="m@x.org"), Person(email="e@x.org")])
    db.flush()
    ids: dict[str, int] = dict(db.execute(select(Person.email, Person.id)).all())
    pairing = Pairing(
        key="eng:m@x.org:e@x.org",
        program_id="eng",
        mentor_id=ids["m@x.org"],
        mentee_id=ids["e@x.org"],
        started_on=date(2026, 1, 1),
    )
    db.add(pairing)
    db.flush()
    db.add(
        MentoringSession(
            pairing_id=pairing.id,
            key="s1",
            start=start,
            end=start + timedelta(hours=1),
            outcome=Outcome.HELD.value,
            confidence=1.0,
            updated_at=start,
        )
    )
    db.flush()
    return pairing.id


def test_session_times_read_in_bulk_are_the_stored_instants(
    sessions: sessionmaker[Db], database_url: str
) -> None:
    """Times read without the UtcDateTime decorator are still aware UTC instants, on
    SQLite's text and under a PostgreSQL connection in another zone."""
    start = datetime(2026, 10, 25, 0, 30, 0, 250, tzinfo=UTC)  # CEST, an hour before CET
    with sessions() as db:  # closed unsaved: the zone set here dies with it
        pairing_id = _one_session(db, start)
        if database_url.startswith("postgresql"):
            db.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
        [row] = stored_timelines.sessions_of(db, [pairing_id])[pairing_id]
        assert (row.start, row.end) == (start, start + timedelta(hours=1))
        assert row.start.utcoffset() == timedelta(0)
        assert row.outcome is Outcome.HELD

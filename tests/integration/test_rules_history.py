"""Evaluation reads only the recent sessions (those ending within the rules' longest window),
yet what the rules say of the whole history stays true: when a pair first met, when they
last met, how many sessions in a row were missed. On each backend, through the real store
and evaluate stage."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.model import Outcome
from mentorpulse.stages import Context, evaluate_rules
from mentorpulse.storage import roster as stored_roster
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.models import Base, Finding, MentoringSession, Pairing

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CONFIG = MentorpulseConfig.model_validate(
    {
        "timezone": "UTC",
        "programs": [
            {
                "id": "eng",
                "cadence": {"every": "7d", "grace": "2d"},
                "rules": [
                    {"id": "gap", "kind": "cadence_gap"},
                    {"id": "first", "kind": "first_meeting", "within": "10d"},
                    {"id": "misses", "kind": "consecutive_misses", "count": 2},
                    # The longest window: sessions that ended 31 days ago are history.
                    {"id": "rate", "kind": "attendance_rate", "window": "30d"},
                ],
            }
        ],
    }
)
ROSTER = [
    RosterPairing(
        program="eng",
        mentor_email=f"mentor{i}@x.org",
        mentee_email=f"mentee{i}@x.org",
        started_on=date(2026, 1, 5),
    )
    for i in range(2)
]
MET_FIRST, MISSING = (entry.key for entry in ROSTER)


@pytest.fixture
def ctx(database_url: str, tmp_path: Path) -> Iterator[Context]:
    engine = make_engine(database_url, tmp_path)
    Base.metadata.create_all(engine)
    context = Context(CONFIG, ROSTER, engine, session_factory(engine), lambda: NOW)
    with context.db.begin() as db:
        stored_roster.apply_roster(db, CONFIG, ROSTER)
    try:
        yield context
    finally:
        engine.dispose()


def _record(ctx: Context, key: str, outcomes: dict[date, Outcome]) -> None:
    """Sessions of the pairing, an hour at 10:00 UTC on each day, as the sessions stage
    leaves them (rows written, the pairing flagged)."""
    with ctx.db.begin() as db:
        pairing = db.scalars(select(Pairing).where(Pairing.key == key)).one()
        db.execute(
            insert(MentoringSession),
            [
                {
                    "pairing_id": pairing.id,
                    "key": f"s{day.isoformat()}",
                    "start": datetime(day.year, day.month, day.day, 10, tzinfo=UTC),
                    "end": datetime(day.year, day.month, day.day, 11, tzinfo=UTC),
                    "outcome": outcome.value,
                    "confidence": 0.8,
                    "updated_at": NOW,
                }
                for day, outcome in outcomes.items()
            ],
        )
        db.execute(update(Pairing).where(Pairing.id == pairing.id).values(sessions_changed=True))


def _finding(ctx: Context, key: str, rule_id: str) -> Finding:
    with ctx.db() as db:
        query = select(Finding).join(Pairing).where(Pairing.key == key, Finding.rule_id == rule_id)
        return db.scalars(query).one()


def test_a_first_meeting_long_ago_is_still_the_first(ctx: Context) -> None:
    evaluate_rules(ctx)
    assert _finding(ctx, MET_FIRST, "first").state == "firing"  # they never met, it says
    # Then the calendar tells: they met in February (long before any window) and last week.
    _record(ctx, MET_FIRST, {date(2026, 2, 10): Outcome.HELD, date(2026, 5, 25): Outcome.HELD})
    evaluate_rules(ctx)
    first = _finding(ctx, MET_FIRST, "first")
    assert (first.state, first.facts["first_attended"]) == ("resolved", "2026-02-10")


def test_a_run_of_misses_and_the_last_meeting_reach_back_past_every_window(
    ctx: Context,
) -> None:
    weeks = [date(2026, 2, 2) + timedelta(weeks=n) for n in range(17)]  # to May 25
    _record(ctx, MISSING, {weeks[0]: Outcome.HELD} | dict.fromkeys(weeks[1:], Outcome.MISSED))
    evaluate_rules(ctx)
    misses = _finding(ctx, MISSING, "misses")
    assert (misses.state, misses.facts["misses_in_a_row"]) == ("firing", "16")
    assert misses.since == datetime(2026, 2, 16, 11, tzinfo=UTC)  # the second miss's end
    gap = _finding(ctx, MISSING, "gap")
    assert (gap.state, gap.facts["last_attended"]) == ("firing", "2026-02-02")

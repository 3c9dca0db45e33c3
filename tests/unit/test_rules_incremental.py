"""Incremental evaluation equals full evaluation, over random timelines and edits.

Two real SQLite databases receive the same session edits (as the sessions stage makes
them: rows written, ``sessions_changed`` set) and the same changes of their calendar
source's health (failing, recovering, going stale), and are evaluated at the same moments, one
incrementally (only pairings that changed or whose deadline passed), one in full. Their
findings must be identical after every step, and identical to those of a third database
whose rules look back over every session (evaluation otherwise leaves out the sessions that
ended before the rules' longest window, save the anchors the view needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.pool import StaticPool

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import AttendanceRateRule, MentorpulseConfig
from mentorpulse.model import Outcome
from mentorpulse.stages import Context, evaluate_rules
from mentorpulse.storage import roster as stored_roster
from mentorpulse.storage import sources
from mentorpulse.storage.engine import session_factory
from mentorpulse.storage.models import Base, Finding, MentoringSession, Pairing, Source

START = datetime(2026, 3, 1, tzinfo=UTC)  # spans the March and October DST changes
CONFIG = MentorpulseConfig.model_validate(
    {
        "timezone": "Europe/Berlin",
        # One calendar covers every pairing; it fails, recovers or just goes quiet.
        "sources": [{"id": "cal", "kind": "ics", "path": "cal.ics"}],
        "evaluation": {"stale_after": "3d"},
        "programs": [
            {
                "id": "eng",
                "cadence": {"every": "7d", "grace": "2d"},
                "rules": [
                    {"id": "gap", "kind": "cadence_gap", "for": "1d"},
                    {"id": "first", "kind": "first_meeting", "within": "10d"},
                    {"id": "none", "kind": "no_upcoming", "horizon": "5d"},
                    {"id": "misses", "kind": "consecutive_misses", "count": 2},
                    {"id": "party", "kind": "party_disengagement", "count": 2, "window": "9d"},
                    {"id": "late", "kind": "late_cancellations", "count": 1, "window": "6d"},
                    {"id": "rate", "kind": "attendance_rate", "window": "12d", "min_sessions": 2},
                    {"id": "decline", "kind": "declining_frequency", "window": "5d"},
                ],
            }
        ],
    }
)
# The same rules and one that never holds (it would need 1,000 sessions) but looks back
# ten years: beside it, evaluation reads every session of this test.
READING_ALL = CONFIG.model_copy(
    update={
        "programs": [
            CONFIG.programs[0].model_copy(
                update={
                    "rules": (
                        *CONFIG.programs[0].rules,
                        AttendanceRateRule(
                            id="all", kind="attendance_rate", window="3650d", min_sessions=1000
                        ),
                    )
                }
            )
        ]
    }
)
MENTORS = ("a@x.org", "b@x.org", "c@x.org")
ROSTER = [
    RosterPairing(
        program="eng",
        mentor_email=mentor,
        mentee_email=f"mentee{i}@x.org",
        started_on=date(2026, 3, 1 + 3 * i),
        mentor_timezone=zone,
        cadence=timedelta(days=5) if i == 2 else None,
    )
    for i, (mentor, zone) in enumerate(
        zip(MENTORS, ("Europe/Berlin", "UTC", "America/New_York"), strict=True)
    )
]


@dataclass(frozen=True)
class Edit:
    pairing: int
    slot: int  # which session (key) of the pairing
    day: int  # days after START
    hour: int
    outcome: Outcome | None  # None: delete the session
    by_mentee: bool
    notice: float


edits = st.builds(
    Edit,
    pairing=st.integers(0, 2),
    slot=st.integers(0, 7),
    day=st.integers(0, 60),
    hour=st.integers(0, 23),
    outcome=st.one_of(st.none(), st.sampled_from(list(Outcome))),
    by_mentee=st.booleans(),
    notice=st.sampled_from([-1.0, 2.0, 30.0, 100.0]),
)
health = st.sampled_from([None, None, None, "fail", "recover"])
steps = st.lists(
    st.tuples(st.integers(1, 24 * 6), st.lists(edits, max_size=3), health),
    min_size=1,
    max_size=14,
)


def _context(clock: list[datetime], config: MentorpulseConfig = CONFIG) -> Context:
    # One in-memory SQLite database per side: the real schema and queries, no disk waits.
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    ctx = Context(config, ROSTER, engine, session_factory(engine), lambda: clock[0])
    with ctx.db.begin() as db:
        stored_roster.apply_roster(db, CONFIG, ROSTER)
        source = sources.ensure_source(db, "cal", "ics")
        source.last_success_at = START
    return ctx


def _health(ctx: Context, change: str | None, now: datetime) -> None:
    """What the sync stage records: a failure keeps the last success, a recovery is one."""
    if change is None:
        return
    with ctx.db.begin() as db:
        source = db.get_one(Source, "cal")
        source.healthy = change == "recover"
        source.last_error = None if source.healthy else "HTTP 503"
        if source.healthy:
            source.last_success_at = now


def _apply(ctx: Context, edit: Edit) -> None:
    entry = ROSTER[edit.pairing]
    with ctx.db.begin() as db:
        pairing = db.scalars(select(Pairing).where(Pairing.key == entry.key)).one()
        key = f"s{edit.slot}"
        row = db.scalars(
            select(MentoringSession).where(
                MentoringSession.pairing_id == pairing.id, MentoringSession.key == key
            )
        ).one_or_none()
        if edit.outcome is None:
            if row is not None:
                db.delete(row)
        else:
            start = START + timedelta(days=edit.day, hours=edit.hour)
            cancelled = edit.outcome in (Outcome.CANCELLED, Outcome.RESCHEDULED)
            who = entry.mentee_email if edit.by_mentee else entry.mentor_email
            values: dict[str, Any] = {
                "start": start,
                "end": start + timedelta(hours=1),
                "outcome": edit.outcome.value,
                "confidence": 0.8,
                "cancelled_by": who if cancelled else None,
                "cancelled_hours_before": edit.notice if cancelled else None,
                "updated_at": start,
            }
            if row is None:
                db.add(MentoringSession(pairing_id=pairing.id, key=key, **values))
            else:
                for name, value in values.items():
                    setattr(row, name, value)
        pairing.sessions_changed = True


def _findings(ctx: Context) -> list[tuple[Any, ...]]:
    with ctx.db() as db:
        return [
            (f.fingerprint, f.state, f.since, f.firing_since, f.until, f.facts, f.reason)
            for f in db.scalars(select(Finding).order_by(Finding.fingerprint))
        ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=steps)
def test_incremental_evaluation_equals_full(
    plan: list[tuple[int, list[Edit], str | None]],
) -> None:
    clock = [START]
    incremental = _context(clock)
    full = _context(clock)
    everything = _context(clock, READING_ALL)
    sides = (incremental, full, everything)
    try:
        for hours, changes, change in plan:
            clock[0] += timedelta(hours=hours)
            for side in sides:
                _health(side, change, clock[0])
                for edit in changes:
                    _apply(side, edit)
            evaluate_rules(incremental)
            evaluate_rules(full, full=True)
            evaluate_rules(everything, full=True)
            assert _findings(incremental) == _findings(full), clock[0]
            assert _findings(everything) == _findings(full), clock[0]
            assert evaluate_rules(incremental).changed == 0, "evaluating twice changes nothing"
    finally:
        for side in sides:
            side.engine.dispose()

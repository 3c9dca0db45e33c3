"""The sessions stage on real calendar files: one meeting is one session whatever UID each
copy carries, and a rebooking is a reschedule only when it replaces the cancelled slot.

Each test writes the mentor's and the mentee's .ics files into a folder source and runs
the real sync and sessions stages on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from mentorpulse import stages
from mentorpulse.storage.models import Evidence, MentoringSession, Pairing

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
MENTOR, MENTEE = "ana@example.org", "ben@example.org"


def vevent(
    uid: str,
    start: datetime,
    *,
    minutes: int = 60,
    mentee_answer: str = "ACCEPTED",
    status: str = "CONFIRMED",
    sequence: int = 0,
) -> str:
    def stamp(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return (
        "BEGIN:VEVENT\r\n"
        f"UID:{uid}\r\n"
        f"DTSTAMP:{stamp(NOW - timedelta(days=60))}\r\n"
        f"LAST-MODIFIED:{stamp(min(start - timedelta(days=2), NOW))}\r\n"
        f"SEQUENCE:{sequence}\r\n"
        f"DTSTART:{stamp(start)}\r\n"
        f"DTEND:{stamp(start + timedelta(minutes=minutes))}\r\n"
        "SUMMARY:Catch-up\r\n"
        f"STATUS:{status}\r\n"
        f"ORGANIZER:mailto:{MENTOR}\r\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTOR}\r\n"
        f"ATTENDEE;PARTSTAT={mentee_answer}:mailto:{MENTEE}\r\n"
        "END:VEVENT\r\n"
    )


Deploy = Callable[[dict[str, list[str]]], stages.Context]


@pytest.fixture
def deploy(tmp_path: Path, database_url: str) -> Deploy:
    """Write (or rewrite) each person's calendar file, and open the deployment."""
    (tmp_path / "calendars").mkdir()
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\nlead,{MENTOR},{MENTEE},2025-12-01\n"
    )
    (tmp_path / "mentorpulse.yaml").write_text(
        f"database: {database_url}\n"
        "timezone: Europe/Berlin\n"
        "sources:\n  - id: cal\n    kind: ics\n    path: calendars\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: lead\n    cadence: {every: 28d, grace: 7d}\n"
        "    rules:\n      - {id: lapsed, kind: cadence_gap}\n"
    )
    opened: list[stages.Context] = []

    def write(calendars: dict[str, list[str]]) -> stages.Context:
        for owner, events in calendars.items():
            body = "".join(events)
            (tmp_path / "calendars" / f"{owner}.ics").write_text(
                f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n"
            )
        if not opened:
            opened.append(stages.Context.open(tmp_path / "mentorpulse.yaml", clock=lambda: NOW))
        ctx = opened[0]
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        return ctx

    return write


def sessions(ctx: stages.Context) -> list[tuple[int, datetime, str, list[str]]]:
    """(id, start, outcome, evidence) of every session, by start."""
    with ctx.db() as db:
        rows = db.scalars(select(MentoringSession).order_by(MentoringSession.start)).all()
        return [
            (
                s.id,
                s.start.astimezone(UTC) if s.start.tzinfo else s.start.replace(tzinfo=UTC),
                s.outcome,
                list(
                    db.scalars(
                        select(Evidence.detail)
                        .where(Evidence.session_id == s.id)
                        .order_by(Evidence.rank)
                    )
                ),
            )
            for s in rows
        ]


SLOT = NOW - timedelta(days=3, hours=2)


def test_copies_under_other_uids_fold_into_one_session_with_each_partys_answer(
    deploy: Deploy,
) -> None:
    # The mentee's client re-exported the meeting under its own UID, two minutes off.
    ctx = deploy({MENTOR: [vevent("mentor-copy@a", SLOT)]})
    ((first_id, _, outcome, _),) = sessions(ctx)
    assert outcome == "presumed_held"

    ctx = deploy(
        {MENTEE: [vevent("mentee-copy@b", SLOT + timedelta(minutes=2), mentee_answer="DECLINED")]}
    )
    ((session_id, start, outcome, evidence),) = sessions(ctx)
    assert session_id == first_id  # the late copy joined the stored session
    assert abs(start - SLOT) <= timedelta(minutes=2)
    assert outcome == "missed"
    assert evidence[0] == "mentee declined in their own calendar"
    assert "mentor accepted in their own calendar" in evidence

    # Running the stages again changes nothing.
    ctx = deploy({})
    assert sessions(ctx) == [(session_id, start, outcome, evidence)]
    assert stages.rebuild_sessions(ctx).changed == 0


def test_two_meetings_of_the_pair_on_one_day_stay_two(deploy: Deploy) -> None:
    morning, afternoon = SLOT - timedelta(hours=4), SLOT + timedelta(hours=2)
    ctx = deploy(
        {
            MENTOR: [vevent("morning@a", morning), vevent("afternoon@a", afternoon)],
            MENTEE: [vevent("morning@b", morning), vevent("afternoon@b", afternoon)],
        }
    )
    found = sessions(ctx)
    assert [(start, outcome) for _, start, outcome, _ in found] == [
        (morning, "presumed_held"),
        (afternoon, "presumed_held"),
    ]
    # Each still folds its two copies: both parties answered in their own calendar.
    for *_, evidence in found:
        assert "mentee accepted in their own calendar" in evidence


def test_a_copy_that_starts_later_than_a_few_minutes_is_another_meeting(deploy: Deploy) -> None:
    ctx = deploy(
        {
            MENTOR: [vevent("a@a", SLOT)],
            MENTEE: [vevent("b@b", SLOT + timedelta(minutes=30))],
        }
    )
    assert len(sessions(ctx)) == 2


TUESDAY = datetime(2026, 2, 10, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rebooked_after", "cancelled_becomes"),
    [(timedelta(days=10), "rescheduled"), (timedelta(days=21), "cancelled")],
)
def test_a_rebooking_replaces_the_cancelled_slot_only_within_half_a_cadence(
    deploy: Deploy, rebooked_after: timedelta, cancelled_becomes: str
) -> None:
    # Monthly cadence (28d): cancelled Tuesday; a booking 10 days later is its
    # replacement; one 3 weeks later is nearer the next monthly slot than the cancelled
    # one, so it is the next meeting and the cancellation stays a cancellation.
    events = [
        vevent("tuesday@a", TUESDAY, status="CANCELLED", sequence=1),
        vevent("rebooked@a", TUESDAY + rebooked_after),
    ]
    ctx = deploy({MENTOR: events, MENTEE: events})
    assert [(start, outcome) for _, start, outcome, _ in sessions(ctx)] == [
        (TUESDAY, cancelled_becomes),
        (TUESDAY + rebooked_after, "presumed_held"),
    ]


def test_cancelled_and_booked_again_in_the_same_slot_is_a_reschedule_not_a_copy(
    deploy: Deploy,
) -> None:
    events = [
        vevent("first@a", SLOT, status="CANCELLED", sequence=1),
        vevent("again@a", SLOT),
    ]
    ctx = deploy({MENTOR: events, MENTEE: events})
    assert sorted(outcome for _, _, outcome, _ in sessions(ctx)) == [
        "presumed_held",
        "rescheduled",
    ]


def test_a_double_stored_before_folding_existed_is_removed(deploy: Deploy) -> None:
    ctx = deploy(
        {
            MENTOR: [vevent("mentor-copy@a", SLOT)],
            MENTEE: [vevent("mentee-copy@b", SLOT + timedelta(minutes=1))],
        }
    )
    ((kept, *_),) = sessions(ctx)
    # What the stage stored when it told copies apart by UID alone: a second session.
    with ctx.db.begin() as db:
        pairing = db.scalars(select(Pairing)).one()
        stored = db.get_one(MentoringSession, kept)
        absorbed = "mentee-copy@b" if stored.key == "mentor-copy@a" else "mentor-copy@a"
        db.add(
            MentoringSession(
                pairing_id=pairing.id,
                key=absorbed,
                start=SLOT,
                end=SLOT + timedelta(hours=1),
                outcome="presumed_held",
                confidence=0.8,
                updated_at=NOW,
            )
        )
        pairing.events_changed = True
    assert len(sessions(ctx)) == 2
    stages.rebuild_sessions(ctx)
    assert [s[0] for s in sessions(ctx)] == [kept]

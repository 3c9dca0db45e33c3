"""Judging attendance from the calendar copies of one meeting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mentorpulse.model import ATTENDED, Attendee, EventRecord, EventStatus, Outcome, Response
from mentorpulse.tracking.attendance import (
    Proof,
    Verdict,
    fold_copies,
    judge,
    mark_rescheduled,
    session_key,
)
from tests.unit.test_match import load_records

MENTOR = "mentor@x.org"
MENTEE = "mentee@x.org"
START = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # Tue 3 Mar 10:00 in Berlin
BEFORE = START - timedelta(days=1)
AFTER = START + timedelta(days=1)

A = Response.ACCEPTED
D = Response.DECLINED
T = Response.TENTATIVE


def copy(
    owner: str,
    *,
    mentee: Response = A,
    mentor: Response | None = None,
    status: EventStatus = EventStatus.CONFIRMED,
    start: datetime = START,
    original_start: datetime | None = None,
    updated: datetime | None = None,
    sequence: int = 0,
) -> EventRecord:
    attendees = [Attendee(MENTEE, mentee)]
    if mentor is not None:
        attendees.append(Attendee(MENTOR, mentor))
    return EventRecord(
        source_id=f"src-{owner}",
        provider_id=f"{owner}-1",
        ical_uid="uid-1@x.org",
        start=start,
        end=start + timedelta(hours=1),
        original_start=original_start,
        series_id="uid-1@x.org" if original_start else None,
        zone="Europe/Berlin",
        status=status,
        organizer=MENTOR,
        attendees=tuple(attendees),
        calendar_owner=owner,
        updated=updated,
        sequence=sequence,
    )


def verdict(*copies: EventRecord, now: datetime = AFTER) -> Verdict:
    return judge(copies, mentor=MENTOR, mentee=MENTEE, now=now)


def test_upcoming_confidence_follows_rsvps() -> None:
    sure = verdict(copy(MENTOR), copy(MENTEE), now=BEFORE)
    unsure = verdict(copy(MENTOR, mentee=T), copy(MENTEE, mentee=T), now=BEFORE)
    assert sure.outcome is unsure.outcome is Outcome.UPCOMING
    assert 0 < unsure.confidence < sure.confidence <= 1


def test_session_in_progress_is_still_upcoming() -> None:
    assert verdict(copy(MENTOR), now=START + timedelta(minutes=30)).outcome is Outcome.UPCOMING


def test_past_without_decline_is_presumed_held() -> None:
    held = verdict(copy(MENTOR), copy(MENTEE))
    assert held.outcome is Outcome.PRESUMED_HELD
    assert held.outcome in ATTENDED
    assert held.evidence[-1].kind == "time_passed"
    assert [p.strength for p in held.evidence] == sorted(
        (p.strength for p in held.evidence), reverse=True
    )
    tentative = verdict(copy(MENTOR, mentee=T), copy(MENTEE, mentee=T))
    assert tentative.outcome is Outcome.PRESUMED_HELD
    assert 0 < tentative.confidence < held.confidence < 1, "time passing proves less than RSVPs"


def test_stronger_evidence_gives_a_more_confident_verdict() -> None:
    """The order an operator reads in ``explain``: an explicit cancellation, then a decline
    in the decliner's own calendar, then one the organiser's copy alone shows."""
    cancelled = verdict(
        copy(MENTOR, status=EventStatus.CANCELLED, updated=BEFORE, sequence=1), copy(MENTEE)
    )
    own_decline = verdict(copy(MENTOR, mentee=A), copy(MENTEE, mentee=D))
    organizer_only = verdict(copy(MENTOR, mentee=D))
    assert [v.outcome for v in (cancelled, own_decline, organizer_only)] == [
        Outcome.CANCELLED,
        Outcome.MISSED,
        Outcome.MISSED,
    ]
    assert 1 >= cancelled.confidence > own_decline.confidence > organizer_only.confidence > 0
    # A session nobody declined is presumed held, never as surely as an explicit answer.
    presumed = verdict(copy(MENTOR), copy(MENTEE))
    assert presumed.confidence < cancelled.confidence


def test_decline_in_own_copy_beats_stale_organizer_copy() -> None:
    result = verdict(copy(MENTOR, mentee=A), copy(MENTEE, mentee=D))
    assert result.outcome is Outcome.MISSED
    assert result.evidence[0] == Proof(
        "declined", MENTEE, "mentee declined in their own calendar", 1
    )


def test_acceptance_in_own_copy_beats_organizer_copy() -> None:
    result = verdict(copy(MENTOR, mentee=D), copy(MENTEE, mentee=A))
    assert result.outcome is Outcome.PRESUMED_HELD


def test_decline_seen_only_in_organizer_copy_is_less_certain() -> None:
    result = verdict(copy(MENTOR, mentee=D))
    assert result.outcome is Outcome.MISSED
    own = verdict(copy(MENTOR, mentee=A), copy(MENTEE, mentee=D))
    assert result.confidence < own.confidence
    assert result.evidence[0].party == MENTEE
    assert result.evidence[0].detail == f"mentee declined in {MENTOR}'s calendar"


def test_mentor_declining_own_meeting_is_missed() -> None:
    result = verdict(copy(MENTOR, mentor=D), copy(MENTEE))
    assert result.outcome is Outcome.MISSED
    assert result.evidence[0].party == MENTOR


def test_late_cancellation_says_who_and_how_late() -> None:
    cancelled = copy(
        MENTOR, status=EventStatus.CANCELLED, updated=START - timedelta(hours=3), sequence=1
    )
    result = verdict(cancelled, copy(MENTEE))
    assert result.outcome is Outcome.CANCELLED
    assert result.cancelled_by == MENTOR
    assert result.cancelled_hours_before == 3.0
    assert result.evidence[0].kind == "cancelled"
    assert "3.0 hours before" in result.evidence[0].detail


def test_cancellation_after_the_fact_is_negative_hours() -> None:
    cancelled = copy(MENTOR, status=EventStatus.CANCELLED, updated=START + timedelta(hours=2))
    result = verdict(cancelled, copy(MENTEE), now=BEFORE)
    assert result.outcome is Outcome.CANCELLED
    assert result.cancelled_hours_before == -2.0


def test_attendee_copy_alone_cancelled_does_not_cancel() -> None:
    stale = copy(MENTEE, status=EventStatus.CANCELLED, updated=START - timedelta(days=3))
    fresh = copy(MENTOR, updated=START - timedelta(days=1), sequence=2)
    assert verdict(fresh, stale).outcome is Outcome.PRESUMED_HELD
    # …but when the attendee's cancelled copy is the newest, it is the latest word.
    newest = replace(stale, sequence=3)
    result = verdict(fresh, newest)
    assert result.outcome is Outcome.CANCELLED
    assert result.cancelled_by == MENTOR  # the organizer of the cancelled copy


def test_moved_occurrence_is_evidence_in_event_zone() -> None:
    moved_to = datetime(2026, 3, 5, 13, 0, tzinfo=UTC)  # Thu 5 Mar 14:00 in Berlin
    record = copy(MENTOR, start=moved_to, original_start=START, sequence=1)
    result = verdict(record, now=moved_to + timedelta(days=1))
    assert result.outcome is Outcome.PRESUMED_HELD
    moved = [p for p in result.evidence if p.kind == "moved"]
    assert [p.detail for p in moved] == ["moved from Tue 3 Mar 10:00 to Thu 5 Mar 14:00"]


def test_times_come_from_newest_copy() -> None:
    moved_to = START + timedelta(days=2)
    old = copy(MENTEE, sequence=0)
    new = copy(MENTOR, start=moved_to, original_start=START, sequence=1)
    # The old slot is over, the new one is not: the session is still to come.
    assert verdict(old, new, now=START + timedelta(hours=2)).outcome is Outcome.UPCOMING


def test_no_copies_is_unknown() -> None:
    assert verdict().outcome is Outcome.UNKNOWN


def test_real_invitation_nobody_answered_is_presumed_held_with_low_confidence() -> None:
    (record,) = load_records("calendars__property_params.ics", owner="rembrand@daxlab.com")
    record = replace(record, all_day=False, end=record.start + timedelta(hours=1))
    mentor, mentee = "rembrand@daxlab.com", "rembspam@xs4all.nl"
    now = record.end + timedelta(days=1)
    result = judge([record], mentor=mentor, mentee=mentee, now=now)
    assert result.outcome is Outcome.PRESUMED_HELD
    answered = replace(record, attendees=(Attendee(mentee, Response.ACCEPTED),))
    accepted = judge([answered], mentor=mentor, mentee=mentee, now=now)
    assert accepted.outcome is Outcome.PRESUMED_HELD
    assert result.confidence < accepted.confidence, "nobody answered: less sure"
    own_decline = replace(
        record,
        calendar_owner=mentee,
        source_id="mentee-cal",
        attendees=(Attendee(mentee, Response.DECLINED),),
    )
    result = judge([record, own_decline], mentor=mentor, mentee=mentee, now=now)
    assert result.outcome is Outcome.MISSED
    assert result.evidence[0].party == mentee


def test_session_key_shared_by_copies_and_stable_when_moved() -> None:
    mentor_copy = copy(MENTOR, original_start=START)
    mentee_copy = copy(MENTEE, original_start=START, start=START + timedelta(days=1))
    assert session_key(mentor_copy) == session_key(mentee_copy)
    moved_later = copy(MENTOR, original_start=START, start=START + timedelta(days=3), sequence=2)
    assert session_key(moved_later) == session_key(mentor_copy), "moving keeps the session"
    other_occurrence = copy(MENTOR, original_start=START + timedelta(weeks=1))
    assert session_key(other_occurrence) != session_key(mentor_copy)
    # A single meeting is one session, shared by its copies, and none of the series'.
    single = session_key(copy(MENTOR))
    assert single == session_key(copy(MENTEE, start=START + timedelta(hours=1)))
    assert single not in {session_key(mentor_copy), session_key(other_occurrence)}


def _cancelled(hours: float = 2.0) -> Verdict:
    return Verdict(
        Outcome.CANCELLED,
        0.9,
        (Proof("cancelled", MENTEE, "cancelled by mentee", 1),),
        cancelled_by=MENTEE,
        cancelled_hours_before=hours,
    )


UPCOMING = Verdict(Outcome.UPCOMING, 1.0, ())
WINDOW = timedelta(days=7)


def test_rebooking_marks_cancellation_rescheduled() -> None:
    sessions = [
        ("a", START, _cancelled()),
        ("b", START + timedelta(days=2), UPCOMING),
    ]
    changes = mark_rescheduled(sessions, window=WINDOW, zone="Europe/Berlin")
    assert set(changes) == {"a"}
    result = changes["a"]
    assert result.outcome is Outcome.RESCHEDULED
    assert result.evidence[0].detail == "rebooked for Thu 5 Mar 10:00"
    assert result.cancelled_by == MENTEE
    assert result.cancelled_hours_before == 2.0


def test_rebooking_outside_window_does_not_count() -> None:
    sessions = [("a", START, _cancelled()), ("b", START + timedelta(days=8), UPCOMING)]
    assert mark_rescheduled(sessions, window=WINDOW) == {}


def test_rebooking_before_the_cancelled_slot_counts() -> None:
    sessions = [("a", START, _cancelled()), ("b", START - timedelta(days=1), UPCOMING)]
    assert mark_rescheduled(sessions, window=WINDOW)["a"].outcome is Outcome.RESCHEDULED


def test_one_rebooking_absorbs_one_cancellation() -> None:
    sessions = [
        ("a", START, _cancelled()),
        ("b", START + timedelta(days=1), _cancelled()),
        ("c", START + timedelta(days=2), UPCOMING),
    ]
    changes = mark_rescheduled(sessions, window=WINDOW)
    assert list(changes) == ["a"]


def test_mark_rescheduled_is_idempotent_and_reverts() -> None:
    sessions = [("a", START, _cancelled()), ("b", START + timedelta(days=2), UPCOMING)]
    first = mark_rescheduled(sessions, window=WINDOW)
    again = [(k, s, first.get(k, v)) for k, s, v in sessions]
    assert mark_rescheduled(again, window=WINDOW) == {}
    # The rebooking gets cancelled too: the first session is plainly cancelled again.
    both_cancelled = [again[0], ("b", START + timedelta(days=2), _cancelled())]
    reverted = mark_rescheduled(both_cancelled, window=WINDOW)
    assert reverted == {"a": _cancelled()}


@pytest.mark.parametrize("outcome", [Outcome.PRESUMED_HELD, Outcome.MISSED])
def test_past_rebookings_count_whatever_their_outcome(outcome: Outcome) -> None:
    sessions = [
        ("a", START, _cancelled()),
        ("b", START + timedelta(days=1), Verdict(outcome, 0.8, ())),
    ]
    assert mark_rescheduled(sessions, window=WINDOW)["a"].outcome is Outcome.RESCHEDULED


# ---------------------------------------------------------------- one meeting, several UIDs


def under(uid: str, record: EventRecord, minutes: int = 0) -> EventRecord:
    moved = record.start + timedelta(minutes=minutes)
    return replace(record, ical_uid=uid, start=moved, end=moved + timedelta(hours=1))


def test_copies_under_other_uids_within_minutes_fold_and_keep_the_stored_key() -> None:
    mentor, mentee = under("a", copy(MENTOR)), under("b", copy(MENTEE, mentee=D), minutes=-4)
    folded = fold_copies({"a": [mentor], "b": [mentee]})
    assert folded == {"a": [mentor, mentee]}
    # A key already stored wins, so a session's id never changes when a copy joins it.
    assert fold_copies({"a": [mentor], "b": [mentee]}, keep={"b"}) == {"b": [mentor, mentee]}
    assert verdict(*folded["a"]).outcome is Outcome.MISSED


@pytest.mark.parametrize("minutes", [6, 90, 300])
def test_meetings_further_apart_than_a_few_minutes_stay_apart(minutes: int) -> None:
    groups = {"a": [under("a", copy(MENTOR))], "b": [under("b", copy(MENTEE), minutes)]}
    assert fold_copies(groups) == groups


def test_a_slot_cancelled_and_booked_again_in_one_calendar_is_not_a_copy() -> None:
    cancelled = [
        under("a", copy(owner, status=EventStatus.CANCELLED, sequence=1))
        for owner in (MENTOR, MENTEE)
    ]
    again = [under("b", copy(owner)) for owner in (MENTOR, MENTEE)]
    assert fold_copies({"a": cancelled, "b": again}) == {"a": cancelled, "b": again}
    # Two live copies of the slot in one calendar are one meeting booked twice.
    twice = [under("c", copy(owner)) for owner in (MENTOR, MENTEE)]
    assert list(fold_copies({"b": again, "c": twice})) == ["b"]

"""Matching calendar events to rostered pairings."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import icalendar
import pytest

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MatchCriteria
from mentorpulse.model import Attendee, EventRecord, EventStatus, Response
from mentorpulse.tracking.match import Matcher, PairingRef
from tests.conftest import SHARED_TESTDATA

ICS = SHARED_TESTDATA / "ics-realworld"


def load_records(name: str, owner: str | None = None) -> list[EventRecord]:
    """Just enough of an iCalendar reader to turn real files into records for these tests."""
    calendar = icalendar.Calendar.from_ical((ICS / name).read_bytes())
    records = []
    for event in calendar.walk("VEVENT"):
        assert isinstance(event, icalendar.Event)
        dtstart = event.DTSTART
        all_day = not isinstance(dtstart, datetime)
        if isinstance(dtstart, datetime):
            start = dtstart
            end = event.end if event.get("DTEND") or event.get("DURATION") else start
            assert isinstance(end, datetime)
        else:
            start = datetime.combine(dtstart, datetime.min.time(), tzinfo=UTC)
            end = start + timedelta(days=1)
        attendees = event.get("ATTENDEE", [])
        if not isinstance(attendees, list):
            attendees = [attendees]
        organizer = event.get("ORGANIZER")
        uid = str(event.get("UID", name))
        recurrence_id = event.get("RECURRENCE-ID")
        original = recurrence_id.dt if recurrence_id else None
        records.append(
            EventRecord(
                source_id="realworld",
                provider_id=f"{name}:{uid}",
                ical_uid=uid,
                start=start.astimezone(UTC),
                end=end.astimezone(UTC),
                original_start=original.astimezone(UTC) if isinstance(original, datetime) else None,
                all_day=all_day,
                zone=str(getattr(event.DTSTART, "tzinfo", None) or "UTC"),
                status=EventStatus(str(event.get("STATUS", "confirmed")).lower()),
                organizer=str(organizer).lower().removeprefix("mailto:") if organizer else None,
                attendees=tuple(
                    Attendee(
                        email=str(a).lower().removeprefix("mailto:"),
                        response=Response(
                            str(a.params.get("PARTSTAT", "NEEDS-ACTION")).lower().replace("-", "_")
                        ),
                    )
                    for a in attendees
                ),
                calendar_owner=owner,
                categories=tuple(str(c) for c in event.categories),
                title=str(event.get("SUMMARY")) if event.get("SUMMARY") else None,
                sequence=int(event.get("SEQUENCE", 0)),
            )
        )
    return records


def pairing(
    mentor: str, mentee: str, program: str = "eng", criteria: MatchCriteria | None = None
) -> PairingRef:
    return PairingRef(
        key=f"{program}:{mentor}:{mentee}",
        program=program,
        mentor=mentor,
        mentee=mentee,
        criteria=criteria or MatchCriteria(),
    )


T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def event(
    *people: str,
    organizer: str | None = None,
    minutes: int = 30,
    title: str | None = "Mentoring",
    categories: tuple[str, ...] = (),
    status: EventStatus = EventStatus.CONFIRMED,
) -> EventRecord:
    return EventRecord(
        source_id="s",
        provider_id="p1",
        ical_uid="uid-1",
        start=T0,
        end=T0 + timedelta(minutes=minutes),
        organizer=organizer,
        attendees=tuple(Attendee(p, Response.ACCEPTED) for p in people),
        categories=categories,
        title=title,
        status=status,
    )


@pytest.fixture
def bb_meeting() -> EventRecord:
    """A real BlackBerry invitation (organizer rembrand@daxlab.com), as a timed hour."""
    (record,) = load_records("calendars__property_params.ics")
    return replace(
        record,
        all_day=False,
        start=datetime(2012, 8, 14, 9, tzinfo=UTC),
        end=datetime(2012, 8, 14, 10, tzinfo=UTC),
    )


def test_real_invitation_matches_pair_through_organizer(bb_meeting: EventRecord) -> None:
    # Organizer and mentor rembrand@daxlab.com invited three people, the mentee among them.
    matcher = Matcher([pairing("rembrand@daxlab.com", "rembspam@xs4all.nl")])
    assert matcher.match(bb_meeting) == ["eng:rembrand@daxlab.com:rembspam@xs4all.nl"]


def test_organizer_alone_counts_as_participant() -> None:
    record = event("mentee@x.org", organizer="mentor@x.org")
    assert Matcher([pairing("mentor@x.org", "mentee@x.org")]).match(record) == [
        "eng:mentor@x.org:mentee@x.org"
    ]


def test_real_all_day_invitation_never_counts() -> None:
    (record,) = load_records("calendars__property_params.ics")
    assert record.all_day
    matcher = Matcher([pairing("rembrand@daxlab.com", "rembspam@xs4all.nl")])
    assert matcher.match(record) == []


def test_both_parties_needed() -> None:
    matcher = Matcher([pairing("mentor@x.org", "mentee@x.org")])
    assert matcher.match(event("mentor@x.org", "someone@x.org")) == []
    assert matcher.match(event("mentee@x.org", "someone@x.org")) == []
    # The roles may be the other way round in the calendar: still only one pairing.
    assert matcher.match(event("mentee@x.org", organizer="mentor@x.org")) != []


def test_reversed_roles_are_a_different_pairing() -> None:
    matcher = Matcher([pairing("a@x.org", "b@x.org")])
    assert matcher.match(event("a@x.org", "b@x.org")) == ["eng:a@x.org:b@x.org"]
    matcher = Matcher([pairing("a@x.org", "b@x.org"), pairing("b@x.org", "a@x.org", "lead")])
    assert sorted(matcher.match(event("a@x.org", "b@x.org"))) == [
        "eng:a@x.org:b@x.org",
        "lead:b@x.org:a@x.org",
    ]


def test_one_event_can_serve_several_pairings_of_a_group_session() -> None:
    matcher = Matcher(
        [
            pairing("m@x.org", "e1@x.org"),
            pairing("m@x.org", "e2@x.org"),
            pairing("m@x.org", "e3@x.org"),
        ]
    )
    assert matcher.match(event("m@x.org", "e1@x.org", "e2@x.org")) == [
        "eng:m@x.org:e1@x.org",
        "eng:m@x.org:e2@x.org",
    ]


def test_title_keywords_case_insensitive_substring() -> None:
    criteria = MatchCriteria(title_keywords=("1:1", "Mentoring"))
    matcher = Matcher([pairing("m@x.org", "e@x.org", criteria=criteria)])
    assert matcher.match(event("m@x.org", "e@x.org", title="weekly MENTORING chat")) != []
    assert matcher.match(event("m@x.org", "e@x.org", title="Ana / Bo 1:1")) != []
    assert matcher.match(event("m@x.org", "e@x.org", title="Sprint planning")) == []
    assert matcher.match(event("m@x.org", "e@x.org", title=None)) == []


def test_without_keywords_any_title_or_none_matches() -> None:
    matcher = Matcher([pairing("m@x.org", "e@x.org")])
    assert matcher.match(event("m@x.org", "e@x.org", title=None)) != []


def test_real_categories_match_case_insensitively() -> None:
    (record,) = load_records("calendars__issue_127_categories_with_commas.ics")
    record = replace(
        record,
        end=record.start + timedelta(hours=1),
        attendees=(Attendee("m@x.org"), Attendee("e@x.org")),
    )
    assert "Meeting, John" in record.categories
    hit = MatchCriteria(categories=("project",))
    comma = MatchCriteria(categories=("MEETING, JOHN",))
    miss = MatchCriteria(categories=("Mentoring",))
    assert Matcher([pairing("m@x.org", "e@x.org", criteria=hit)]).match(record) != []
    assert Matcher([pairing("m@x.org", "e@x.org", criteria=comma)]).match(record) != []
    assert Matcher([pairing("m@x.org", "e@x.org", criteria=miss)]).match(record) == []


def test_min_duration_boundary() -> None:
    criteria = MatchCriteria(min_duration=timedelta(minutes=30))
    matcher = Matcher([pairing("m@x.org", "e@x.org", criteria=criteria)])
    assert matcher.match(event("m@x.org", "e@x.org", minutes=30)) != []
    assert matcher.match(event("m@x.org", "e@x.org", minutes=29)) == []


def test_criteria_are_per_program() -> None:
    strict = MatchCriteria(title_keywords=("mentoring",))
    loose = MatchCriteria()
    matcher = Matcher(
        [
            pairing("m@x.org", "e@x.org", "strict", strict),
            pairing("m@x.org", "e@x.org", "loose", loose),
        ]
    )
    assert matcher.match(event("m@x.org", "e@x.org", title="Coffee")) == ["loose:m@x.org:e@x.org"]


def test_cancelled_event_still_matches() -> None:
    matcher = Matcher([pairing("m@x.org", "e@x.org")])
    record = event("m@x.org", "e@x.org", status=EventStatus.CANCELLED)
    assert matcher.match(record) == ["eng:m@x.org:e@x.org"]


def test_from_roster_uses_roster_key() -> None:
    row = RosterPairing("eng", "Ana@X.org".lower(), "bo@x.org", started_on=date(2026, 1, 1))
    ref = PairingRef.from_roster(row, MatchCriteria())
    assert ref.key == row.key
    assert Matcher([ref]).match(event("ana@x.org", "bo@x.org")) == [row.key]


# ---------------------------------------------------------------- group meetings


def crowd(n: int) -> tuple[str, ...]:
    return tuple(f"colleague{i}@x.org" for i in range(n))


def test_without_keywords_a_meeting_over_the_cap_is_a_group_meeting_not_a_session() -> None:
    matcher = Matcher([pairing("m@x.org", "e@x.org")])  # default cap: 4 people
    assert matcher.match(event("e@x.org", *crowd(2), organizer="m@x.org")) != []  # 4 people
    assert matcher.match(event("e@x.org", *crowd(3), organizer="m@x.org")) == []  # 5 people
    all_hands = event("m@x.org", "e@x.org", *crowd(40), organizer="ceo@x.org", title="All hands")
    assert matcher.match(all_hands) == []


def test_rooms_and_resources_do_not_count_against_the_cap() -> None:
    matcher = Matcher([pairing("m@x.org", "e@x.org")])
    rooms = tuple(
        Attendee(f"room{i}@resource.x.org", Response.ACCEPTED, is_resource=True) for i in range(3)
    )
    base = event("e@x.org", *crowd(2), organizer="m@x.org")
    assert matcher.match(replace(base, attendees=base.attendees + rooms)) != []
    # The same three as people make it a group meeting.
    people = tuple(replace(a, is_resource=False) for a in rooms)
    assert matcher.match(replace(base, attendees=base.attendees + people)) == []


def test_a_title_keyword_or_category_match_bypasses_the_cap() -> None:
    by_title = MatchCriteria(title_keywords=("mentoring",))
    by_category = MatchCriteria(categories=("Mentoring",))
    circle = event("m@x.org", "e@x.org", *crowd(8), title="Mentoring circle")
    tagged = replace(circle, title="Circle", categories=("mentoring",))
    assert Matcher([pairing("m@x.org", "e@x.org", criteria=by_title)]).match(circle) != []
    assert Matcher([pairing("m@x.org", "e@x.org", criteria=by_category)]).match(tagged) != []


def test_the_cap_is_configurable_and_can_be_lifted() -> None:
    big = event("m@x.org", "e@x.org", *crowd(6))  # 8 people
    for cap, found in ((8, True), (7, False), (None, True)):
        criteria = MatchCriteria(max_participants=cap)
        assert bool(Matcher([pairing("m@x.org", "e@x.org", criteria=criteria)]).match(big)) is found


def test_a_cap_under_two_is_refused() -> None:
    with pytest.raises(ValueError, match="max_participants"):
        MatchCriteria.model_validate({"max_participants": 1})

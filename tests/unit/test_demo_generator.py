"""The demo organisation: reproducible, valid, and its truth matches its calendars.

The truth is checked against the calendars with icalendar and recurring-ical-events
directly (not with mentorpulse's own matching), so a wrong truth cannot hide behind a
wrong pipeline.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import recurring_ical_events
import yaml
from icalendar import Calendar

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.sample import Manifest, read_manifest, write_demo
from mentorpulse.sample.demo import dst_transition

TODAY = date(2025, 7, 6)  # mid-summer: the hardest date to find a DST change near
# Spread over the year so every branch of the date arithmetic (month ends, DST seasons,
# days of the month above 14) runs.
TODAYS = [date(2025, 1, 31), date(2025, 3, 29), TODAY, date(2025, 10, 15)]
ZONES = {"Europe/Berlin", "America/New_York", "Asia/Kolkata", "Europe/London"}


@dataclass(frozen=True)
class Copy:
    """One occurrence of a pair's meeting as one calendar file shows it."""

    owner: str
    uid: str
    start: datetime  # UTC
    local: datetime  # as written, in the event's own zone
    status: str
    partstat: dict[str, str]
    modified: datetime | None
    recurring: bool


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def roster(folder: Path) -> list[dict[str, str]]:
    with (folder / "roster.csv").open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def expand(folder: Path, today: date) -> dict[str, list[Copy]]:
    """Every occurrence of a meeting between a rostered pair, per pairing key."""
    pairs = {(r["mentor_email"], r["mentee_email"]): r for r in roster(folder)}
    found: dict[str, list[Copy]] = defaultdict(list)
    for path in sorted((folder / "calendars").glob("*.ics")):
        owner = path.name.removesuffix(".ics")
        calendar = Calendar.from_ical(path.read_bytes())
        window = (today - timedelta(days=100), today + timedelta(days=100))
        for event in recurring_ical_events.of(calendar).between(*window):
            attendees = event.get("attendee", [])
            attendees = attendees if isinstance(attendees, list) else [attendees]
            partstat = {
                str(a).removeprefix("mailto:"): str(a.params["PARTSTAT"]) for a in attendees
            }
            for (mentor, mentee), row in pairs.items():
                if {mentor, mentee} <= partstat.keys() and len(partstat) == 2:
                    key = f"{row['program']}:{mentor}:{mentee}"
                    modified = event.get("last-modified")
                    found[key].append(
                        Copy(
                            owner=owner,
                            uid=str(event["uid"]),
                            start=event.decoded("dtstart").astimezone(UTC),
                            local=event.decoded("dtstart"),
                            status=str(event.get("status", "CONFIRMED")),
                            partstat=partstat,
                            modified=modified.dt if modified else None,
                            recurring="RRULE" in event or "RECURRENCE-ID" in event,
                        )
                    )
    return found


Generated = tuple[Path, Manifest, dict[str, list[Copy]]]


@pytest.fixture(scope="module")
def generate(tmp_path_factory: pytest.TempPathFactory) -> Callable[[date], Generated]:
    """The demo for a given today, written and expanded once per module."""
    cache: dict[date, Generated] = {}

    def get(today: date) -> Generated:
        if today not in cache:
            folder = tmp_path_factory.mktemp(f"demo-{today}")
            truth = write_demo(folder, today=today)
            cache[today] = (folder, truth, expand(folder, today))
        return cache[today]

    return get


@pytest.fixture
def demo(generate: Callable[[date], Generated]) -> tuple[Path, Manifest]:
    folder, truth, _ = generate(TODAY)
    return folder, truth


def test_same_today_gives_byte_identical_files_even_in_another_process(
    demo: tuple[Path, Manifest], tmp_path: Path
) -> None:
    folder, truth = demo
    script = (
        "import sys, datetime, pathlib; from mentorpulse.sample import write_demo; "
        "write_demo(pathlib.Path(sys.argv[1]), today=datetime.date.fromisoformat(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # set iteration order differs
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), TODAY.isoformat()],
        check=True,
        env=env,
        capture_output=True,
    )
    again = files(tmp_path)
    assert again == files(folder)
    assert len([name for name in again if name.endswith(".ics")]) == truth.counts["calendars"]
    assert write_demo(tmp_path, today=TODAY) == truth
    assert read_manifest(tmp_path) == truth, "the manifest on disk is what was planted"


def test_another_today_moves_everything(demo: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, truth = demo
    later = write_demo(tmp_path, today=TODAY + timedelta(days=1))
    shifted = {(s.pairing_key, s.start) for s in later.sessions}
    assert {(s.pairing_key, s.start) for s in truth.sessions}.isdisjoint(shifted)


def test_yaml_validates_and_points_at_the_calendars(demo: tuple[Path, Manifest]) -> None:
    folder, _ = demo
    config = MentorpulseConfig.model_validate(
        yaml.safe_load((folder / "mentorpulse.yaml").read_text(encoding="utf-8"))
    )
    assert config.timezone == "Europe/London"
    assert config.database == "sqlite:///mentorpulse.db"
    (source,) = config.sources
    assert (source.id, source.path) == ("demo-calendars", "calendars")
    assert (source.window_past, source.window_future) == (timedelta(days=100),) * 2
    cadences = {p.id: (p.cadence.every, p.cadence.grace) for p in config.programs}
    assert cadences == {
        "engineering": (timedelta(days=14), timedelta(days=3)),
        "leadership": (timedelta(days=28), timedelta(days=7)),
    }
    for program in config.programs:
        assert [r.kind for r in program.rules] == ["cadence_gap"]
        assert program.admins
        assert program.match.title_keywords == ()
        assert program.match.categories == ()
    assert "hr" in config.contacts
    assert config.notify.sender == "mentorpulse@demo.example"
    assert config.notify.transport.path == "outbox"
    rows = roster(folder)
    assert list(rows[0]) == [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
    assert {r["program"] for r in rows} == {"engineering", "leadership"}
    assert all(r["mentor_email"].endswith("@demo.example") for r in rows)


def test_the_project_loaders_accept_config_and_roster(demo: tuple[Path, Manifest]) -> None:
    folder, truth = demo
    config = load_config(folder / "mentorpulse.yaml")
    pairings = load_roster(config.resolve(config.roster.path), config)
    assert tuple(p.key for p in pairings) == truth.pairings
    zones = {z for p in pairings for z in (p.mentor_timezone, p.mentee_timezone)}
    assert zones >= ZONES


def test_every_calendar_parses_with_its_timezones_and_the_real_zones_are_used(
    demo: tuple[Path, Manifest],
) -> None:
    folder, _ = demo
    used: set[str] = set()
    for path in (folder / "calendars").glob("*.ics"):
        calendar = Calendar.from_ical(path.read_bytes())
        assert calendar.get_missing_tzids() == set(), path.name
        assert calendar.walk("VEVENT"), path.name
        used |= calendar.get_used_tzids()
    assert used >= ZONES


@pytest.mark.parametrize("today", TODAYS)
def test_truth_is_exactly_what_both_calendars_hold(
    today: date, generate: Callable[[date], Generated]
) -> None:
    folder, truth, found = generate(today)
    rows = roster(folder)
    never_met = [
        r
        for r in rows
        if f"{r['program']}:{r['mentor_email']}:{r['mentee_email']}"
        not in {s.pairing_key for s in truth.sessions}
    ]
    assert len(truth.pairings) == len(rows) == 12
    assert len(never_met) == 1
    assert date.fromisoformat(never_met[0]["started_on"]) < today - timedelta(days=61)

    planted = defaultdict(set)
    for session in truth.sessions:
        planted[session.pairing_key].add(session.start)
        assert (session.planted == "upcoming") == (session.start.date() > today), session
    for key in truth.pairings:
        copies = found.get(key, [])
        by_owner = defaultdict(set)
        for copy in copies:
            by_owner[copy.owner].add((copy.uid, copy.start))
        mentor, mentee = key.split(":")[1:]
        # Every occurrence sits in both people's files under the same UID.
        assert by_owner[mentor] == by_owner[mentee], key
        assert {start for _, start in by_owner[mentor]} == planted.get(key, set()), key


def test_planted_cancellations_and_declines_are_in_the_files(
    generate: Callable[[date], Generated],
) -> None:
    _, truth, found = generate(TODAY)
    kinds = {s.planted for s in truth.sessions}
    assert kinds == {
        "attended",
        "declined_by_mentor",
        "declined_by_mentee",
        "cancelled",
        "late_cancelled",
        "rebooked",
        "upcoming",
    }
    only_own_copy = 0
    for session in truth.sessions:
        mentor, mentee = session.pairing_key.split(":")[1:]
        copies = {c.owner: c for c in found[session.pairing_key] if c.start == session.start}
        assert copies.keys() == {mentor, mentee}
        cancelled = {c.status == "CANCELLED" for c in copies.values()}
        should_cancel = session.planted in {"cancelled", "late_cancelled", "rebooked"}
        assert cancelled == {should_cancel}, session
        if should_cancel:
            notice = session.start - copies[mentor].modified
            assert (notice < timedelta(hours=24)) == (session.planted == "late_cancelled")
        if session.planted.startswith("declined_by_"):
            who = mentor if session.planted == "declined_by_mentor" else mentee
            assert copies[who].partstat[who] == "DECLINED"  # their own copy always says so
            other = mentee if who == mentor else mentor
            only_own_copy += copies[other].partstat[who] != "DECLINED"
        elif session.planted in {"attended", "upcoming"}:
            for owner, copy in copies.items():
                assert copy.partstat[owner] == "ACCEPTED"
    assert only_own_copy >= 1


def test_moves_rebooking_and_lapsed_series(demo: tuple[Path, Manifest]) -> None:
    folder, truth = demo
    calendars = [Calendar.from_ical(p.read_bytes()) for p in (folder / "calendars").glob("*.ics")]
    overrides = [e for c in calendars for e in c.walk("VEVENT") if "RECURRENCE-ID" in e]
    shifted = [e for e in overrides if e.decoded("recurrence-id") != e.decoded("dtstart")]
    assert len({str(e["uid"]) for e in shifted}) >= 2  # moved instances in two series

    rebooked = [s for s in truth.sessions if s.planted == "rebooked"]
    for session in rebooked:
        after = [
            s
            for s in truth.sessions
            if s.pairing_key == session.pairing_key
            and timedelta(0) < s.start - session.start <= timedelta(days=3)
        ]
        assert [s.planted for s in after] == ["attended"]

    last_by_pair: dict[str, datetime] = {}
    for session in truth.sessions:
        last_by_pair[session.pairing_key] = session.start
    lapsed = [
        k
        for k, last in last_by_pair.items()
        if timedelta(days=42) <= datetime.combine(TODAY, time(), UTC) - last <= timedelta(days=56)
    ]
    assert len(lapsed) == 1
    until = [
        e for c in calendars for e in c.walk("VEVENT") if "RRULE" in e and "UNTIL" in e["RRULE"]
    ]
    assert until


@pytest.mark.parametrize("today", TODAYS)
def test_a_series_keeps_its_wall_clock_time_across_a_dst_change(
    today: date, generate: Callable[[date], Generated]
) -> None:
    _, _, found = generate(today)
    by_uid: dict[str, list[datetime]] = defaultdict(list)
    for copies in found.values():
        for copy in copies:
            if copy.recurring and copy.status == "CONFIRMED":
                by_uid[copy.uid].append(copy.local)
    crossing = [
        uid
        for uid, starts in by_uid.items()
        if len({s.utcoffset() for s in starts}) > 1 and len({s.time() for s in starts}) == 1
    ]
    assert crossing


def test_dst_transition_is_found_near_every_day_of_two_years() -> None:
    day = date(2025, 1, 1)
    while day < date(2027, 1, 1):
        zone, changed = dst_transition(day)
        assert abs((changed - day).days) <= 77, (day, zone)
        day += timedelta(days=3)


def test_noise_and_an_all_day_event_are_there_to_be_ignored(demo: tuple[Path, Manifest]) -> None:
    folder, truth = demo
    rostered = {e for r in roster(folder) for e in (r["mentor_email"], r["mentee_email"])}
    noise = all_day = 0
    for path in (folder / "calendars").glob("*.ics"):
        for event in Calendar.from_ical(path.read_bytes()).walk("VEVENT"):
            start = event.decoded("dtstart")
            if not isinstance(start, datetime):
                all_day += 1
                continue
            attendees = event.get("attendee", [])
            attendees = attendees if isinstance(attendees, list) else [attendees]
            people = {str(a).removeprefix("mailto:") for a in attendees}
            if len(people & rostered) == 1:
                noise += 1
    assert noise >= truth.counts["people"] * 3
    assert all_day >= 1


def test_an_all_hands_every_pair_attends_is_planted_but_is_no_session(
    demo: tuple[Path, Manifest],
) -> None:
    folder, truth = demo
    rostered = {e for r in roster(folder) for e in (r["mentor_email"], r["mentee_email"])}
    starts: set[datetime] = set()
    for path in sorted((folder / "calendars").glob("*.ics")):
        calendar = Calendar.from_ical(path.read_bytes())
        window = (TODAY - timedelta(days=100), TODAY + timedelta(days=100))
        found = [
            e
            for e in recurring_ical_events.of(calendar).between(*window)
            if e["summary"] == "All hands"
        ]
        assert found, path.name
        for event in found:
            attendees = {str(a).removeprefix("mailto:"): a.params for a in event["attendee"]}
            people = {a for a, params in attendees.items() if params.get("CUTYPE") != "ROOM"}
            assert rostered <= people
            assert len(people) > 4
            assert any(params.get("CUTYPE") == "ROOM" for params in attendees.values())
            starts.add(event.decoded("dtstart").astimezone(UTC))
    assert len(starts) >= 6
    assert starts.isdisjoint(s.start for s in truth.sessions)
    config = load_config(folder / "mentorpulse.yaml")
    assert {p.match.max_participants for p in config.programs} == {4}


def test_the_manifest_counts_what_the_files_hold(
    generate: Callable[[date], Generated],
) -> None:
    """Counted here from the files with recurring-ical-events, not from the plan."""
    folder, truth, found = generate(TODAY)
    stored = sum(len(copies) for copies in found.values())
    everything = 0
    for path in sorted((folder / "calendars").glob("*.ics")):
        calendar = Calendar.from_ical(path.read_bytes())
        window = (TODAY - timedelta(days=100), TODAY + timedelta(days=100))
        everything += len(recurring_ical_events.of(calendar).between(*window))
    assert truth.counts["events_stored"] == stored == 2 * truth.counts["sessions"]
    assert truth.counts["events_dropped"] == everything - stored
    assert truth.counts["occurrences"] == everything
    assert truth.counts["sessions"] == len(truth.sessions) == sum(truth.planted.values())
    assert truth.counts["pairings"] == len(truth.pairings) == len(roster(folder))

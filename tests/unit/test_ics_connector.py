"""The iCalendar connector, on small calendars written the way real clients write them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import icalendar
import pytest
import recurring_ical_events

import mentorpulse.connectors.base as connector_base
import mentorpulse.connectors.ics as ics_module
from mentorpulse.config.schema import IcsSource
from mentorpulse.connectors.base import AuthError, Connector, TransientError
from mentorpulse.connectors.ics import IcsConnector
from mentorpulse.model import EventRecord, EventStatus, Response, SyncPage

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def ics(*events: str, extra: str = "") -> str:
    body = "".join(f"BEGIN:VEVENT\n{e.strip()}\nEND:VEVENT\n" for e in events)
    text = f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\n{extra}{body}END:VCALENDAR\n"
    return text.replace("\n", "\r\n")


def source(path: Path | str | None = None, url: str | None = None, **kw: object) -> IcsSource:
    return IcsSource.model_validate(
        {
            "id": "team",
            "kind": "ics",
            "path": str(path) if path is not None else None,
            "url": url,
            "window_past": "30d",
            "window_future": "60d",
            **kw,
        }
    )


def sync(
    src: IcsSource,
    cursor: Mapping[str, object] | None = None,
    *,
    base_dir: Path = Path("/"),
    now: datetime = NOW,
    default_zone: str = "UTC",
) -> list[SyncPage]:
    return list(
        IcsConnector(src, base_dir=base_dir, now=now, default_zone=default_zone).sync(cursor)
    )


def records(pages: list[SyncPage]) -> list[EventRecord]:
    return sorted((r for p in pages for r in p.records), key=lambda r: r.start)


def one_file(tmp_path: Path, text: str, name: str = "cal.ics", **kw: object) -> list[EventRecord]:
    (tmp_path / name).write_text(text)
    return records(sync(source(tmp_path / name), **kw))  # type: ignore[arg-type]


WEEKLY = """
UID:weekly-1
DTSTAMP:20240101T000000Z
DTSTART;TZID=Europe/Berlin:20240205T100000
DTEND;TZID=Europe/Berlin:20240205T110000
RRULE:FREQ=WEEKLY;COUNT=6
EXDATE;TZID=Europe/Berlin:20240212T100000
SUMMARY:Mentoring Alice / Bob
ORGANIZER;CN=Alice:MAILTO:Alice@Example.ORG
ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.org
ATTENDEE;PARTSTAT=TENTATIVE:mailto:BOB@example.org
"""


def test_connector_satisfies_the_protocol(tmp_path: Path) -> None:
    (tmp_path / "a.ics").write_text(ics(WEEKLY))
    connector = IcsConnector(source(tmp_path), base_dir=tmp_path, now=NOW)
    assert isinstance(connector, Connector)
    assert connector.source_id == "team"


def test_weekly_series_skips_the_excluded_date(tmp_path: Path) -> None:
    got = one_file(tmp_path, ics(WEEKLY))
    assert [r.start for r in got] == [
        datetime(2024, 2, 5, 9, tzinfo=UTC),
        datetime(2024, 2, 19, 9, tzinfo=UTC),
        datetime(2024, 2, 26, 9, tzinfo=UTC),
        datetime(2024, 3, 4, 9, tzinfo=UTC),
        datetime(2024, 3, 11, 9, tzinfo=UTC),
    ]
    assert all(r.end - r.start == timedelta(hours=1) for r in got)
    assert {r.series_id for r in got} == {"weekly-1"}
    assert all(r.original_start == r.start for r in got)
    assert all(r.zone == "Europe/Berlin" for r in got)
    assert len({r.provider_id for r in got}) == 5
    assert got[0].provider_id == "cal.ics#weekly-1#2024-02-05T09:00:00+00:00"


def test_moved_and_cancelled_occurrences_keep_their_slot(tmp_path: Path) -> None:
    moved = """
UID:weekly-1
DTSTAMP:20240101T000000Z
RECURRENCE-ID;TZID=Europe/Berlin:20240219T100000
DTSTART;TZID=Europe/Berlin:20240221T150000
DTEND;TZID=Europe/Berlin:20240221T160000
SEQUENCE:2
SUMMARY:Mentoring (moved)
"""
    cancelled = """
UID:weekly-1
DTSTAMP:20240101T000000Z
RECURRENCE-ID;TZID=Europe/Berlin:20240226T100000
DTSTART;TZID=Europe/Berlin:20240226T100000
DTEND;TZID=Europe/Berlin:20240226T110000
STATUS:CANCELLED
SEQUENCE:3
"""
    got = {r.original_start: r for r in one_file(tmp_path, ics(WEEKLY, moved, cancelled))}
    slot = datetime(2024, 2, 19, 9, tzinfo=UTC)
    assert got[slot].start == datetime(2024, 2, 21, 14, tzinfo=UTC)
    assert got[slot].series_id == "weekly-1"
    assert got[slot].title == "Mentoring (moved)"
    assert got[slot].provider_id.endswith("#2024-02-19T09:00:00+00:00")
    assert slot not in {r.start for r in got.values()}
    dropped = got[datetime(2024, 2, 26, 9, tzinfo=UTC)]
    assert dropped.status is EventStatus.CANCELLED
    assert dropped.series_id == "weekly-1"
    assert got[datetime(2024, 3, 4, 9, tzinfo=UTC)].status is EventStatus.CONFIRMED


def test_all_day_event_spans_the_day_in_the_calendar_zone(tmp_path: Path) -> None:
    text = ics("UID:day\nDTSTAMP:20240101T000000Z\nDTSTART;VALUE=DATE:20240304")
    (rec,) = one_file(tmp_path, text, default_zone="Europe/Berlin")
    assert rec.all_day
    assert rec.start == datetime(2024, 3, 3, 23, tzinfo=UTC)
    assert rec.end == datetime(2024, 3, 4, 23, tzinfo=UTC)  # no DTEND: one day
    assert rec.series_id is None
    assert rec.original_start is None
    assert rec.provider_id == "cal.ics#day#"
    # X-WR-TIMEZONE, the calendar's own zone, wins over the owner's.
    text = ics(
        "UID:day\nDTSTART;VALUE=DATE:20240304\nDTEND;VALUE=DATE:20240306",
        extra="X-WR-TIMEZONE:America/New_York\n",
    )
    (rec,) = one_file(tmp_path, text, default_zone="Europe/Berlin")
    assert rec.start == datetime(2024, 3, 4, 5, tzinfo=UTC)
    assert rec.end == datetime(2024, 3, 6, 5, tzinfo=UTC)
    assert rec.zone == "America/New_York"


def test_floating_time_is_read_in_the_default_zone(tmp_path: Path) -> None:
    text = ics("UID:f\nDTSTART:20240305T090000\nDURATION:PT45M")
    (berlin,) = one_file(tmp_path, text, default_zone="Europe/Berlin")
    assert berlin.start == datetime(2024, 3, 5, 8, tzinfo=UTC)
    assert berlin.end == datetime(2024, 3, 5, 8, 45, tzinfo=UTC)
    (utc,) = one_file(tmp_path, text)
    assert utc.start == datetime(2024, 3, 5, 9, tzinfo=UTC)
    assert utc.start.tzinfo is UTC


def test_timed_event_without_end_or_duration_is_instant(tmp_path: Path) -> None:
    (rec,) = one_file(tmp_path, ics("UID:i\nDTSTART:20240305T090000Z"))
    assert rec.start == rec.end == datetime(2024, 3, 5, 9, tzinfo=UTC)
    assert rec.zone == "UTC"


CUSTOM_ZONE = """BEGIN:VTIMEZONE
TZID:Company Standard Time
BEGIN:STANDARD
DTSTART:19700101T000000
TZOFFSETFROM:+0530
TZOFFSETTO:+0530
END:STANDARD
END:VTIMEZONE
"""


def test_custom_vtimezone_keeps_its_offsets_without_a_zone_name(tmp_path: Path) -> None:
    text = ics(
        "UID:c\nDTSTART;TZID=Company Standard Time:20240305T100000\n"
        "DTEND;TZID=Company Standard Time:20240305T110000",
        extra=CUSTOM_ZONE,
    )
    (rec,) = one_file(tmp_path, text)
    assert rec.start == datetime(2024, 3, 5, 4, 30, tzinfo=UTC)
    assert rec.end == datetime(2024, 3, 5, 5, 30, tzinfo=UTC)
    assert rec.zone is None


def test_windows_zone_names_map_to_iana(tmp_path: Path) -> None:
    text = ics("UID:w\nDTSTART;TZID=W. Europe Standard Time:20240305T100000")
    (rec,) = one_file(tmp_path, text)
    assert rec.zone == "Europe/Berlin"
    assert rec.start == datetime(2024, 3, 5, 9, tzinfo=UTC)


OUTLOOK_MOUNTAIN = """BEGIN:VTIMEZONE
TZID:(UTC-07:00) Mountain Time (US & Canada)
BEGIN:STANDARD
DTSTART:16011104T020000
TZOFFSETFROM:-0600
TZOFFSETTO:-0700
RRULE:FREQ=YEARLY;BYDAY=1SU;BYMONTH=11
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010311T020000
TZOFFSETFROM:-0700
TZOFFSETTO:-0600
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
"""


@pytest.mark.parametrize(
    ("tzid", "expected"),
    [
        ("(UTC-07:00) Mountain Time (US & Canada)", "America/Denver"),  # Outlook's display name
        ("mountain standard time", "America/Denver"),  # a Windows id in another case
    ],
)
def test_outlook_zone_names_map_through_the_one_mapper(
    tmp_path: Path, tzid: str, expected: str
) -> None:
    text = ics(
        f'UID:o\nDTSTART;TZID="{tzid}":20240305T100000\nDTEND;TZID="{tzid}":20240305T110000',
        extra=OUTLOOK_MOUNTAIN.replace("(UTC-07:00) Mountain Time (US & Canada)", tzid),
    )
    (rec,) = one_file(tmp_path, text)
    assert rec.zone == expected
    assert rec.start == datetime(2024, 3, 5, 17, tzinfo=UTC)


def test_people_fields_are_normalised(tmp_path: Path) -> None:
    event = """
UID:people
DTSTART:20240305T090000Z
DTEND:20240305T100000Z
ORGANIZER:MAILTO:Mentor@Example.ORG
ATTENDEE;PARTSTAT=ACCEPTED:mailto:mentor@example.org
ATTENDEE;PARTSTAT=DECLINED:MailTo:Mentee@Example.org
ATTENDEE;PARTSTAT=TENTATIVE:mailto:t@example.org
ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:n@example.org
ATTENDEE;PARTSTAT=DELEGATED;ROLE=OPT-PARTICIPANT:mailto:d@example.org
ATTENDEE:mailto:plain@example.org
CATEGORIES:Mentoring,1:1
CATEGORIES:Career
SEQUENCE:4
LAST-MODIFIED:20240301T101500Z
DTSTAMP:20240101T000000Z
SUMMARY:Weekly check-in
X-GOOGLE-CONFERENCE:https://meet.google.com/abc-defg-hij
"""
    (rec,) = one_file(tmp_path, ics(event))
    assert rec.organizer == "mentor@example.org"
    assert {a.email: (a.response, a.optional) for a in rec.attendees} == {
        "mentor@example.org": (Response.ACCEPTED, False),
        "mentee@example.org": (Response.DECLINED, False),
        "t@example.org": (Response.TENTATIVE, False),
        "n@example.org": (Response.NEEDS_ACTION, False),
        "d@example.org": (Response.NEEDS_ACTION, True),
        "plain@example.org": (Response.NEEDS_ACTION, False),
    }
    assert rec.response_of("mentee@example.org") is Response.DECLINED
    assert rec.categories == ("Mentoring", "1:1", "Career")
    assert rec.sequence == 4
    assert rec.updated == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert rec.title == "Weekly check-in"
    assert rec.conference_id == "https://meet.google.com/abc-defg-hij"
    assert rec.calendar_owner is None


def test_rooms_and_resources_are_marked_so_they_do_not_count_as_people(tmp_path: Path) -> None:
    event = """
UID:room
DTSTART:20240305T090000Z
DTEND:20240305T100000Z
ORGANIZER:mailto:mentor@example.org
ATTENDEE;PARTSTAT=ACCEPTED:mailto:mentee@example.org
ATTENDEE;CUTYPE=ROOM;PARTSTAT=ACCEPTED:mailto:room-4b@example.org
ATTENDEE;CUTYPE=RESOURCE:mailto:projector@example.org
ATTENDEE;CUTYPE=INDIVIDUAL:mailto:peer@example.org
"""
    (rec,) = one_file(tmp_path, ics(event))
    assert {a.email for a in rec.attendees if a.is_resource} == {
        "room-4b@example.org",
        "projector@example.org",
    }


def test_status_tentative_and_dtstamp_as_updated(tmp_path: Path) -> None:
    text = ics("UID:t\nDTSTAMP:20240202T020202Z\nDTSTART:20240305T090000Z\nSTATUS:TENTATIVE")
    (rec,) = one_file(tmp_path, text)
    assert rec.status is EventStatus.TENTATIVE
    assert rec.updated == datetime(2024, 2, 2, 2, 2, 2, tzinfo=UTC)


def test_owner_comes_from_an_email_file_name_else_the_source(tmp_path: Path) -> None:
    (tmp_path / "Alice@Example.org.ics").write_text(ics("UID:a\nDTSTART:20240305T090000Z"))
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "shared.ics").write_text(ics("UID:b\nDTSTART:20240306T090000Z"))
    pages = sync(source(tmp_path, owner="hr@example.org"))
    owners = {
        s: r.calendar_owner
        for p in pages
        for r, s in zip(p.records, p.record_scopes(), strict=True)
    }
    assert owners == {
        "Alice@Example.org.ics": "alice@example.org",
        "team/shared.ics": "hr@example.org",
    }
    assert records(pages)[1].provider_id == "team/shared.ics#b#"


def test_window_filters_occurrences(tmp_path: Path) -> None:
    daily = "UID:d\nDTSTART:20230101T090000Z\nDURATION:PT1H\nRRULE:FREQ=DAILY"
    far = "UID:far\nDTSTART:20250101T090000Z"
    got = one_file(tmp_path, ics(daily, far))
    # 30 days back, 60 ahead, in whole UTC days.
    assert got[0].start == datetime(2024, 1, 31, 9, tzinfo=UTC)
    assert got[-1].start == datetime(2024, 4, 30, 9, tzinfo=UTC)
    assert len(got) == 91
    assert "far" not in {r.ical_uid for r in got}


def test_unchanged_folder_costs_nothing_and_changes_replace_one_file(tmp_path: Path) -> None:
    (tmp_path / "a.ics").write_text(ics("UID:a\nDTSTART:20240305T090000Z"))
    (tmp_path / "b.ics").write_text(ics("UID:b\nDTSTART:20240306T090000Z"))
    (tmp_path / "notes.txt").write_text("not a calendar")
    (tmp_path / ".a.ics.swp").write_text("editor junk")
    src = source(tmp_path)
    first = sync(src)
    assert [p.replaces_scopes for p in first] == [("a.ics", "b.ics")]  # one grouped page
    cursor = first[-1].cursor
    assert cursor is not None
    json.dumps(cursor)  # the caller stores it as JSON

    assert sync(src, cursor) == []

    (tmp_path / "b.ics").write_text(ics("UID:b\nDTSTART:20240307T090000Z"))
    (changed,) = sync(src, cursor)
    assert changed.replaces_scopes == ("b.ics",)
    assert [r.start for r in changed.records] == [datetime(2024, 3, 7, 9, tzinfo=UTC)]
    assert changed.cursor is not None
    assert sync(src, changed.cursor) == []

    (tmp_path / "a.ics").unlink()
    (gone,) = sync(src, changed.cursor)
    assert gone.replaces_scopes == ("a.ics",)
    assert gone.records == ()
    assert gone.cursor is not None
    assert sync(src, gone.cursor) == []


def test_grouped_pages_carry_the_cursor_to_resume_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector_base, "PAGE_SCOPES", 2)
    monkeypatch.setattr(ics_module, "CHECKPOINT_FILES", 1)
    for name in "abcde":
        (tmp_path / f"{name}.ics").write_text(ics(f"UID:{name}\nDTSTART:20240305T090000Z"))
    src = source(tmp_path)
    pages = sync(src)
    # Files grouped two by two; each group carries the cursor of what it and those
    # before it hold, and nothing of the next group.
    assert [p.replaces_scopes for p in pages] == [
        ("a.ics", "b.ics"),
        ("c.ics", "d.ics"),
        ("e.ics",),
    ]
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert all(p.cursor is not None for p in pages)
    # A crash after storing the first group resumes with the second.
    assert [p.replaces_scopes for p in sync(src, pages[0].cursor)] == [
        ("c.ics", "d.ics"),
        ("e.ics",),
    ]
    assert sync(src, pages[-1].cursor) == []


def test_a_large_folder_stores_its_cursor_at_checkpoints_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cursor names every file: stored with every group, its bytes would grow with
    # the square of the folder. Groups between checkpoints carry none; a crash there
    # resumes from the last checkpoint and reads those files again.
    monkeypatch.setattr(connector_base, "PAGE_SCOPES", 2)
    monkeypatch.setattr(ics_module, "CHECKPOINT_FILES", 3)
    for name in "abcdefg":
        (tmp_path / f"{name}.ics").write_text(ics(f"UID:{name}\nDTSTART:20240305T090000Z"))
    src = source(tmp_path)
    pages = sync(src)
    assert [p.cursor is not None for p in pages] == [False, True, False, True]
    assert [p.replaces_scopes for p in sync(src, pages[1].cursor)] == [
        ("e.ics", "f.ics"),
        ("g.ics",),
    ]
    assert sync(src, pages[-1].cursor) == []


def test_a_group_is_bounded_by_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connector_base, "PAGE_RECORDS", 3)
    for name in "abc":
        (tmp_path / f"{name}.ics").write_text(
            ics(f"UID:{name}\nDTSTART:20240305T090000Z\nRRULE:FREQ=DAILY;COUNT=2")
        )
    (tmp_path / "d.ics").write_text(
        ics("UID:d\nDTSTART:20240305T090000Z\nRRULE:FREQ=DAILY;COUNT=5")
    )
    pages = sync(source(tmp_path))
    # A file is never split: one larger than the bound is a page of its own.
    assert [(p.replaces_scopes, p.scope_sizes) for p in pages] == [
        (("a.ics",), (2,)),
        (("b.ics",), (2,)),
        (("c.ics",), (2,)),
        (("d.ics",), (5,)),
    ]


def test_a_new_day_moves_the_window_and_rereads_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.ics").write_text(ics("UID:a\nDTSTART:20240305T090000Z"))
    src = source(tmp_path)
    cursor = sync(src)[-1].cursor
    assert sync(src, cursor, now=NOW + timedelta(hours=6)) == []
    (again,) = sync(src, cursor, now=NOW + timedelta(days=1))
    assert again.replaces_scopes == ("a.ics",)
    assert len(again.records) == 1


def test_unparseable_file_reports_without_wiping_or_advancing(tmp_path: Path) -> None:
    good = ics("UID:a\nDTSTART:20240305T090000Z")
    (tmp_path / "a.ics").write_text(good)
    src = source(tmp_path)
    cursor = sync(src)[-1].cursor

    (tmp_path / "a.ics").write_text("BEGIN:VCALENDAR\nthis is not\n\x00 ical at all")
    (broken,) = sync(src, cursor)
    assert broken.replaces_scopes == ()  # what a.ics held stays stored
    assert broken.records == ()
    assert [e.item for e in broken.errors] == ["a.ics"]
    assert broken.cursor == cursor  # not advanced: retried next time

    (tmp_path / "a.ics").write_text("")  # half-written: not an empty calendar
    (empty,) = sync(src, cursor)
    assert empty.replaces_scopes == ()
    assert "empty" in empty.errors[0].message

    (tmp_path / "a.ics").write_text(good)
    assert sync(src, broken.cursor) == []  # same content as stored before


def test_a_bad_event_is_skipped_and_named(tmp_path: Path) -> None:
    text = ics(
        "UID:good\nDTSTART:20240305T090000Z",
        "UID:no-start\nSUMMARY:forgot the time",
        "UID:bad-date\nDTSTART:2024-13-45",
        "UID:bad-zone\nDTSTART;TZID=Mars/Olympus_Mons:20240305T090000",
        "UID:too-dense\nDTSTART:20240305T090000Z\nRRULE:FREQ=SECONDLY",
    )
    (tmp_path / "x.ics").write_text(text)
    (page,) = sync(source(tmp_path / "x.ics"))
    assert page.replaces_scopes == ("x.ics",)
    assert [r.ical_uid for r in page.records] == ["good"]
    assert sorted(e.item for e in page.errors) == [
        "x.ics: UID bad-date",
        "x.ics: UID bad-zone",
        "x.ics: UID no-start",
        "x.ics: UID too-dense",
    ]
    messages = {e.item: e.message for e in page.errors}
    assert "DTSTART" in messages["x.ics: UID no-start"]
    assert "Mars/Olympus_Mons" in messages["x.ics: UID bad-zone"]


def test_relative_path_and_missing_root(tmp_path: Path) -> None:
    (tmp_path / "cals").mkdir()
    (tmp_path / "cals" / "a.ics").write_text(ics("UID:a\nDTSTART:20240305T090000Z"))
    (page,) = sync(source("cals"), base_dir=tmp_path)
    assert page.replaces_scopes == ("a.ics",)
    with pytest.raises(TransientError, match="does not exist"):
        sync(source("nowhere"), base_dir=tmp_path)


def test_duplicate_uid_keeps_the_newest_revision(tmp_path: Path) -> None:
    old = "UID:dup\nDTSTART:20240305T090000Z\nSEQUENCE:1\nSUMMARY:old"
    new = "UID:dup\nDTSTART:20240305T090000Z\nSEQUENCE:2\nSUMMARY:new"
    (rec,) = one_file(tmp_path, ics(new, old))
    assert rec.title == "new"


# -- recurrence bounds -------------------------------------------------------------------

GOOD = "UID:good\nDTSTART:20240305T090000Z\nDTEND:20240305T100000Z"
# The figures on main: INTERVAL=0 looped to 4 GB; HOURLY with every minute and
# second ran 69 s to a MemoryError; DAILY with every hour and minute stored 186,862 events.
NONSENSE = {
    "interval-zero": ("FREQ=DAILY;INTERVAL=0", "INTERVAL=0"),
    "every-second": (
        "FREQ=HOURLY;BYMINUTE="
        + ",".join(map(str, range(60)))
        + ";BYSECOND="
        + ",".join(map(str, range(60))),
        "86400 times a day",
    ),
    "every-minute": (
        "FREQ=DAILY;BYHOUR="
        + ",".join(map(str, range(24)))
        + ";BYMINUTE="
        + ",".join(map(str, range(60))),
        "1440 times a day",
    ),
    "hourly": ("FREQ=HOURLY", "24 times a day"),
    "hour-99": ("FREQ=DAILY;BYHOUR=99", "BYHOUR=99"),
    "count-zero": ("FREQ=WEEKLY;COUNT=0", "COUNT=0"),
    "hebrew": ("RSCALE=HEBREW;FREQ=YEARLY", "HEBREW"),
}


@pytest.mark.parametrize("name", sorted(NONSENSE))
def test_nonsense_rules_cost_nothing_and_only_their_event(tmp_path: Path, name: str) -> None:
    rule, why = NONSENSE[name]
    bad = f"UID:{name}\nDTSTART:20240305T090000Z\nDURATION:PT1H\nRRULE:{rule}"
    started = time.thread_time()
    (tmp_path / "x.ics").write_text(ics(GOOD, bad))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert time.thread_time() - started < 1.0
    assert [r.ical_uid for r in page.records] == ["good"]
    (error,) = page.errors
    assert error.item == f"x.ics: UID {name}"
    assert why in error.message


def test_a_series_from_the_year_one_expands_only_the_window(tmp_path: Path) -> None:
    """DTSTART in year 1 with FREQ=HOURLY spent 66 s and 1 GB on main."""
    ancient = "UID:ancient\nDTSTART:00010101T090000Z\nDURATION:PT1H\nRRULE:FREQ=HOURLY;INTERVAL=8"
    recent = "UID:recent\nDTSTART:20231231T010000Z\nDURATION:PT1H\nRRULE:FREQ=HOURLY;INTERVAL=8"
    started = time.thread_time()
    found = one_file(tmp_path, ics(ancient, recent))
    assert time.thread_time() - started < 1.0
    starts = {uid: [r.start for r in found if r.ical_uid == uid] for uid in ("ancient", "recent")}
    assert len(starts["ancient"]) == 91 * 3  # whole days: 30 back, 60 ahead and today
    assert starts["ancient"] == starts["recent"]


def test_a_rule_that_never_matches_is_stopped_by_the_cpu_budget(tmp_path: Path) -> None:
    """dateutil walks such a rule day by day to the year 9999 (4 s) without yielding."""
    never = "UID:never\nDTSTART:20240305T090000Z\nRRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"
    started = time.thread_time()
    (tmp_path / "x.ics").write_text(ics(GOOD, never))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert time.thread_time() - started < 2 * ics_module.RULE_CPU_SECONDS + 0.5
    assert [r.ical_uid for r in page.records] == ["good"]
    assert [e.item for e in page.errors] == ["x.ics: UID never"]
    assert "CPU" in page.errors[0].message


def test_a_long_series_is_cut_and_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ics_module, "MAX_PER_SERIES", 10)
    daily = "UID:daily\nDTSTART:20240201T090000Z\nRRULE:FREQ=DAILY"
    (tmp_path / "x.ics").write_text(ics(daily))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert [r.start.day for r in records([page])] == list(range(1, 11))  # window: Jan 31 on
    (error,) = page.errors
    assert "more than 10 occurrences" in error.message


def test_a_series_of_exactly_the_cap_is_whole_and_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ics_module, "MAX_PER_SERIES", 10)
    daily = "UID:daily\nDTSTART:20240201T090000Z\nRRULE:FREQ=DAILY;COUNT=10"
    (tmp_path / "x.ics").write_text(ics(daily))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert [r.start.day for r in records([page])] == list(range(1, 11))
    assert page.errors == ()


def test_a_uid_with_more_overrides_than_a_series_may_have_is_an_item_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ics_module, "MAX_PER_SERIES", 10)
    overrides = [
        f"UID:many\nRECURRENCE-ID:202403{day:02d}T090000Z\nDTSTART:202403{day:02d}T100000Z"
        for day in range(1, 12)
    ]
    (tmp_path / "x.ics").write_text(ics(GOOD, *overrides))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert [r.ical_uid for r in page.records] == ["good"]
    assert [e.message for e in page.errors] == ["11 VEVENTs share this UID (at most 10)"]


def test_a_file_of_expensive_events_stops_at_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ics_module, "FILE_CPU_SECONDS", 0.5)
    monkeypatch.setattr(ics_module, "FILE_CPU_SECONDS_PER_MB", 0.0)
    never = [
        f"UID:never-{n}\nDTSTART:20240305T090000Z\nRRULE:FREQ=DAILY;BYMONTH=4;BYMONTHDAY=31"
        for n in range(40)
    ]
    started = time.thread_time()
    (tmp_path / "x.ics").write_text(ics(*never))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert time.thread_time() - started < 0.5 + 2 * ics_module.RULE_CPU_SECONDS + 0.5
    assert page.errors[-1].item == "x.ics"
    assert "not read" in page.errors[-1].message


def test_a_file_of_many_bad_events_is_a_bounded_list_of_errors(tmp_path: Path) -> None:
    bad = [f"UID:bad-{n}\nSUMMARY:no start" for n in range(250)]
    (tmp_path / "x.ics").write_text(ics(GOOD, *bad))
    (page,) = sync(source(tmp_path / "x.ics"))
    assert [r.ical_uid for r in page.records] == ["good"]
    assert len(page.errors) == ics_module.MAX_ERRORS_PER_FILE + 1
    assert page.errors[-1].item == "x.ics"
    assert page.errors[-1].message.startswith("150 more events rejected")


def test_item_errors_quote_a_short_clean_fragment_of_the_uid(tmp_path: Path) -> None:
    uid = "evil\x1b[2J" + "u" * 5000
    (tmp_path / "x.ics").write_text(ics(GOOD, f"UID:{uid}\nSUMMARY:no start"))
    (page,) = sync(source(tmp_path / "x.ics"))
    (error,) = page.errors
    assert error.item.startswith("x.ics: UID evil[2Juuu")
    assert len(error.item) < 100
    assert "\x1b" not in error.item


# A rule, whether DTSTART is a date, floating, UTC or zoned: bounding it (COUNT → UNTIL,
# DTSTART moved to the window, UNTIL capped) must not change one occurrence in the window.
ORACLE_RULES = [
    "FREQ=DAILY",
    "FREQ=DAILY;INTERVAL=3",
    "FREQ=DAILY;COUNT=400",
    "FREQ=DAILY;BYDAY=MO,WE;BYMONTH=1,2,3",
    "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH",
    "FREQ=WEEKLY;INTERVAL=3;WKST=SU;BYDAY=SU,MO",
    "FREQ=WEEKLY;UNTIL=20240315T000000Z",
    "FREQ=WEEKLY;COUNT=120;BYDAY=FR",
    "FREQ=MONTHLY;BYMONTHDAY=31",
    "FREQ=MONTHLY;INTERVAL=5;BYMONTHDAY=31",
    "FREQ=MONTHLY;BYDAY=-1FR",
    "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
    "FREQ=MONTHLY;INTERVAL=2;COUNT=30",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=YEARLY;INTERVAL=3;BYMONTH=3;BYDAY=1MO",
    "FREQ=HOURLY;INTERVAL=7",
    "FREQ=DAILY;BYHOUR=9,15",
]
ORACLE_STARTS = {
    "zoned": "DTSTART;TZID=Europe/Berlin:{d}T093000\nDTEND;TZID=Europe/Berlin:{d}T103000",
    "utc": "DTSTART:{d}T093000Z\nDURATION:PT45M",
    "floating": "DTSTART:{d}T093000\nDTEND:{d}T100000",
    "all-day": "DTSTART;VALUE=DATE:{d}\nDTEND;VALUE=DATE:{d}",
}


@pytest.mark.parametrize("kind", sorted(ORACLE_STARTS))
@pytest.mark.parametrize("first", ["20160229", "20190131", "20231231"])
def test_bounding_a_rule_changes_no_occurrence_in_the_window(kind: str, first: str) -> None:
    window = ics_module.Window.around(NOW, timedelta(days=30), timedelta(days=60))
    for rule in ORACLE_RULES:
        if kind == "all-day" and ("HOURLY" in rule or "BYHOUR" in rule):
            continue
        start = ORACLE_STARTS[kind].format(d=first)
        if kind == "all-day":
            day = datetime.strptime(first, "%Y%m%d").replace(tzinfo=UTC)
            end_day = (day + timedelta(days=1)).strftime("%Y%m%d")
            start = start.replace(f"DTEND;VALUE=DATE:{first}", f"DTEND;VALUE=DATE:{end_day}")
        text = ics(f"UID:s\n{start}\nRRULE:{rule}\nEXDATE:20240307T093000Z").encode()
        expected = sorted(
            _start_of(o)
            for o in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(
                window.start, window.end
            )
        )
        found, errors = ics_module.records_from_ical(
            text, source_id="t", scope="x.ics", window=window
        )
        assert not errors, (rule, kind, first)
        assert sorted(r.start for r in found) == expected, (rule, kind, first)


def test_moved_and_cancelled_instances_of_an_old_series_keep_their_slot() -> None:
    """DTSTART five years back is moved to the window; overrides still find their slot."""
    window = ics_module.Window.around(NOW, timedelta(days=30), timedelta(days=60))
    series = (
        "UID:old\nDTSTART;TZID=Europe/Berlin:20190101T093000\n"
        "DTEND;TZID=Europe/Berlin:20190101T103000\nRRULE:FREQ=WEEKLY;BYDAY=TU"
    )
    moved = (
        "UID:old\nRECURRENCE-ID;TZID=Europe/Berlin:20240213T093000\n"
        "DTSTART;TZID=Europe/Berlin:20240214T150000\nDTEND;TZID=Europe/Berlin:20240214T160000"
    )
    cancelled = (
        "UID:old\nRECURRENCE-ID;TZID=Europe/Berlin:20240305T093000\nSTATUS:CANCELLED\n"
        "DTSTART;TZID=Europe/Berlin:20240305T093000\nDTEND;TZID=Europe/Berlin:20240305T103000"
    )
    text = ics(series, moved, cancelled).encode()
    expected = sorted(
        _start_of(o)
        for o in recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(
            window.start, window.end
        )
    )
    found, errors = ics_module.records_from_ical(text, source_id="t", scope="x.ics", window=window)
    assert not errors
    assert sorted(r.start for r in found) == expected
    by_slot = {r.original_start: r for r in found}
    assert by_slot[datetime(2024, 2, 13, 8, 30, tzinfo=UTC)].start == datetime(
        2024, 2, 14, 14, tzinfo=UTC
    )
    assert by_slot[datetime(2024, 3, 5, 8, 30, tzinfo=UTC)].status is EventStatus.CANCELLED


def _start_of(component: icalendar.Component) -> datetime:
    value = component["DTSTART"].dt
    if not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


# -- http feeds --------------------------------------------------------------------------


class FeedHandler(BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    body: ClassVar[bytes] = b""
    headers_out: ClassVar[dict[str, str]] = {}
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers.items()))
        etag = self.headers_out.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(self.status)
        for key, value in self.headers_out.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows what matters."""


@pytest.fixture
def feed() -> Iterator[tuple[type[FeedHandler], str]]:
    handler = type("Handler", (FeedHandler,), {"seen": [], "headers_out": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    yield handler, f"http://{host!s}:{port}"
    server.shutdown()
    server.server_close()


def test_feed_uses_etag_and_a_304_yields_nothing(feed: tuple[type[FeedHandler], str]) -> None:
    handler, base = feed
    handler.body = ics("UID:f\nDTSTART:20240305T090000Z").encode()
    handler.headers_out = {"ETag": '"v1"', "Content-Type": "text/calendar"}
    src = source(url=f"{base}/team.ics?token=s3cret", owner="Mentor@example.org")
    (page,) = sync(src)
    assert page.replaces_scopes == (f"{base}/team.ics",)  # no query string: it may hold a token
    assert [r.provider_id for r in page.records] == [f"{base}/team.ics#f#"]
    assert page.records[0].calendar_owner == "Mentor@example.org"

    assert sync(src, page.cursor) == []
    assert handler.seen[-1]["If-None-Match"] == '"v1"'

    handler.body = ics("UID:f\nDTSTART:20240306T090000Z").encode()
    handler.headers_out = {"ETag": '"v2"'}
    (changed,) = sync(src, page.cursor)
    assert changed.records[0].start == datetime(2024, 3, 6, 9, tzinfo=UTC)


def test_feed_refusing_credentials_is_an_auth_error(feed: tuple[type[FeedHandler], str]) -> None:
    handler, base = feed
    handler.status = 401
    url = base.replace("http://", "http://user:hunter2@") + "/cal.ics?key=abc"
    with pytest.raises(AuthError) as raised:
        sync(source(url=url))
    assert "hunter2" not in str(raised.value)
    assert "key=abc" not in str(raised.value)
    assert "team" in str(raised.value)


def test_feed_outage_is_transient_with_retry_after(feed: tuple[type[FeedHandler], str]) -> None:
    handler, base = feed
    handler.status = 503
    handler.headers_out = {"Retry-After": "120"}
    with pytest.raises(TransientError) as raised:
        sync(source(url=f"{base}/cal.ics"))
    assert raised.value.retry_after == 120
    assert "503" in str(raised.value)

    handler.status = 404
    handler.headers_out = {}
    with pytest.raises(TransientError) as missing:
        sync(source(url=f"{base}/cal.ics"))
    assert missing.value.retry_after is None


def test_unreachable_feed_is_transient() -> None:
    with pytest.raises(TransientError, match=r"cannot fetch http://127\.0\.0\.1:9/cal\.ics"):
        sync(source(url="http://me:pw@127.0.0.1:9/cal.ics"))


def test_broken_feed_body_does_not_wipe(feed: tuple[type[FeedHandler], str]) -> None:
    handler, base = feed
    handler.body = b"<html>maintenance</html>"
    (page,) = sync(source(url=f"{base}/cal.ics"))
    assert page.replaces_scopes == ()
    assert page.errors[0].item == f"{base}/cal.ics"

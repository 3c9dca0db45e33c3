"""Hostile event values from Google Calendar and Microsoft Graph, through the real sync
stage into the real store, on SQLite and PostgreSQL.

The faithful fakes (tests/fakes) serve each hostile event beside a valid meeting of a
rostered pair, over real HTTP(S) to the real client libraries. What a user would notice is
asserted: the sync completes and the source stays healthy, the valid meeting is stored
exactly once (a second sync changes nothing), and the hostile event is either stored
with its values cleaned (no control character in the database, ids within their
columns: connectors/base.py ``sanitise_page``) or reported as an item error naming it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from mentorpulse import stages
from mentorpulse.connectors import base, ics
from mentorpulse.connectors.base import short_text, stable_id
from mentorpulse.model import EventRecord, known_zone
from mentorpulse.storage.models import Event, MentoringSession, Source
from tests.fakes import google_api
from tests.fakes.google_api import GoogleFake, RunningFake, instance_id, rfc3339
from tests.fakes.graph_api import FakeEvent, GraphFake

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MENTOR = "mira@example.org"
MENTEE = "theo@example.org"
VALID_START = NOW - timedelta(days=3)
HOSTILE_START = NOW - timedelta(days=2)
VALID_UID = "valid-meeting"
# What must never reach a column: C0/C1 controls (NUL above all) and lone surrogates.
CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
NUL = "\x00"


@dataclass(frozen=True)
class Case:
    """One hostile event: its fields, and what the user must see of it."""

    name: str
    changes: dict[str, Any]  # the provider's JSON fields replaced in a valid event
    expect: str  # "stored": kept with its values cleaned; "reported": an item error names it
    check: Callable[[Event], None] | None = None  # more about the stored row
    event_id: str = "hostile-1"


def _no_nul_title(row: Event) -> None:
    assert row.title is not None
    assert "Mentoring" in row.title  # the keyword survives the cleaning: still a session


def _uid_hashed(row: Event) -> None:
    assert len(row.ical_uid) <= base.UID_MAX
    assert row.ical_uid == stable_id("u" * 5000, base.UID_MAX)


def _zone_fell_back(row: Event) -> None:
    assert row.zone is not None
    assert known_zone(row.zone) is not None
    assert row.start == HOSTILE_START  # the instant is UTC: the zone does not move it


def _many_people(row: Event) -> None:
    assert len(row.attendees) == base.ATTENDEES_MAX
    assert {MENTOR, MENTEE} <= {a["email"] for a in row.attendees} | {row.organizer}


def _confirmed(row: Event) -> None:
    assert row.status == "confirmed"


def _clean_people(row: Event) -> None:
    emails = {a["email"] for a in row.attendees} | {row.organizer}
    assert "eve@evil.example" in emails  # the NUL and the escape went, the address stayed
    assert {MENTOR, MENTEE} <= emails


def _clean_categories(row: Event) -> None:
    assert "Mentoring" in row.categories
    assert all(0 < len(c) <= base.CATEGORY_MAX for c in row.categories)


def _long(text: str) -> str:
    return text * (5000 // len(text))


# ------------------------------------------------------------------------------ Google


def google_body(event_id: str, start: datetime, /, **changes: Any) -> dict[str, Any]:
    """A Calendar v3 event of the pair in the mentor's calendar, as events.list has it."""
    body: dict[str, Any] = {
        "id": event_id,
        "summary": "Mentoring",
        "start": {"dateTime": rfc3339(start), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": rfc3339(start + timedelta(hours=1)), "timeZone": "Europe/Berlin"},
        "organizer": {"email": MENTOR, "self": True},
        "attendees": [
            {"email": MENTOR, "responseStatus": "accepted", "organizer": True, "self": True},
            {"email": MENTEE, "responseStatus": "accepted"},
        ],
        "sequence": 0,
        "eventType": "default",
    }
    body.update(changes)
    return body


def _google_people(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"email": MENTOR, "responseStatus": "accepted", "organizer": True, "self": True},
        {"email": MENTEE, "responseStatus": "accepted"},
        *extra,
    ]


_LATER = {"dateTime": rfc3339(HOSTILE_START + timedelta(hours=1))}
GOOGLE_CASES = [
    Case("nul-in-id", {}, "stored", event_id="hostile\x00one\x1b[31m"),
    Case("nul-in-ical-uid", {"iCalUID": "uid\x00\x01\x7f@google.com"}, "stored"),
    Case("nul-in-summary", {"summary": "Mento\x00ring\x07\x1b[2J\x9b"}, "stored", _no_nul_title),
    Case("uid-5000-chars", {"iCalUID": "u" * 5000}, "stored", _uid_hashed),
    Case("id-5000-chars", {}, "stored", event_id=_long("hostile-id-")),
    Case(
        "controls-in-attendees",
        {
            "attendees": _google_people(
                {
                    "email": "eve\x00@evil.\x1bexample",
                    "displayName": "Eve\x00\x1b]8;;http://x\x07",
                    "responseStatus": "accepted\x00",
                }
            )
        },
        "stored",
        _clean_people,
    ),
    Case(
        "5000-attendees",
        {
            "attendees": _google_people(
                *(
                    {"email": f"guest{n}@example.org", "responseStatus": "needsAction"}
                    for n in range(5000)
                )
            )
        },
        "stored",
        _many_people,
    ),
    Case(
        "malformed-datetime",
        {"start": {"dateTime": "2026-02-30T25:61:00Z", "timeZone": "Europe/Berlin"}},
        "reported",
    ),
    Case(
        "unknown-zone",
        {"start": {"dateTime": rfc3339(HOSTILE_START), "timeZone": "Not/AZone"}, "end": _LATER},
        "stored",
        _zone_fell_back,
    ),
    Case(
        "zone-200-chars",
        {"start": {"dateTime": rfc3339(HOSTILE_START), "timeZone": "Z" * 200}, "end": _LATER},
        "stored",
        _zone_fell_back,
    ),
    Case(
        "nul-in-zone",
        {"start": {"dateTime": rfc3339(HOSTILE_START), "timeZone": "Europe/Ber\x00lin"}},
        "stored",
        _zone_fell_back,
    ),
    Case("unknown-status", {"status": "exploded"}, "stored", _confirmed),
    Case("organizer-null", {"organizer": None}, "stored"),
    Case("attendee-not-an-object", {"attendees": [MENTOR, MENTEE]}, "reported"),
    Case("start-not-an-object", {"start": "2026-02-28T09:00:00Z"}, "reported"),
    Case("sequence-not-a-number", {"sequence": "many"}, "reported"),
    Case("sequence-huge", {"sequence": 10**30}, "stored"),
]


@pytest.fixture
def google() -> Iterator[RunningFake]:
    fake = GoogleFake()
    fake.add_user(MENTOR)
    fake.add_user(MENTEE)
    yield from google_api.serve(fake)


def google_config(running: RunningFake, tmp_path: Path, database_url: str) -> Path:
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(running.service_account))
    source = {
        "id": "gw",
        "kind": "google",
        "users": [MENTOR, MENTEE],
        "service_account_key": key.name,
        "api_root": running.url,
    }
    return write_config(tmp_path, database_url, source)


def put_valid_google(fake: GoogleFake) -> None:
    for calendar in (MENTOR, MENTEE):
        fake.put_event(
            calendar, google_body(VALID_UID, VALID_START, iCalUID=f"{VALID_UID}@google.com")
        )


@pytest.mark.parametrize("case", GOOGLE_CASES, ids=lambda c: c.name)
def test_google_hostile_value(
    case: Case, google: RunningFake, tmp_path: Path, database_url: str
) -> None:
    put_valid_google(google.fake)
    google.fake.put_event(MENTOR, google_body(case.event_id, HOSTILE_START, **case.changes))
    config = google_config(google, tmp_path, database_url)
    outcome = run_twice(config)
    outcome.assert_valid_meeting_once()
    outcome.assert_accounted_for(case, f"{MENTOR}/{case.event_id}")


# ------------------------------------------------------------------------------ Graph


@dataclass
class RawEvent(FakeEvent):
    """A Graph event whose JSON fields are replaced as the test says (``raw``)."""

    raw: dict[str, Any] = field(default_factory=dict)

    def full(self, zone: str | None = None) -> dict[str, Any]:
        return {**super().full(zone), **self.raw}


def graph_event(event_id: str, start: datetime, uid: str, /, **raw: Any) -> RawEvent:
    """The pair's meeting in a mailbox; ``raw`` replaces fields of its JSON as served."""
    return RawEvent(
        id=event_id,
        ical_uid=uid,
        subject="Mentoring",
        start=start,
        end=start + timedelta(hours=1),
        organizer=MENTOR,
        attendees=[(MENTEE, "required", "accepted")],
        raw=raw,
    )


def _graph_people(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "type": "required",
            "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
            "emailAddress": {"name": MENTEE, "address": MENTEE},
        },
        *extra,
    ]


def _graph_zone(name: str) -> dict[str, Any]:
    """Times in a zone nobody knows: read in the mailbox's zone (the fake's is Berlin's)."""
    local = HOSTILE_START.astimezone(ZoneInfo("Europe/Berlin"))
    return {
        "start": {"dateTime": _local(local), "timeZone": name},
        "end": {"dateTime": _local(local + timedelta(hours=1)), "timeZone": name},
        "originalStartTimeZone": name,
        "originalEndTimeZone": name,
    }


def _local(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.0000000")


GRAPH_CASES = [
    Case("nul-in-id", {}, "stored", event_id="AAMk\x00one\x1b[31m="),
    Case("nul-in-ical-uid", {"iCalUId": "uid\x00\x01\x7f"}, "stored"),
    Case("nul-in-subject", {"subject": "Mento\x00ring\x07\x1b[2J\x9b"}, "stored", _no_nul_title),
    Case(
        "nul-in-categories",
        {"categories": ["Ment\x00oring", "\x01\x02", "x" * 500, *(f"c{n}" for n in range(200))]},
        "stored",
        _clean_categories,
    ),
    Case("uid-5000-chars", {"iCalUId": "u" * 5000}, "stored", _uid_hashed),
    Case("id-5000-chars", {}, "stored", event_id=_long("AAMkAGI2-")),
    Case(
        "controls-in-attendees",
        {
            "attendees": _graph_people(
                {
                    "type": "required\x00",
                    "status": {"response": "accepted\x00"},
                    "emailAddress": {
                        "name": "Eve\x00\x1b]8;;http://x\x07",
                        "address": "eve\x00@evil.\x1bexample",
                    },
                }
            )
        },
        "stored",
        _clean_people,
    ),
    Case(
        "5000-attendees",
        {
            "attendees": _graph_people(
                *(
                    {
                        "type": "required",
                        "status": {"response": "none"},
                        "emailAddress": {"name": f"Guest {n}", "address": f"guest{n}@example.org"},
                    }
                    for n in range(5000)
                )
            )
        },
        "stored",
        _many_people,
    ),
    Case(
        "malformed-datetime",
        {"start": {"dateTime": "2026-02-30T25:61:00.0000000", "timeZone": "UTC"}},
        "reported",
    ),
    Case("unknown-zone", _graph_zone("Not/AZone"), "stored", _zone_fell_back),
    Case("zone-200-chars", _graph_zone("Z" * 200), "stored", _zone_fell_back),
    Case("nul-in-zone", _graph_zone("W. Europe\x00 Standard Time"), "stored", _zone_fell_back),
    Case(
        "unknown-status",
        {"showAs": "exploded", "responseStatus": {"response": "exploded"}, "type": "weird"},
        "stored",
        _confirmed,
    ),
    Case("response-status-not-an-object", {"responseStatus": "accepted"}, "reported"),
    Case(
        "attendee-status-not-an-object",
        {
            "attendees": _graph_people(
                {
                    "type": "required",
                    "status": "accepted",
                    "emailAddress": {"address": "x@example.org"},
                }
            )
        },
        "reported",
    ),
    Case("start-not-an-object", {"start": "2026-02-28T09:00:00Z"}, "reported"),
    Case("categories-not-a-list", {"categories": 42}, "reported"),
]


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphFake]:
    # requests (under msal) would otherwise trust only this bundle, not the test CA.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("MP_GRAPH_SECRET", "s3cr3t-Graph-Client-Secret~value")
    fake = GraphFake(tmp_path)
    fake.mailbox(MENTOR)
    fake.mailbox(MENTEE)
    yield from fake.serve()


def graph_config(fake: GraphFake, tmp_path: Path, database_url: str) -> Path:
    source = {
        "id": "m365",
        "kind": "microsoft",
        "tenant_id": fake.tenant,
        "client_id": fake.client_id,
        "client_secret": "${MP_GRAPH_SECRET}",
        "mailboxes": [MENTOR, MENTEE],
        "authority_host": fake.url,
        "graph_url": f"{fake.url}/v1.0",
        "ca_bundle": str(fake.ca_path),
    }
    return write_config(tmp_path, database_url, source)


def put_valid_graph(fake: GraphFake) -> None:
    for mailbox in (MENTOR, MENTEE):
        fake.put(mailbox, graph_event(f"{VALID_UID}-{mailbox}", VALID_START, VALID_UID))


@pytest.mark.parametrize("case", GRAPH_CASES, ids=lambda c: c.name)
def test_graph_hostile_value(
    case: Case, graph: GraphFake, tmp_path: Path, database_url: str
) -> None:
    put_valid_graph(graph)
    graph.put(MENTOR, graph_event(case.event_id, HOSTILE_START, "hostile-uid", **case.changes))
    outcome = run_twice(graph_config(graph, tmp_path, database_url))
    outcome.assert_valid_meeting_once()
    outcome.assert_accounted_for(case, f"{MENTOR}/{case.event_id}")


# ------------------------------------------------------------------------------ shared


def write_config(tmp_path: Path, database_url: str, source: dict[str, Any]) -> Path:
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2025-09-01\n"
    )
    config = {
        "database": database_url,
        "timezone": "Europe/Berlin",
        "privacy": {"store_titles": True},  # titles reach the database too
        "sources": [{**source, "window_past": "30d", "window_future": "30d"}],
        "roster": {"path": "roster.csv"},
        # A keyword, so a meeting of thousands is still a candidate (no participant cap).
        "programs": [
            {"id": "eng", "cadence": {"every": "14d"}, "match": {"title_keywords": ["mentoring"]}}
        ],
    }
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@dataclass
class Outcome:
    first: stages.SourceResult
    second: stages.SourceResult
    rows: list[Event]
    count_after_first: int
    source: Source
    valid_sessions: int

    def assert_valid_meeting_once(self) -> None:
        assert self.first.ok, self.first.error
        assert self.second.ok, self.second.error
        assert self.source.healthy
        assert self.source.last_error is None
        valid = [r for r in self.rows if r.ical_uid.startswith(VALID_UID)]
        assert sorted(r.calendar_owner or "" for r in valid) == [MENTOR, MENTEE]  # one a copy
        assert len(self.rows) == self.count_after_first  # the second sync doubled nothing
        assert self.second.stored == 0
        assert self.valid_sessions == 1  # the two copies are one session
        assert_clean(self.rows, self.source)

    def assert_accounted_for(self, case: Case, provider_id: str) -> None:
        """Stored under its cleaned id, or named by an item error: never silently lost."""
        stored = [r for r in self.rows if r.provider_id == stable_id(provider_id, base.ID_MAX)]
        named = short_text(provider_id, base.ITEM_MAX)
        reported = [e for e in self.source.item_errors or [] if e["item"] == named]
        if case.expect == "stored":
            assert len(stored) == 1, (self.source.item_errors, [r.provider_id for r in self.rows])
            if case.check is not None:
                case.check(stored[0])
        else:
            assert not stored
            assert reported, self.source.item_errors
            assert all(len(e["message"]) <= base.MESSAGE_MAX for e in reported)
        assert self.first.item_errors == len(self.source.item_errors or [])

    def assert_flood_rejected(self, series_id: str) -> None:
        """A series recurring every few minutes is no meeting of two people: as for a
        calendar file (connectors/ics.py ``MAX_PER_DAY``), none of it is read, and one
        item error names it."""
        assert base.SERIES_PER_DAY_MAX == ics.MAX_PER_DAY
        assert not [r for r in self.rows if r.series_id == series_id]
        named = [e for e in self.source.item_errors or [] if e["item"] == f"{MENTOR}/{series_id}"]
        assert len(named) == 1, self.source.item_errors
        assert "more than 4 times a day" in named[0]["message"]


def assert_clean(rows: list[Event], source: Source) -> None:
    """No control character in any stored value, every id within its column."""
    for row in rows:
        texts = [
            row.provider_id,
            row.ical_uid,
            row.series_id,
            row.zone,
            row.organizer,
            row.calendar_owner,
            row.title,
            row.conference_id,
            row.etag,
            json.dumps(row.attendees, ensure_ascii=False),
            json.dumps(row.categories, ensure_ascii=False),
        ]
        for text in texts:
            assert text is None or not CONTROL.search(text), repr(text)[:200]
        assert len(row.provider_id) <= base.ID_MAX
        assert len(row.ical_uid) <= base.UID_MAX
        assert row.zone is None or len(row.zone) <= base.ZONE_MAX
        assert len(row.attendees) <= base.ATTENDEES_MAX
    errors = json.dumps(source.item_errors, ensure_ascii=False)
    assert not CONTROL.search(errors)
    assert len(errors) < 50 * (base.ITEM_MAX + base.MESSAGE_MAX)


def run_twice(config: Path, between: Callable[[], None] | None = None) -> Outcome:
    """The real sync stage twice (a first and an incremental sync, after ``between``
    changed the calendar), then the sessions."""
    ctx = stages.Context.open(config, clock=lambda: NOW)
    try:
        [first] = stages.sync_sources(ctx)
        with ctx.db() as db:
            count = db.scalar(select(func.count()).select_from(Event)) or 0
        if between is not None:
            between()
        [second] = stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            rows = list(db.scalars(select(Event)))
            source = db.scalars(select(Source)).one()
            db.expunge_all()
            valid_sessions = (
                db.scalar(
                    select(func.count())
                    .select_from(MentoringSession)
                    .where(MentoringSession.key.contains(VALID_UID))
                )
                or 0
            )
    finally:
        ctx.engine.dispose()
    return Outcome(first, second, rows, count, source, valid_sessions)


# ------------------------------------------------------------------------------ a flood

FLOOD = 5000  # instances the provider expands: every 15 minutes for 52 days
FLOOD_EVERY = timedelta(minutes=15)
FLOOD_FIRST = NOW - timedelta(days=29)


def flood_google(fake: GoogleFake) -> str:
    fake.series(
        [MENTOR],
        series_id="flood",
        first=FLOOD_FIRST,
        count=FLOOD,
        every=FLOOD_EVERY,
        minutes=15,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
    )
    return "flood"


def flood_graph(fake: GraphFake) -> str:
    master = fake.next_id()
    for n in range(FLOOD):
        start = FLOOD_FIRST + FLOOD_EVERY * n
        event = graph_event(fake.next_id(), start, "flood-uid")
        event.end = start + timedelta(minutes=15)
        event.type = "occurrence"
        event.series_master_id = master
        event.original_start = start
        fake.put(MENTOR, event)
    return master


@pytest.mark.parametrize("provider", ["google", "graph"])
def test_a_series_every_15_minutes_is_rejected_like_in_a_calendar_file(
    provider: str, tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> None:
    between: Callable[[], None]
    if provider == "google":
        running: RunningFake = request.getfixturevalue("google")
        put_valid_google(running.fake)
        series = flood_google(running.fake)
        config = google_config(running, tmp_path, database_url)
        moved = instance_id(series, FLOOD_FIRST + FLOOD_EVERY * 100)

        def between() -> None:  # one instance edited: the next sync leaves it out too
            running.fake.update(MENTOR, moved, summary="Mentoring (moved)")
    else:
        fake: GraphFake = request.getfixturevalue("graph")
        put_valid_graph(fake)
        series = flood_graph(fake)
        config = graph_config(fake, tmp_path, database_url)
        one = next(e for e in fake.mailboxes[MENTOR].events.values() if e.series_master_id)

        def between() -> None:
            one.subject = "Mentoring (moved)"
            fake.put(MENTOR, one)

    outcome = run_twice(config, between)
    outcome.assert_valid_meeting_once()
    outcome.assert_flood_rejected(series)


def _instance(series: str, start: datetime, owner: str = MENTOR) -> EventRecord:
    return EventRecord(
        source_id="s",
        provider_id=f"{owner}/{series}_{start:%Y%m%dT%H%M}",
        ical_uid=series,
        start=start,
        end=start + timedelta(minutes=30),
        series_id=series,
        calendar_owner=owner,
    )


def test_a_series_rejected_on_a_later_page_takes_back_what_was_yielded() -> None:
    bound = base.SeriesBound(None)
    day = datetime(2026, 3, 2, 8, tzinfo=UTC)
    first = [_instance("s1", day + timedelta(hours=n)) for n in range(4)]
    weekly = [_instance("w", day + timedelta(weeks=n)) for n in range(3)]
    kept, deleted, errors = bound.apply([*first, *weekly])
    assert kept == [*first, *weekly]  # four a day is still a meeting series
    assert (deleted, errors) == ([], [])

    fifth = _instance("s1", day + timedelta(hours=5))
    other = _instance("s1", day, owner=MENTEE)  # the mentee's copy is counted on its own
    kept, deleted, errors = bound.apply([fifth, other])
    assert kept == [other]
    assert sorted(deleted) == sorted(r.provider_id for r in [*first, fifth])
    assert [e.item for e in errors] == [f"{MENTOR}/s1"]
    # Remembered in the cursor: a later sync leaves the series out from its first instance.
    later = base.SeriesBound(bound.stamp())
    kept, deleted, errors = later.apply([_instance("s1", day + timedelta(days=3)), weekly[0]])
    assert kept == [weekly[0]]
    assert errors == []

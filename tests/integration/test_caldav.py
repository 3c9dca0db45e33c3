"""The CalDAV connector against two real servers, Radicale and Xandikos.

Every test runs on both servers, and the sync tests also with both sync methods: RFC 6578
``sync-collection`` tokens and the CTag/ETag fallback. Calendars are filled over CalDAV
itself (PUT of raw iCalendar), then read back through :class:`CaldavConnector`; the pages
are asserted as the connector yields them; what the sync stage and the store make of them
is the contract suite's (tests/connectors/test_caldav.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from caldav.collection import Calendar
from caldav.davclient import DAVClient
from sqlalchemy import func, select
from structlog.testing import capture_logs

from mentorpulse import stages
from mentorpulse.config.schema import CaldavSource
from mentorpulse.connectors import caldav as caldav_module
from mentorpulse.connectors.base import AuthError, CursorExpired, TransientError
from mentorpulse.connectors.caldav import CaldavConnector
from mentorpulse.model import EventRecord, ItemError, SyncPage
from mentorpulse.storage.models import Event, Evidence, MentoringSession, Source
from tests.loaded_modules import loaded_by
from tests.servers import caldav as servers
from tests.servers.caldav import new_calendar, put, remove
from tests.servers.ports import free_port

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
MENTOR = "ana@example.org"
MENTEE = "ben@example.org"


@pytest.fixture(scope="module", params=servers.SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.CaldavServer]:
    kind = str(request.param)
    with servers.start(kind, tmp_path_factory.mktemp(kind)) as running:
        yield running


class CountingClient(DAVClient):
    """The real client, counting the HTTP requests the connector makes."""

    requests = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.requests += 1
        return super().request(*args, **kwargs)


def client_for(server: servers.CaldavServer, user: str | None = None) -> CountingClient:
    return CountingClient(
        url=server.url,
        username=user or server.username,
        password=server.password,
        timeout=30,
        auth_type="basic",
    )


def source(
    server: servers.CaldavServer, calendars: list[dict[str, str]], **extra: object
) -> CaldavSource:
    return CaldavSource.model_validate(
        {
            "id": "dav",
            "kind": "caldav",
            "url": server.url,
            "username": server.username,
            "password": server.password,
            "calendars": calendars,
            "owner": MENTOR,
            "window_past": "60d",
            "window_future": "60d",
            **extra,
        }
    )


def listed(
    connector: CaldavConnector, cursor: Mapping[str, object] | None = None
) -> list[SyncPage]:
    """The pages of one listing, as the connector yields them (the sync stage stores them:
    tests/connectors/ runs the connector through it)."""
    return list(connector.sync(cursor))


def records(pages: list[SyncPage]) -> list[EventRecord]:
    found = [r for page in pages for r in page.records]
    return sorted(found, key=lambda r: (r.start, r.provider_id))


def cursor_of(pages: list[SyncPage]) -> Mapping[str, object] | None:
    """The cursor the stage would hold after storing ``pages``."""
    cursors = [page.cursor for page in pages if page.cursor is not None]
    return cursors[-1] if cursors else None


def item_errors(pages: list[SyncPage]) -> list[ItemError]:
    return [e for page in pages for e in page.errors]


def ics(*events: str) -> str:
    return (
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//mentorpulse tests//EN\n{}END:VCALENDAR\n".format(
            "".join(events)
        )
    )


def vevent(uid: str, start: str, *lines: str, minutes: int = 60) -> str:
    begin = datetime.strptime(start, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    end = (begin + timedelta(minutes=minutes)).strftime("%Y%m%dT%H%M%SZ")
    extra = "".join(f"{line}\n" for line in lines)
    return (
        f"BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20261101T000000Z\nDTSTART:{start}\nDTEND:{end}\n"
        f"SUMMARY:Mentoring 1:1\nORGANIZER:mailto:{MENTOR}\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTOR}\n{extra}END:VEVENT\n"
    )


WEEKLY = "RRULE:FREQ=WEEKLY;COUNT=4"
SERIES_START = "20261116T100000Z"  # Mondays 16, 23, 30 Nov and 7 Dec 2026
MENTEE_ACCEPTED = f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTEE}"
MENTEE_PENDING = f"ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:{MENTEE}"


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


METHODS = ["sync-token", "etag"]


@pytest.mark.parametrize("method", METHODS)
def test_an_unchanged_calendar_costs_one_request(server: servers.CaldavServer, method: str) -> None:
    calendar = new_calendar(server)
    put(calendar, "once.ics", ics(vevent("once", "20261118T150000Z", MENTEE_ACCEPTED)))
    config = source(server, [{"url": str(calendar.url)}], sync=method)
    first = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
    assert len(records(first)) == 1

    client = client_for(server)
    assert listed(CaldavConnector(config, now=NOW, client=client), cursor_of(first)) == []
    assert client.requests == 1

    # A day later the window has moved: every object is expanded again, nothing is lost.
    later = CaldavConnector(config, now=NOW + timedelta(days=1), client=client_for(server))
    moved_on = listed(later, cursor_of(first))
    assert [r.ical_uid for r in records(moved_on)] == ["once"]
    assert [p.replaces_scopes for p in moved_on] == [p.replaces_scopes for p in first]


def test_a_server_without_sync_collection_is_compared_by_ctag_and_etags(
    tmp_path: Path,
) -> None:
    with servers.xandikos(tmp_path, refuse_sync_collection=True) as server:
        calendar = new_calendar(server)
        put(calendar, "once.ics", ics(vevent("once", "20261118T150000Z", MENTEE_ACCEPTED)))
        put(calendar, "other.ics", ics(vevent("other", "20261119T150000Z", MENTEE_ACCEPTED)))
        config = source(server, [{"url": str(calendar.url)}])  # sync: auto
        first = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
        assert [r.ical_uid for r in records(first)] == ["once", "other"]
        cursor = cursor_of(first)
        assert cursor is not None
        entry: Any = next(iter(dict(cursor["calendars"]).values()))
        assert "sync_token" not in entry
        assert set(entry["etags"]) == {
            f"{calendar.url.path}once.ics",
            f"{calendar.url.path}other.ics",
        }

        # Unchanged: the CTag alone says so. Changed: only the changed object is fetched.
        client = client_for(server)
        assert listed(CaldavConnector(config, now=NOW, client=client), cursor) == []
        assert client.requests == 1
        put(calendar, "once.ics", ics(vevent("once", "20261118T160000Z", MENTEE_ACCEPTED)))
        remove(calendar, "other.ics")
        changed = listed(CaldavConnector(config, now=NOW, client=client_for(server)), cursor)
        assert [r.start for r in records(changed)] == [utc("20261118T160000Z")]
        # One page: the deleted object (its scope replaced by nothing), the changed one,
        # and the cursor.
        (page,) = changed
        assert list(zip(page.replaces_scopes, page.scope_sizes, strict=True)) == [
            (f"{calendar.url.path}other.ics", 0),
            (f"{calendar.url.path}once.ics", 1),
        ]
        assert page.cursor is not None


def test_a_rejected_sync_token_raises_cursor_expired_and_a_full_sync_restores_all(
    server: servers.CaldavServer,
) -> None:
    calendar = new_calendar(server)
    put(calendar, "series.ics", ics(vevent("series", SERIES_START, MENTEE_ACCEPTED, WEEKLY)))
    config = source(server, [{"url": str(calendar.url)}], sync="sync-token")
    first = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
    before = {r.provider_id for r in records(first)}
    assert len(before) == 4

    stale: Any = dict(cursor_of(first) or {})
    key = next(iter(stale["calendars"]))
    stale["calendars"] = {key: {**stale["calendars"][key], "sync_token": "urn:stale-token-1"}}
    with pytest.raises(CursorExpired) as raised:
        listed(CaldavConnector(config, now=NOW, client=client_for(server)), stale)
    assert "sync-token" in raised.value.message

    # The caller drops the cursor and resyncs: the same occurrences, nothing duplicated.
    fresh = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
    assert {r.provider_id for r in records(fresh)} == before


def test_wrong_password_is_an_auth_error_that_never_shows_the_password(
    server: servers.CaldavServer,
) -> None:
    wrong = "hunter2-not-the-password"
    config = source(server, [], password=wrong)
    with pytest.raises(AuthError) as raised, capture_logs() as logs:
        list(CaldavConnector(config, now=NOW).sync(None))
    message = str(raised.value)
    assert "401" in message
    assert server.username in message
    assert wrong not in message
    assert wrong not in repr(config)
    assert all(wrong not in repr(entry) for entry in logs)


def test_a_calendar_the_account_may_not_read_is_an_auth_error(
    server: servers.CaldavServer,
) -> None:
    if not server.people:
        pytest.skip(f"{server.kind} has no per-user access control")
    private = new_calendar(server, user=MENTOR)
    config = source(server, [{"url": str(private.url)}], username=MENTEE)
    with pytest.raises(AuthError) as raised:
        list(CaldavConnector(config, now=NOW).sync(None))
    assert f"refused user '{MENTEE}' (HTTP 403)" in raised.value.message
    assert "may read the calendar" in raised.value.message


def test_unreachable_server_is_transient() -> None:
    config = CaldavSource.model_validate(
        {
            "id": "dav",
            "kind": "caldav",
            "url": f"http://127.0.0.1:{free_port()}/",
            "username": "svc",
            "password": "secret-value",
            "timeout": "5s",
        }
    )
    with pytest.raises(TransientError) as raised:
        list(CaldavConnector(config, now=NOW).sync(None))
    assert "cannot reach http://127.0.0.1" in raised.value.message
    assert "secret-value" not in str(raised.value)


def test_server_errors_are_transient() -> None:
    with servers.failing(503) as url:
        config = source(servers.CaldavServer("failing", url, url), [])
        with pytest.raises(TransientError) as raised:
            list(CaldavConnector(config, now=NOW).sync(None))
    assert "503" in raised.value.message
    assert raised.value.retry_after == 7  # the server's Retry-After, for the backoff


@pytest.mark.parametrize("status", [200, 302])
def test_a_url_that_is_no_caldav_server_is_a_clear_transient_error(status: int) -> None:
    with servers.failing(status) as url:
        config = source(servers.CaldavServer("web", url, url), [])
        with pytest.raises(TransientError) as raised:
            list(CaldavConnector(config, now=NOW).sync(None))
    assert raised.value.message.startswith(f"{url} did not answer as a CalDAV server")
    assert raised.value.message.endswith("check the url")


def test_a_hung_server_times_out_as_transient() -> None:
    with servers.silent() as url:
        config = source(servers.CaldavServer("silent", url, url), [], timeout="1s")
        with pytest.raises(TransientError) as raised:
            list(CaldavConnector(config, now=NOW).sync(None))
    assert raised.value.message.startswith(f"{url} timed out while finding the calendars")


def test_calendars_are_discovered_or_chosen_by_display_name(
    server: servers.CaldavServer,
) -> None:
    mentoring = new_calendar(server, f"Mentoring {uuid.uuid4().hex[:6]}")
    put(mentoring, "once.ics", ics(vevent("once", "20261118T150000Z", MENTEE_ACCEPTED)))
    name = mentoring.get_display_name()
    assert isinstance(name, str)

    chosen = source(server, [{"name": name, "owner": MENTEE}])
    pages = listed(CaldavConnector(chosen, now=NOW, client=client_for(server)))
    assert [(r.ical_uid, r.calendar_owner) for r in records(pages)] == [("once", MENTEE)]

    twice = source(server, [{"name": name}, {"url": str(mentoring.url)}])
    pages = listed(CaldavConnector(twice, now=NOW, client=client_for(server)))
    assert [r.ical_uid for r in records(pages)] == ["once"]

    everything = listed(CaldavConnector(source(server, []), now=NOW, client=client_for(server)))
    assert "once" in {r.ical_uid for r in records(everything)}

    missing = source(server, [{"name": "No such calendar"}])
    with pytest.raises(TransientError) as raised:
        list(CaldavConnector(missing, now=NOW, client=client_for(server)).sync(None))
    assert "no calendar named 'No such calendar'" in raised.value.message


def test_a_calendar_no_longer_listed_is_dropped_from_the_cursor_but_deletes_nothing(
    server: servers.CaldavServer,
) -> None:
    kept, dropped = new_calendar(server), new_calendar(server)
    put(kept, "a.ics", ics(vevent("a", "20261118T150000Z", MENTEE_ACCEPTED)))
    put(dropped, "b.ics", ics(vevent("b", "20261119T150000Z", MENTEE_ACCEPTED)))
    both = source(server, [{"url": str(kept.url)}, {"url": str(dropped.url)}])
    first = listed(CaldavConnector(both, now=NOW, client=client_for(server)))
    assert [r.ical_uid for r in records(first)] == ["a", "b"]

    one = source(server, [{"url": str(kept.url)}])
    with capture_logs() as logs:
        pages = listed(CaldavConnector(one, now=NOW, client=client_for(server)), cursor_of(first))
    assert not [p for p in pages if p.replaces_scopes or p.deleted]  # nothing let go of
    cursor = cursor_of(pages)
    assert cursor is not None
    assert list(dict(cursor["calendars"])) == [unquote(kept.url.path)]
    assert [e["calendar"] for e in logs if e["event"] == "caldav_calendar_gone"] == [
        unquote(dropped.url.path)
    ]


BAD_OBJECTS = {
    "garbage.ics": "this is not iCalendar at all\n",
    "no-dtstart.ics": ics(
        "BEGIN:VEVENT\nUID:no-dtstart\nDTSTAMP:20261101T000000Z\nSUMMARY:x\nEND:VEVENT\n"
    ),
    "unknown-tzid.ics": ics(
        "BEGIN:VEVENT\nUID:unknown-tzid\nDTSTAMP:20261101T000000Z\n"
        "DTSTART;TZID=Mars/Olympus_Mons:20261119T100000\n"
        "DTEND;TZID=Mars/Olympus_Mons:20261119T110000\nSUMMARY:x\nEND:VEVENT\n"
    ),
}


def test_bad_objects_are_skipped_one_by_one(server: servers.CaldavServer) -> None:
    calendar = new_calendar(server)
    put(calendar, "good.ics", ics(vevent("good", "20261118T150000Z", MENTEE_ACCEPTED)))
    accepted = [name for name, body in BAD_OBJECTS.items() if put(calendar, name, body) < 300]
    config = source(server, [{"url": str(calendar.url)}])
    pages = listed(CaldavConnector(config, now=NOW, client=client_for(server)))

    assert [r.ical_uid for r in records(pages)] == ["good"]
    failed = {error.item.split(":")[0].rsplit("/", 1)[-1] for error in item_errors(pages)}
    assert failed == set(accepted)


def test_every_realworld_file_the_server_accepts_is_read_or_reported(
    server: servers.CaldavServer, realworld_ics: Path
) -> None:
    calendar = new_calendar(server)
    files = sorted(realworld_ics.glob("*.ics"))
    for path in files:
        put(calendar, path.name, path.read_bytes())
    # What the server holds, whatever it answered (Xandikos stores some, then fails).
    accepted = {unquote(str(o.url)).rsplit("/", 1)[-1] for o in calendar.get_objects()}
    assert 20 <= len(accepted) < len(files), f"{server.kind} holds {sorted(accepted)}"

    config = source(server, [{"url": str(calendar.url)}], window_past="9000d")
    pages = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
    assert records(pages), "real-world files gave no occurrence at all"
    read = {s.rsplit("/", 1)[-1] for p in pages for s in p.record_scopes() if s is not None}
    reported = {e.item.split(":")[0].rsplit("/", 1)[-1] for e in item_errors(pages)}
    assert read | reported <= accepted
    assert all(r.start.tzinfo is UTC or r.start.utcoffset() == timedelta(0) for r in records(pages))
    # Nothing changed on the server: nothing to read again.
    assert (
        listed(CaldavConnector(config, now=NOW, client=client_for(server)), cursor_of(pages)) == []
    )


def test_a_long_first_sync_logs_its_progress(
    server: servers.CaldavServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calendar = new_calendar(server)
    for n in range(5):
        put(calendar, f"e{n}.ics", ics(vevent(f"e{n}", f"2026111{n}T100000Z", MENTEE_ACCEPTED)))
    monkeypatch.setattr(caldav_module, "MULTIGET_BATCH", 2)
    monkeypatch.setattr(caldav_module, "PROGRESS_EVERY", 0.0)
    config = source(server, [{"url": str(calendar.url)}])
    with capture_logs() as logs:
        pages = listed(CaldavConnector(config, now=NOW, client=client_for(server)))
    assert len(records(pages)) == 5
    progress = [e for e in logs if e["event"] == "caldav_sync_progress"]
    assert [(e["done"], e["total"]) for e in progress] == [(2, 5), (4, 5)]


def write_config(
    folder: Path, server: servers.CaldavServer, database_url: str, calendars: list[Calendar]
) -> Path:
    (folder / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2026-09-01\n"
    )
    config = {
        "database": database_url,
        "sources": [
            {
                "id": "dav",
                "kind": "caldav",
                "url": server.url,
                "username": server.username,
                "password": "${MP_TEST_CALDAV_PASSWORD}",
                "calendars": [
                    {"url": str(calendar.url), "owner": owner}
                    for calendar, owner in zip(calendars, (MENTOR, MENTEE), strict=False)
                ],
            }
        ],
        "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
    }
    path = folder / "mentorpulse.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_pair_whose_two_calendars_hold_one_meeting_has_one_session_with_both_rsvps(
    server: servers.CaldavServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On Radicale each person has their own account and the source's account reads their
    # calendars by delegation; Xandikos has one principal, holding both calendars.
    mentor_calendar = new_calendar(server, user=MENTOR if server.people else None)
    mentee_calendar = new_calendar(server, user=MENTEE if server.people else None)
    # The organizer's copy has not heard back from the mentee; the mentee's own copy has.
    put(mentor_calendar, "meet.ics", ics(vevent("meet", "20261118T150000Z", MENTEE_PENDING)))
    put(mentee_calendar, "meet.ics", ics(vevent("meet", "20261118T150000Z", MENTEE_ACCEPTED)))
    monkeypatch.setenv("MP_TEST_CALDAV_PASSWORD", server.password)
    config_path = write_config(tmp_path, server, database_url, [mentor_calendar, mentee_calendar])
    ctx = stages.Context.open(config_path, clock=lambda: NOW)

    for _ in range(2):  # a second round changes nothing
        [result] = stages.sync_sources(ctx)
        assert result.ok, result.error
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            sessions = db.scalars(select(MentoringSession)).all()
            assert len(sessions) == 1
            evidence = db.scalars(
                select(Evidence).where(Evidence.session_id == sessions[0].id)
            ).all()
            assert db.scalar(select(func.count()).select_from(Event)) == 2
        assert sessions[0].start == utc("20261118T150000Z")
        assert sessions[0].outcome == "presumed_held"
        assert {(e.kind, e.party) for e in evidence} >= {
            ("accepted", MENTOR),
            ("accepted", MENTEE),
        }
    ctx.engine.dispose()


def test_a_sync_of_an_unchanged_calendar_loads_no_caldav_library_nor_parser(
    server: servers.CaldavServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``sync --once`` asks an unchanged calendar one REPORT through our own client: the
    caldav library (and its niquests), the iCalendar parser and the rule kinds stay
    unloaded. The first sync, which reads the bodies, loads the parser."""
    calendar = new_calendar(server)
    put(calendar, "meet.ics", ics(vevent("meet", "20261118T150000Z", MENTEE_ACCEPTED)))
    monkeypatch.setenv("MP_TEST_CALDAV_PASSWORD", server.password)
    command = [
        "sync",
        "--once",
        "--config",
        str(write_config(tmp_path, server, database_url, [calendar])),
    ]
    unused = (
        "caldav",
        "niquests",
        "icalendar",
        "recurring_ical_events",
        "alembic",
        "mentorpulse.rules.kinds",
        "rich.progress",
    )
    assert loaded_by(command, ("icalendar",)) == (0, ["icalendar"])  # the first sync
    assert loaded_by(command, unused) == (0, [])


def test_wrong_password_marks_the_source_unhealthy_with_a_clear_message(
    server: servers.CaldavServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = "not-the-password-4711"
    monkeypatch.setenv("MP_TEST_CALDAV_PASSWORD", wrong)
    config_path = write_config(tmp_path, server, database_url, [])
    ctx = stages.Context.open(config_path, clock=lambda: NOW)
    with capture_logs() as logs:
        [result] = stages.sync_sources(ctx)
    assert not result.ok
    with ctx.db() as db:
        stored = db.get_one(Source, "dav")
        assert not stored.healthy
        assert stored.last_error is not None
        assert "refused user 'svc' (HTTP 401)" in stored.last_error
        assert wrong not in stored.last_error
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["source_auth_failed"]
    assert all(wrong not in repr(entry) for entry in logs)
    ctx.engine.dispose()

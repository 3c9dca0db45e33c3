"""The connector contract for CalDAV, on two real servers: Radicale and Xandikos.

Calendars are written over CalDAV itself (PUT of raw iCalendar, one object per meeting),
the mentor's and the mentee's: on Radicale each in its owner's own home, read by the
source's account by delegation; Xandikos has one principal, holding both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session as Db
from structlog.testing import capture_logs

from mentorpulse.connectors.caldav import CaldavConnector
from mentorpulse.model import Response
from mentorpulse.storage.models import Event, SyncShard
from tests.connectors.contract import (
    ACCEPTED,
    CATCH_UP,
    KICKOFF,
    MENTEE,
    MENTOR,
    SOURCE,
    ConnectorContract,
    Harness,
    LiveSource,
)
from tests.connectors.ical import Meetings
from tests.servers import caldav as servers
from tests.servers.caldav import new_calendar, put, remove

PASSWORD_VARIABLE = "MP_CONTRACT_CALDAV_PASSWORD"
WRONG_PASSWORD_VARIABLE = "MP_CONTRACT_CALDAV_WRONG_PASSWORD"


class LiveCaldav(LiveSource):
    """The mentor's and the mentee's calendar on one server; each calendar's cursor comes
    with its last page, so a listing of the two has a page with a cursor mid-way."""

    objects_per_page = 2  # four meetings a calendar: two grouped pages each

    def __init__(
        self, server: servers.CaldavServer, monkeypatch: pytest.MonkeyPatch, method: str = "auto"
    ) -> None:
        self.server = server
        self.method = method
        self.calendars = [
            (new_calendar(server, user=person if server.people else None), person)
            for person in (MENTOR, MENTEE)
        ]
        self.meetings = Meetings()
        self.password_variable = PASSWORD_VARIABLE
        monkeypatch.setenv(PASSWORD_VARIABLE, server.password)
        monkeypatch.setenv(WRONG_PASSWORD_VARIABLE, "not-the-password-4711")

    @property
    def connector_class(self) -> type:
        return CaldavConnector

    def source(self) -> dict[str, Any]:
        return {
            "id": SOURCE,
            "kind": "caldav",
            "url": self.server.url,
            "username": self.server.username,
            "password": f"${{{self.password_variable}}}",
            "sync": self.method,
            "calendars": [
                {"url": str(calendar.url), "owner": owner} for calendar, owner in self.calendars
            ],
        }

    def _write(self, name: str) -> None:
        for calendar, _owner in self.calendars:
            status = put(calendar, f"{name}.ics", self.meetings.object(name))
            assert status < 300, f"{self.server.kind} refused {name}.ics: HTTP {status}"

    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        self.meetings.add(name, [start], response)
        self._write(name)

    def add_series(self, name: str, starts: list[datetime]) -> None:
        self.meetings.add(name, starts, ACCEPTED)
        self._write(name)

    def respond(self, name: str, response: Response) -> None:
        self.meetings.respond(name, response)
        self._write(name)

    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        self.meetings.move(name, original, start)
        self._write(name)

    def cancel_occurrence(self, name: str, original: datetime) -> None:
        self.meetings.cancel(name, original)
        self._write(name)

    def delete(self, name: str) -> None:
        self.meetings.delete(name)
        for calendar, _owner in self.calendars:
            remove(calendar, f"{name}.ics")

    def add_bad_item(self, name: str, start: datetime) -> None:
        self.meetings.add_bad(name, start)
        self._write(name)

    def expire_cursor(self, harness: Harness) -> None:
        """The server forgets our sync tokens (restored from a backup, say)."""
        with Db(harness.engine) as db, db.begin():
            shard = db.get_one(SyncShard, (SOURCE, f"{SOURCE}#0"))  # CalDAV: one shard
            cursor: Any = shard.cursor
            entries = cursor["calendars"]
            assert all("sync_token" in entry for entry in entries.values()), entries
            shard.cursor = {
                **cursor,
                "calendars": {
                    key: {**entry, "sync_token": f"urn:forgotten-{n}"}
                    for n, (key, entry) in enumerate(entries.items())
                },
            }

    def break_auth(self) -> None:
        self.password_variable = WRONG_PASSWORD_VARIABLE  # the operator mistyped it

    def mend_auth(self) -> None:
        self.password_variable = PASSWORD_VARIABLE


@pytest.fixture(scope="module", params=servers.SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.CaldavServer]:
    kind = str(request.param)
    with servers.start(kind, tmp_path_factory.mktemp(kind)) as running:
        yield running


class TestCaldav(ConnectorContract):
    @pytest.fixture
    def live(self, server: servers.CaldavServer, monkeypatch: pytest.MonkeyPatch) -> LiveCaldav:
        return LiveCaldav(server, monkeypatch)

    def test_unchanged_calendars_need_no_library_client(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Nothing changed: one sync-collection REPORT per calendar through our own client
        tells, and the caldav library's client is not made; a change still goes through it."""
        harness.live.add_meeting("kickoff", KICKOFF)
        assert harness.sync().ok
        connected: list[str] = []
        real_connect = CaldavConnector._connect

        def counted(connector: CaldavConnector) -> Any:
            connected.append(connector.source_id)
            return real_connect(connector)

        monkeypatch.setattr(CaldavConnector, "_connect", counted)
        again = harness.sync()
        assert again.ok, again.error
        assert (again.stored, again.deleted, connected) == (0, 0, [])
        harness.live.add_meeting("catch-up", CATCH_UP)
        changed = harness.sync()
        assert changed.ok, changed.error
        assert changed.stored > 0
        assert set(connected) == {SOURCE}  # the change went through the library
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, CATCH_UP: ACCEPTED})

    def test_one_calendars_rejected_token_resyncs_that_calendar_only(
        self, harness: Harness
    ) -> None:
        """The server forgets one calendar's sync token: only that calendar is read from
        scratch (staged), and what it lost meanwhile goes; the other one is untouched."""
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        assert harness.sync().ok
        mentors = _calendar_key(harness, MENTOR)
        with Db(harness.engine) as db, db.begin():
            shard = db.get_one(SyncShard, (SOURCE, f"{SOURCE}#0"))
            cursor: Any = shard.cursor
            entries = dict(cursor["calendars"])
            entries[mentors] = {**entries[mentors], "sync_token": "urn:forgotten"}
            shard.cursor = {**cursor, "calendars": entries}
        mentor_calendar = harness.live.calendars[0][0]
        remove(mentor_calendar, "catch-up.ics")  # gone while its token was stale
        before = _scopes(harness)
        with capture_logs() as logs:
            result = harness.sync()
        assert result.ok, result.error
        assert result.resynced
        started = [e for e in logs if e["event"] == "source_resync_started"]
        assert [e["calendar"] for e in started] == [mentors]
        after = _scopes(harness)
        gone = {s for s in before - after if s.startswith(mentors)}
        assert gone
        assert all("catch-up" in s for s in gone)
        assert before - after == gone  # the mentee's calendar kept everything
        assert harness.source_row().resync_started_at is None
        assert harness.staged() == 0


def _scopes(harness: Harness) -> set[str]:
    with Db(harness.engine) as db:
        return {s for s in db.scalars(select(Event.scope).where(Event.source_id == SOURCE)) if s}


def _calendar_key(harness: Harness, owner: str) -> str:
    """The key of ``owner``'s calendar in the cursor (its events' scopes begin with it)."""
    with Db(harness.engine) as db:
        shard = db.get_one(SyncShard, (SOURCE, f"{SOURCE}#0"))
        keys = list((shard.cursor or {})["calendars"])
        scopes = db.scalars(
            select(Event.scope).where(Event.source_id == SOURCE, Event.calendar_owner == owner)
        ).all()
    [key] = [k for k in keys if any(s and s.startswith(k) for s in scopes)]
    return key


class LiveCaldavEtags(LiveCaldav):
    """The same calendars compared by CTag and ETags, as on a server without RFC 6578."""

    not_applicable: ClassVar[Mapping[str, str]] = {
        "cursor_expiry": "CTags and ETags are no server-side sync state that could expire",
        "cursor_expiry_resync_interrupted": "no sync state to expire (CTags and ETags)",
    }


@pytest.fixture(scope="module")
def xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.CaldavServer]:
    with servers.xandikos(tmp_path_factory.mktemp("xandikos-etags")) as running:
        yield running


class TestCaldavEtags(ConnectorContract):
    @pytest.fixture
    def live(
        self, xandikos: servers.CaldavServer, monkeypatch: pytest.MonkeyPatch
    ) -> LiveCaldavEtags:
        return LiveCaldavEtags(xandikos, monkeypatch, method="etag")

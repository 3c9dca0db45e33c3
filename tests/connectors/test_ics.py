"""The connector contract for iCalendar: a folder of files, and an HTTP feed."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import mentorpulse.connectors.base as connector_base
import mentorpulse.connectors.ics as ics_module
from mentorpulse.connectors.ics import IcsConnector
from mentorpulse.model import Response
from tests.connectors.contract import (
    ACCEPTED,
    MENTEE,
    MENTOR,
    SOURCE,
    ConnectorContract,
    LiveSource,
)
from tests.connectors.ical import Meetings

NO_SYNC_STATE = "iCalendar has no sync state a provider could expire (the cursor is digests)"


class LiveIcs(LiveSource):
    """The pair's meetings as iCalendar; a subclass says where they are published."""

    def __init__(self) -> None:
        self.meetings = Meetings()

    @property
    def connector_class(self) -> type:
        return IcsConnector

    @property
    def calendar(self) -> bytes:
        return self.meetings.calendar()

    def publish(self) -> None:
        """Write the calendars where the source reads them."""

    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        self.meetings.add(name, [start], response)
        self.publish()

    def add_series(self, name: str, starts: list[datetime]) -> None:
        self.meetings.add(name, starts, ACCEPTED)
        self.publish()

    def respond(self, name: str, response: Response) -> None:
        self.meetings.respond(name, response)
        self.publish()

    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        self.meetings.move(name, original, start)
        self.publish()

    def cancel_occurrence(self, name: str, original: datetime) -> None:
        self.meetings.cancel(name, original)
        self.publish()

    def delete(self, name: str) -> None:
        self.meetings.delete(name)
        self.publish()

    def add_bad_item(self, name: str, start: datetime) -> None:
        self.meetings.add_bad(name, start)
        self.publish()


class LiveFolder(LiveIcs):
    """A folder with the mentor's and the mentee's calendar file (the owner is in the file
    name), its cursor stored after every file so that a listing has one mid-way."""

    not_applicable: ClassVar[dict[str, str]] = {
        "cursor_expiry": NO_SYNC_STATE,
        "cursor_expiry_resync_interrupted": NO_SYNC_STATE,
        "auth_failure": "a folder of files has no credentials to refuse",
    }
    objects_per_page = 1  # two files: grouped one by one, so there is a page between

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        folder.mkdir()

    def source(self) -> dict[str, Any]:
        return {"id": SOURCE, "kind": "ics", "path": str(self.folder)}

    def publish(self) -> None:
        for person in (MENTOR, MENTEE):
            (self.folder / f"{person}.ics").write_bytes(self.calendar)


class Feed(BaseHTTPRequestHandler):
    """Serves the live source's calendar with an ETag; 401 while its credentials are off."""

    live: ClassVar[LiveFeed]

    def do_GET(self) -> None:
        live = type(self).live
        if live.refusing:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = live.calendar
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar; charset=utf-8")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the assertions say what matters."""


class LiveFeed(LiveIcs):
    """The mentor's calendar published as an HTTP feed (one document: one page)."""

    copies = 1
    not_applicable: ClassVar[dict[str, str]] = {
        "cursor_expiry": NO_SYNC_STATE,
        "cursor_expiry_resync_interrupted": NO_SYNC_STATE,
        "crash_between_pages_resumes": "a feed is one document, read as one page",
        "kill_between_grouped_pages_resumes": "a feed is one document, read as one page",
    }

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.refusing = False

    def source(self) -> dict[str, Any]:
        return {"id": SOURCE, "kind": "ics", "url": self.url, "owner": MENTOR}

    def break_auth(self) -> None:
        self.refusing = True  # the feed's secret address was reset

    def mend_auth(self) -> None:
        self.refusing = False


class TestIcsFolder(ConnectorContract):
    @pytest.fixture
    def live(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LiveFolder:
        monkeypatch.setattr(connector_base, "PAGE_SCOPES", 1)  # a file a page: crashes between
        monkeypatch.setattr(ics_module, "CHECKPOINT_FILES", 1)  # and each page with its cursor
        return LiveFolder(tmp_path / "calendars")


class TestIcsFeed(ConnectorContract):
    @pytest.fixture
    def live(self) -> Iterator[LiveFeed]:
        handler: Any = type("Handler", (Feed,), {})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        host, port = server.server_address[:2]
        handler.live = live = LiveFeed(f"http://{host!s}:{port}/team.ics")
        try:
            yield live
        finally:
            server.shutdown()
            server.server_close()

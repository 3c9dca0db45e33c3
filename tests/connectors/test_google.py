"""The connector contract for Google Calendar: the real client against the loopback fake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mentorpulse.connectors.google import GoogleConnector
from mentorpulse.model import Response
from tests.connectors.contract import (
    ACCEPTED,
    MENTEE,
    MENTOR,
    SOURCE,
    ConnectorContract,
    Harness,
    LiveSource,
)
from tests.fakes.google_api import GoogleFake, RunningFake, instance_id, rfc3339, serve

CALENDARS = [MENTOR, MENTEE]
ANSWERS = {Response.ACCEPTED: "accepted", Response.DECLINED: "declined"}


class LiveGoogle(LiveSource):
    """Both people's calendars in the fake, read with a service account; one calendar a
    batch, so that a listing has several pages."""

    def __init__(self, running: RunningFake, key_file: Path) -> None:
        self.running = running
        self.fake = running.fake
        self.key_file = key_file
        self.series: dict[str, str] = {}  # name → series id
        for user in CALENDARS:
            self.fake.add_user(user)

    @property
    def connector_class(self) -> type:
        return GoogleConnector

    def source(self) -> dict[str, Any]:
        return {
            "id": SOURCE,
            "kind": "google",
            "users": CALENDARS,
            "service_account_key": str(self.key_file),
            "api_root": self.running.url,
            "batch_size": 1,
        }

    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        self.fake.meeting(
            CALENDARS,
            event_id=name,
            start=start,
            organizer=MENTOR,
            attendees={MENTOR: "accepted", MENTEE: ANSWERS[response]},
        )

    def add_series(self, name: str, starts: list[datetime]) -> None:
        self.series[name] = name
        for start in starts:  # the fake's series() spaces them evenly: these are
            self.fake.series(
                CALENDARS,
                series_id=name,
                first=start,
                count=1,
                organizer=MENTOR,
                attendees={MENTOR: "accepted", MENTEE: "accepted"},
            )

    def respond(self, name: str, response: Response) -> None:
        attendees = [
            {"email": MENTOR, "responseStatus": "accepted", "organizer": True},
            {"email": MENTEE, "responseStatus": ANSWERS[response]},
        ]
        for calendar in CALENDARS:
            self.fake.update(calendar, name, attendees=attendees)

    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        for calendar in CALENDARS:
            self.fake.move(calendar, instance_id(name, original), start)

    def cancel_occurrence(self, name: str, original: datetime) -> None:
        for calendar in CALENDARS:
            self.fake.cancel(calendar, instance_id(name, original))

    def delete(self, name: str) -> None:
        for calendar in CALENDARS:
            self.fake.cancel(calendar, name)  # Google lists a deletion as cancelled

    def add_bad_item(self, name: str, start: datetime) -> None:
        self.fake.put_event(
            MENTOR,
            {
                "id": name,
                "start": {"dateTime": "the day after tomorrow"},
                "end": {"dateTime": rfc3339(start)},
                "organizer": {"email": MENTOR, "self": True},
                "attendees": [{"email": MENTEE, "responseStatus": "accepted"}],
            },
        )

    def expire_cursor(self, harness: Harness) -> None:
        for calendar in CALENDARS:
            self.fake.expire_sync_tokens(calendar)  # 410 fullSyncRequired

    def break_auth(self) -> None:
        self.fake.delegated_scopes = set()  # the admin withdrew the delegation
        self.fake.access_tokens.clear()

    def mend_auth(self) -> None:
        self.fake.delegated_scopes = None


class TestGoogle(ConnectorContract):
    @pytest.fixture
    def live(self, tmp_path: Path) -> Iterator[LiveGoogle]:
        for running in serve(GoogleFake()):
            key_file = tmp_path / "sa.json"
            key_file.write_text(json.dumps(running.service_account))
            yield LiveGoogle(running, key_file)

"""The connector contract for Microsoft 365: msal and httpx against the Graph fake."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mentorpulse.connectors.microsoft import MicrosoftConnector
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
from tests.fakes.graph_api import FakeEvent, GraphFake

MAILBOXES = [MENTOR, MENTEE]
ANSWERS = {Response.ACCEPTED: "accepted", Response.DECLINED: "declined"}
SECRET_VARIABLE = "MP_CONTRACT_GRAPH_SECRET"


class UnreadableEvent(FakeEvent):
    """An event Graph serves with a start no client can read."""

    def full(self, zone: str | None = None) -> dict[str, Any]:
        body = super().full(zone)
        body["start"] = {"dateTime": "the day after tomorrow", "timeZone": "UTC"}
        return body


@dataclass
class Meeting:
    """One meeting's copies, by mailbox."""

    copies: dict[str, FakeEvent] = field(default_factory=dict)


class LiveGraph(LiveSource):
    """Both people's mailboxes in the fake tenant, read app-only with a client secret; two
    events a page, so that a listing has several pages."""

    def __init__(self, fake: GraphFake, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = fake
        self.monkeypatch = monkeypatch
        self.meetings: dict[str, list[Meeting]] = {}  # name → its occurrences
        monkeypatch.setenv(SECRET_VARIABLE, fake.client_secret)

    @property
    def connector_class(self) -> type:
        return MicrosoftConnector

    def source(self) -> dict[str, Any]:
        return {
            "id": SOURCE,
            "kind": "microsoft",
            "tenant_id": self.fake.tenant,
            "client_id": self.fake.client_id,
            "client_secret": f"${{{SECRET_VARIABLE}}}",
            "mailboxes": MAILBOXES,
            "authority_host": self.fake.url,
            "graph_url": f"{self.fake.url}/v1.0",
            "ca_bundle": str(self.fake.ca_path),
            "page_size": 2,
        }

    def _put(self, name: str, start: datetime, **fields: Any) -> Meeting:
        """One occurrence, as the organiser's copy and the mentee's."""
        answer = fields.pop("response", "accepted")
        kind = fields.pop("kind", FakeEvent)
        meeting = Meeting()
        for mailbox in MAILBOXES:
            meeting.copies[mailbox] = self.fake.put(
                mailbox,
                kind(
                    id=self.fake.next_id(),
                    ical_uid=name,
                    subject="Mentoring",
                    start=start,
                    end=start + timedelta(hours=1),
                    organizer=MENTOR,
                    attendees=[(MENTEE, "required", answer)],
                    owner_response="organizer" if mailbox == MENTOR else answer,
                    **fields,
                ),
            )
        return meeting

    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        self.meetings[name] = [self._put(name, start, response=ANSWERS[response])]

    def add_series(self, name: str, starts: list[datetime]) -> None:
        master = self.fake.next_id()
        self.meetings[name] = [
            self._put(name, start, type="occurrence", series_master_id=master, original_start=start)
            for start in starts
        ]

    def _occurrence(self, name: str, original: datetime) -> Meeting:
        return next(m for m in self.meetings[name] if m.copies[MENTOR].original_start == original)

    def respond(self, name: str, response: Response) -> None:
        for mailbox, event in self.meetings[name][0].copies.items():
            event.attendees = [(MENTEE, "required", ANSWERS[response])]
            if mailbox == MENTEE:
                event.owner_response = ANSWERS[response]
            self.fake.put(mailbox, event)

    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        for mailbox, event in self._occurrence(name, original).copies.items():
            event.start, event.end, event.type = start, start + timedelta(hours=1), "exception"
            self.fake.put(mailbox, event)

    def cancel_occurrence(self, name: str, original: datetime) -> None:
        for mailbox, event in self._occurrence(name, original).copies.items():
            event.is_cancelled, event.type = True, "exception"
            self.fake.put(mailbox, event)

    def delete(self, name: str) -> None:
        for meeting in self.meetings.pop(name):
            for mailbox, event in meeting.copies.items():
                self.fake.delete(mailbox, event.id)

    def add_bad_item(self, name: str, start: datetime) -> None:
        self.meetings[name] = [self._put(name, start, kind=UnreadableEvent)]

    def expire_cursor(self, harness: Harness) -> None:
        for mailbox in MAILBOXES:
            self.fake.expire_sync_state(mailbox, "gone")

    def break_auth(self) -> None:
        self.saved_secret = self.fake.client_secret
        self.fake.client_secret = "rotated-in-the-portal~1"  # our secret is refused

    def mend_auth(self) -> None:
        self.fake.client_secret = self.saved_secret  # the admin restored the secret


class TestMicrosoft(ConnectorContract):
    @pytest.fixture
    def live(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveGraph]:
        # requests (under msal) would otherwise trust only this bundle, not the test CA.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        fake = GraphFake(tmp_path)
        for mailbox in MAILBOXES:
            fake.mailbox(mailbox)
        for running in fake.serve():
            yield LiveGraph(running, monkeypatch)

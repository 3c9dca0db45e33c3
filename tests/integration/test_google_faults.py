"""Whatever the calendars do and however the API fails, sync converges to the fake's state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule

from mentorpulse.config.schema import GoogleSource
from mentorpulse.connectors.base import CursorExpired, TransientError
from mentorpulse.connectors.google import GoogleConnector
from mentorpulse.model import EventRecord, SyncPage
from tests.fakes.google_api import Fault, GoogleFake, RunningFake, serve

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
USERS = ["ann@example.org", "bo@example.org", "cy@example.org"]
FAULTS = [
    Fault(403, "rateLimitExceeded"),
    Fault(403, "userRateLimitExceeded"),
    Fault(429, "rateLimitExceeded", retry_after=3),
    Fault(500, "backendError"),
    Fault(503, "backendError", outer=True),
    Fault(0, outer=True),  # the connection drops mid-body
    Fault(429, "rateLimitExceeded", times=10),  # outlasts the retries: TransientError
]


# Poll right after a change (with this page size), or let changes pile up first.
POLL = st.sampled_from([None, 2, 7, 2500])


@pytest.fixture(scope="module")
def running() -> Iterator[RunningFake]:
    yield from serve(GoogleFake())


class GoogleSync(RuleBasedStateMachine):
    """Calendar changes, faults and polls interleaved; stored state checked after each poll."""

    running: RunningFake
    key_file: Path

    def __init__(self) -> None:
        super().__init__()
        fake = GoogleFake()
        fake.base_url = self.running.url
        fake.public_keys = self.running.fake.public_keys
        self.running.fake.__dict__.update(fake.__dict__)  # a fresh state, same server
        self.fake = self.running.fake
        for user in USERS:
            self.fake.add_user(user)
        self.records: dict[str, EventRecord] = {}
        self.cursor: dict[str, Any] | None = None
        self.counter = 0
        self.clean = False  # the last poll ran to the end

    # -- the calendars change ----------------------------------------------------------

    @rule(
        owners=st.sets(st.sampled_from(USERS), min_size=1),
        day=st.integers(-150, 150),
        hour=st.integers(6, 18),
        then=POLL,
    )
    def add_meeting(self, owners: set[str], day: int, hour: int, then: int | None) -> None:
        self.counter += 1
        start = NOW.replace(hour=hour) + timedelta(days=day)
        organizer = sorted(owners)[0]
        self.fake.meeting(
            sorted(owners),
            event_id=f"m{self.counter}",
            start=start,
            organizer=organizer,
            attendees=dict.fromkeys(owners, "needsAction"),
        )
        self._then(then)

    @rule(
        owner=st.sampled_from(USERS), day=st.integers(-30, 400), count=st.integers(2, 80), then=POLL
    )
    def add_series(self, owner: str, day: int, count: int, then: int | None) -> None:
        self.counter += 1
        self.fake.series(
            [owner],
            series_id=f"s{self.counter}",
            first=NOW + timedelta(days=day),
            count=count,
            organizer=owner,
            attendees={owner: "accepted"},
        )
        self._then(then)

    def _some_event(self, data: st.DataObject) -> tuple[str, str] | None:
        live = [(o, i) for o in USERS for i in sorted(self.fake.live_events(o))]
        return data.draw(st.sampled_from(live)) if live else None

    @rule(data=st.data(), days=st.integers(-20, 20), then=POLL)
    def move(self, data: st.DataObject, days: int, then: int | None) -> None:
        chosen = self._some_event(data)
        if chosen:
            owner, event_id = chosen
            event = self.fake.live_events(owner)[event_id]
            start = datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00"))
            self.fake.move(owner, event_id, start + timedelta(days=days))
        self._then(then)

    @rule(data=st.data(), then=POLL)
    def cancel(self, data: st.DataObject, then: int | None) -> None:
        chosen = self._some_event(data)
        if chosen:
            self.fake.cancel(*chosen)
        self._then(then)

    @rule(data=st.data(), answer=st.sampled_from(["accepted", "declined", "tentative"]), then=POLL)
    def respond(self, data: st.DataObject, answer: str, then: int | None) -> None:
        chosen = self._some_event(data)
        if chosen:
            owner, event_id = chosen
            self.fake.update(
                owner, event_id, attendees=[{"email": owner, "responseStatus": answer}]
            )
        self._then(then)

    @rule(owner=st.sampled_from(USERS), then=POLL)
    def expire_token(self, owner: str, then: int | None) -> None:
        self.fake.expire_sync_tokens(owner)
        self._then(then)

    # -- the API fails -------------------------------------------------------------------

    @rule(fault=st.sampled_from(FAULTS), owner=st.sampled_from([None, *USERS]), then=POLL)
    def inject(self, fault: Fault, owner: str | None, then: int | None) -> None:
        copy = Fault(fault.status, fault.reason, fault.retry_after, fault.times, None, fault.outer)
        if not copy.outer:
            copy.calendar = owner
        self.fake.faults = [f for f in self.fake.faults if f.times > 0] + [copy]
        self._then(then)

    # -- polls ---------------------------------------------------------------------------

    def _then(self, page_size: int | None) -> None:
        if page_size is not None:
            self.poll(page_size)

    def _connector(self) -> GoogleConnector:
        source = GoogleSource.model_validate(
            {
                "id": "gw",
                "kind": "google",
                "users": USERS,
                "service_account_key": str(self.key_file),
                "api_root": self.running.url,
                "batch_size": 2,
            }
        )
        return GoogleConnector(
            source, base_dir=self.key_file.parent, now=NOW, sleep=lambda _s: None
        )

    def _apply(self, page: SyncPage, into: dict[str, EventRecord]) -> None:
        for key in page.deleted:
            into.pop(key, None)
        for record in page.records:
            into[record.provider_id] = record

    @rule(page_size=st.sampled_from([2, 7, 2500]))
    def poll(self, page_size: int) -> None:
        import mentorpulse.connectors.google.sync as module

        module.PAGE_SIZE, original = page_size, module.PAGE_SIZE
        try:
            try:
                for _pass in range(2):
                    resumed = _mid_listing(self.cursor)
                    for page in self._connector().sync(self.cursor):
                        self._apply(page, self.records)
                        self.cursor = json.loads(json.dumps(page.cursor))
                    # A listing resumed from a page token finishes the snapshot it began
                    # in (as Google's does); changes made since come with the next poll.
                    if not resumed:
                        break
                self.clean = True
            except CursorExpired:
                # What the sync stage does: resync from scratch into a staging area,
                # then reconcile (here: replace) once it completed.
                staged: dict[str, EventRecord] = {}
                cursor = None
                for page in self._connector().sync(None):
                    self._apply(page, staged)
                    cursor = json.loads(json.dumps(page.cursor))
                self.records, self.cursor, self.clean = staged, cursor, True
            self.converged()
        except (TransientError, CursorExpired):
            self.clean = False  # retried at the next poll; nothing half-applied is checked
        finally:
            module.PAGE_SIZE = original

    def converged(self) -> None:
        """After a poll that ran to the end, with no change since: exactly the fake."""
        window = self._connector().window
        expected: dict[str, datetime] = {}
        for owner in USERS:
            for event in self.fake.live_events(owner).values():
                start = datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(event["end"]["dateTime"].replace("Z", "+00:00"))
                if start < window.end and end > window.start:
                    expected[f"{owner}/{event['id']}"] = start
        assert {k: r.start for k, r in self.records.items()} == expected

    def teardown(self) -> None:
        self.fake.faults = []


def _mid_listing(cursor: dict[str, Any] | None) -> bool:
    """Whether some calendar's listing was left half-way (a page token in the cursor)."""
    calendars = (cursor or {}).get("calendars", {})
    return any("page_token" in state for state in calendars.values())


def test_faults_converge_to_the_fakes_state(running: RunningFake, tmp_path: Path) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(running.service_account))
    GoogleSync.running = running
    GoogleSync.key_file = key_file
    run = GoogleSync.TestCase
    run.settings = settings(
        max_examples=12,
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    run().runTest()

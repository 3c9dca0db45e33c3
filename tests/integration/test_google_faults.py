"""Whatever the calendars do and however the API fails, what the sync stage stores
converges to the fake's state."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, rule
from sqlalchemy import select

from mentorpulse import stages
from mentorpulse.connectors.base import Window
from mentorpulse.connectors.google import GoogleConnector
from mentorpulse.stages import sync as sync_stage
from mentorpulse.storage.models import Event
from tests.fakes.google_api import Fault, GoogleFake, RunningFake, serve

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
USERS = ["ann@example.org", "bo@example.org", "cy@example.org"]
WINDOW = {"window_past": "180d", "window_future": "120d"}
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
        self.ctx: stages.Context | None = None
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
            attendees=dict.fromkeys({*owners, _partner(organizer)}, "needsAction"),
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
            attendees={owner: "accepted", _partner(owner): "accepted"},
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

    # -- polls: the real sync stage and store --------------------------------------------

    def _then(self, page_size: int | None) -> None:
        if page_size is not None:
            self.poll(page_size)

    def _source(self) -> dict[str, Any]:
        return {
            "id": "gw",
            "kind": "google",
            "users": USERS,
            "service_account_key": str(self.key_file),
            "api_root": self.running.url,
            "batch_size": 2,
            **WINDOW,
        }

    def _context(self) -> stages.Context:
        if self.ctx is None:
            folder = Path(tempfile.mkdtemp(dir=self.key_file.parent))
            pairs = [(a, b) for n, a in enumerate(USERS) for b in USERS[n + 1 :]]
            (folder / "roster.csv").write_text(
                "program,mentor_email,mentee_email,started_on\n"
                + "".join(f"eng,{mentor},{mentee},2026-01-05\n" for mentor, mentee in pairs)
            )
            config = {
                "database": f"sqlite:///{folder / 'mentorpulse.db'}",
                "sources": [self._source()],
                "roster": {"path": "roster.csv"},
                "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
            }
            (folder / "mentorpulse.yaml").write_text(json.dumps(config))
            self.ctx = stages.Context.open(folder / "mentorpulse.yaml", clock=lambda: NOW)
        return self.ctx

    @rule(page_size=st.sampled_from([2, 7, 2500]))
    def poll(self, page_size: int) -> None:
        """``sync --once``: an expired token, a resync and what fails are the stage's."""
        import mentorpulse.connectors.google.sync as module

        module.PAGE_SIZE, original = page_size, module.PAGE_SIZE
        try:
            ctx = self._context()
            for _pass in range(2):
                resumed = _mid_listing(self._cursor())
                (result,) = stages.sync_sources(ctx)
                # A listing resumed from a page token finishes the snapshot it began in
                # (as Google's does); changes made since come with the next poll.
                if not result.ok or not resumed:
                    break
            self.clean = result.ok  # a failure is retried at the next poll
            if self.clean:
                self.converged()
        finally:
            module.PAGE_SIZE = original

    def _cursor(self) -> dict[str, Any] | None:
        ctx = self._context()
        with ctx.db() as db:
            return sync_stage.stored_cursor(db, ctx.config.sources[0])

    def converged(self) -> None:
        """After a poll that ran to the end, with no change since: exactly the fake."""
        window = Window.around(NOW, timedelta(days=180), timedelta(days=120))
        expected: dict[str, datetime] = {}
        for owner in USERS:
            for event in self.fake.live_events(owner).values():
                start = datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(event["end"]["dateTime"].replace("Z", "+00:00"))
                if start < window.end and end > window.start and _of_a_pair(event):
                    expected[f"{owner}/{event['id']}"] = start
        with self._context().db() as db:
            stored = {e.provider_id: e.start.replace(tzinfo=UTC) for e in db.scalars(select(Event))}
        assert stored == expected

    def teardown(self) -> None:
        self.fake.faults = []
        if self.ctx is not None:
            self.ctx.engine.dispose()


def _partner(user: str) -> str:
    """Another of USERS: every two of them are a pair of the roster."""
    return USERS[(USERS.index(user) + 1) % len(USERS)]


def _of_a_pair(event: dict[str, Any]) -> bool:
    """Whether the event involves two of USERS, so the store keeps it (the rest is
    dropped at ingest: a respond rule may leave an event to its owner alone)."""
    people = {a.get("email") for a in event.get("attendees") or []}
    people.add((event.get("organizer") or {}).get("email"))
    return len(people & set(USERS)) >= 2


def _mid_listing(cursor: dict[str, Any] | None) -> bool:
    """Whether some calendar's listing was left half-way (a page token in the cursor)."""
    calendars = (cursor or {}).get("calendars", {})
    return any("page_token" in state for state in calendars.values())


@pytest.fixture
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's connectors retry without sleeping (the faults are many, the waits real)."""

    def build(source: Any, **kwargs: Any) -> GoogleConnector:
        return GoogleConnector(source, sleep=lambda _s: None, **kwargs)

    monkeypatch.setattr(sync_stage, "build_connector", build)


def test_faults_converge_to_the_fakes_state(
    running: RunningFake, tmp_path: Path, no_waiting: None
) -> None:
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

"""The connector contract suite: what every connector does, through the real sync stage.

One class of scenarios, :class:`ConnectorContract`, that every connector's test module
subclasses with a ``live`` fixture yielding a :class:`LiveSource`: a provider with real
calendars behind it (the Google and Graph fakes, Radicale and Xandikos, files and an HTTP
feed) and the moves a person makes in them. Each scenario runs ``mentorpulse sync --once``
as the operator would (:func:`mentorpulse.stages.sync_sources` on a freshly opened
context, so the real ``store_page``), on SQLite and on PostgreSQL, and asserts on what is
stored: the live events of the source, and its row in ``sources``.

A scenario a kind of source cannot express (a file has no credentials to refuse) is named
in the driver's ``not_applicable`` with the reason, and skipped saying so.
"""

from __future__ import annotations

import abc
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as Db

from mentorpulse import stages
from mentorpulse.model import EventStatus, Response, SyncPage
from mentorpulse.stages.sync import SourceResult, stored_cursor
from mentorpulse.storage.models import (
    Event,
    EventPairing,
    ResyncSeen,
    Source,
    SyncCursor,
    SyncShard,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)  # a Monday
MENTOR = "ana@example.org"
MENTEE = "ben@example.org"
SOURCE = "src"  # the id every driver gives its source
WINDOW = {"window_past": "60d", "window_future": "60d"}

# The calendars the scenarios arrange, all inside the window.
KICKOFF = datetime(2026, 11, 18, 15, tzinfo=UTC)
CATCH_UP = datetime(2026, 11, 25, 9, tzinfo=UTC)
LATER = datetime(2026, 11, 27, 13, tzinfo=UTC)
SERIES = [datetime(2026, 11, 16, 10, tzinfo=UTC) + timedelta(weeks=n) for n in range(4)]
MOVED = datetime(2026, 11, 24, 14, tzinfo=UTC)  # the second occurrence, a day later

ACCEPTED, DECLINED = Response.ACCEPTED, Response.DECLINED


class Crash(BaseException):
    """The process dies: no ``except Exception`` of the stage catches it."""


class LiveSource(abc.ABC):
    """A provider with a pair's calendars, driven as its people and its operator would.

    Every meeting is between MENTOR and MENTEE and, for a source reading both calendars,
    in each of them (``copies``); ``name`` identifies it across calls."""

    copies: ClassVar[int] = 2
    # A connector grouping objects (calendar objects, files) into pages: how many a page
    # holds when a scenario kills the sync between two of them (base.PAGE_SCOPES); None
    # for one whose pages are the provider's.
    objects_per_page: ClassVar[int | None] = None
    # Scenario (test name without ``test_``) → why this kind of source cannot express it.
    not_applicable: ClassVar[Mapping[str, str]] = {}

    @property
    @abc.abstractmethod
    def connector_class(self) -> type:
        """The class the registry builds for this source (a crash is injected into it)."""

    @abc.abstractmethod
    def source(self) -> dict[str, Any]:
        """The source's section of mentorpulse.yaml (id :data:`SOURCE`)."""

    @abc.abstractmethod
    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        """A one-hour meeting; ``response`` is the mentee's answer."""

    @abc.abstractmethod
    def add_series(self, name: str, starts: list[datetime]) -> None:
        """A weekly series of one-hour occurrences at ``starts``, the mentee accepted."""

    @abc.abstractmethod
    def respond(self, name: str, response: Response) -> None:
        """The mentee answers a meeting anew (in every copy)."""

    @abc.abstractmethod
    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        """One occurrence of a series moves; the others stay."""

    @abc.abstractmethod
    def cancel_occurrence(self, name: str, original: datetime) -> None:
        """One occurrence of a series is cancelled; the others stay."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """A meeting is deleted from every calendar."""

    @abc.abstractmethod
    def add_bad_item(self, name: str, start: datetime) -> None:
        """An item of the pair's the connector cannot read (it skips and reports it)."""

    def expire_cursor(self, harness: Harness) -> None:
        """The provider forgets the sync state the stored cursor names."""
        raise NotImplementedError

    def break_auth(self) -> None:
        """The provider refuses the source's credentials from now on."""
        raise NotImplementedError

    def mend_auth(self) -> None:
        """The operator mended the credentials (at the provider or in the config)."""
        raise NotImplementedError


@dataclass
class Harness:
    """One deployment: a config naming the live source, a database, and sync runs."""

    live: LiveSource
    database_url: str
    folder: Path
    monkeypatch: pytest.MonkeyPatch
    _engine: Engine | None = field(default=None, repr=False)
    _ctx: stages.Context | None = field(default=None, repr=False)
    _ctx_config: str = field(default="", repr=False)

    def config(self) -> str:
        """mentorpulse.yaml as the source stands now (a driver may change it)."""
        config = {
            "database": self.database_url,
            "timezone": "Europe/Berlin",
            "sources": [{**WINDOW, **self.live.source()}],
            "roster": {"path": "roster.csv"},
            "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
        }
        return json.dumps(config)  # JSON is YAML

    def context(self) -> stages.Context:
        """The context of a sync: opened again when the config changed (as the operator's
        next command would read it), else kept, as the daemon keeps its own."""
        config = self.config()
        if self._ctx is not None and self._ctx_config == config:
            return self._ctx
        self.close_context()
        (self.folder / "roster.csv").write_text(
            f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2026-09-01\n"
        )
        path = self.folder / "mentorpulse.yaml"
        path.write_text(config)
        self._ctx, self._ctx_config = stages.Context.open(path, clock=lambda: NOW), config
        return self._ctx

    def sync(self, *, only: list[str] | None = None) -> SourceResult:
        """``mentorpulse sync --once`` (``--source`` with ``only``)."""
        (result,) = stages.sync_sources(self.context(), only)
        return result

    def crashing_sync(self) -> None:
        """A sync whose process dies right after storing the first page that carried a
        cursor (so later pages, of the listing or of a resync, are not read)."""
        connector_class = self.live.connector_class
        listing = connector_class.sync

        def sync(connector: Any, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
            for page in listing(connector, cursor):
                yield page  # the stage stores it before asking for the next one
                if page.cursor is not None:
                    raise Crash

        with self.monkeypatch.context() as patch:
            patch.setattr(connector_class, "sync", sync)
            with pytest.raises(Crash):
                self.sync()

    def killed_sync(self) -> None:
        """``mentorpulse sync --once`` in a process of its own, SIGKILLed right after it
        stored its first page, with pages grouped ``objects_per_page`` objects at most."""
        self.context()  # writes mentorpulse.yaml as the source stands now
        connector_class = self.live.connector_class
        died = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILLED_AFTER_FIRST_PAGE,
                str(self.folder / "mentorpulse.yaml"),
                connector_class.__module__,
                connector_class.__name__,
                NOW.isoformat(),
                str(self.live.objects_per_page),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]

    def snapshot(self) -> Counter[tuple[Any, ...]]:
        """Every stored row of the source as plain values (no row id), counted."""
        columns = [c for c in Event.__table__.c if c.name not in ("id", "updated_at")]
        with self.engine.connect() as connection:
            rows = connection.execute(select(*columns).where(Event.source_id == SOURCE)).all()
        return Counter(json.dumps(list(row), default=str, sort_keys=True) for row in rows)

    def forget_source(self) -> None:
        """Drop what the source stored (events, links, its row): the next sync is clean."""
        with self.engine.begin() as connection:
            ids = select(Event.id).where(Event.source_id == SOURCE).scalar_subquery()
            connection.execute(
                EventPairing.__table__.delete().where(EventPairing.event_id.in_(ids))
            )
            connection.execute(Event.__table__.delete().where(Event.source_id == SOURCE))
            for table in (ResyncSeen, SyncCursor, SyncShard):
                connection.execute(table.__table__.delete().where(table.source_id == SOURCE))
            connection.execute(Source.__table__.delete().where(Source.id == SOURCE))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url)
        return self._engine

    def stored(self) -> Counter[tuple[datetime, Response]]:
        """The live (not cancelled) events stored for the source: start and the mentee's
        answer, counted (a meeting in two calendars is there twice)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Event.start, Event.attendees).where(
                    Event.source_id == SOURCE, Event.status != EventStatus.CANCELLED.value
                )
            ).all()
        return Counter((_utc(start), _answer(attendees)) for start, attendees in rows)

    def rows(self) -> int:
        with self.engine.connect() as connection:
            count = connection.scalar(
                select(func.count()).select_from(Event).where(Event.source_id == SOURCE)
            )
        return int(count or 0)

    def expect(self, meetings: Mapping[datetime, Response]) -> Counter[tuple[datetime, Response]]:
        """What :meth:`stored` holds when the calendars have exactly ``meetings``."""
        return Counter(dict.fromkeys(meetings.items(), self.live.copies))

    def source_row(self) -> Source:
        """The source's row in ``sources``, detached (its columns loaded)."""
        with Db(self.engine) as db:
            row = db.get_one(Source, SOURCE)
            db.expunge(row)
        return row

    def cursor(self) -> dict[str, object] | None:
        """The source's cursor as the stage stores it (per shard and per calendar)."""
        with Db(self.engine) as db:
            [source] = [s for s in self.context().config.sources if s.id == SOURCE]
            return stored_cursor(db, source)

    def staged(self) -> int:
        with self.engine.connect() as connection:
            count = connection.scalar(select(func.count()).select_from(ResyncSeen))
        return int(count or 0)

    def close_context(self) -> None:
        if self._ctx is not None:
            self._ctx.engine.dispose()
            self._ctx = None

    def close(self) -> None:
        self.close_context()
        if self._engine is not None:
            self._engine.dispose()


# Run by :meth:`Harness.killed_sync`: the process dies (SIGKILL, nothing cleans up) when
# the stage asks for the second page, i.e. right after committing the first one.
_KILLED_AFTER_FIRST_PAGE = """
import importlib, os, signal, sys
from datetime import datetime
from pathlib import Path
from mentorpulse import stages
from mentorpulse.connectors import base
config, module, name, now, per_page = sys.argv[1:]
base.PAGE_SCOPES = int(per_page)
connector_class = getattr(importlib.import_module(module), name)
listing = connector_class.sync
def sync(connector, cursor):
    for page in listing(connector, cursor):
        yield page
        os.kill(os.getpid(), signal.SIGKILL)
connector_class.sync = sync
moment = datetime.fromisoformat(now)
stages.sync_sources(stages.Context.open(Path(config), clock=lambda: moment))
"""


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _answer(attendees: list[dict[str, Any]]) -> Response:
    for attendee in attendees or []:
        if attendee.get("email") == MENTEE:
            return Response(attendee["response"])
    return Response.NEEDS_ACTION


@contextmanager
def _harness(
    live: LiveSource, database_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Harness]:
    harness = Harness(live, database_url, folder, monkeypatch)
    try:
        yield harness
    finally:
        harness.close()


class ConnectorContract:
    """The scenarios every connector passes; a subclass provides the ``live`` fixture."""

    @pytest.fixture
    def harness(
        self,
        live: LiveSource,
        database_url: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest,
    ) -> Iterator[Harness]:
        scenario = request.node.originalname.removeprefix("test_")
        reason = live.not_applicable.get(scenario)
        if reason is not None:
            pytest.skip(f"not applicable to {type(live).__name__}: {reason}")
        folder = tmp_path / "deployment"
        folder.mkdir()
        with _harness(live, database_url, folder, monkeypatch) as harness:
            yield harness

    # -- reading and changing ------------------------------------------------------------

    def test_first_sync(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF, DECLINED)
        harness.live.add_series("weekly", SERIES)
        result = harness.sync()
        assert result.ok, result.error
        expected = {KICKOFF: DECLINED, **dict.fromkeys(SERIES, ACCEPTED)}
        assert harness.stored() == harness.expect(expected)
        assert result.stored == harness.rows()
        assert harness.cursor() is not None
        # Nothing changed: a second sync stores nothing again and deletes nothing.
        again = harness.sync()
        assert again.ok, again.error
        assert (again.stored, again.deleted) == (0, 0)
        assert harness.stored() == harness.expect(expected)

    def test_add(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF)
        assert harness.sync().ok
        harness.live.add_meeting("catch-up", CATCH_UP)
        result = harness.sync()
        assert result.ok, result.error
        assert result.stored == harness.live.copies  # only the new meeting
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, CATCH_UP: ACCEPTED})

    def test_modify(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        assert harness.sync().ok
        harness.live.respond("catch-up", DECLINED)
        result = harness.sync()
        assert result.ok, result.error
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, CATCH_UP: DECLINED})

    def test_move_one_occurrence(self, harness: Harness) -> None:
        harness.live.add_series("weekly", SERIES)
        assert harness.sync().ok
        harness.live.move_occurrence("weekly", SERIES[1], MOVED)
        result = harness.sync()
        assert result.ok, result.error
        moved = [SERIES[0], MOVED, *SERIES[2:]]
        assert harness.stored() == harness.expect(dict.fromkeys(moved, ACCEPTED))

    def test_cancel_one_occurrence(self, harness: Harness) -> None:
        harness.live.add_series("weekly", SERIES)
        assert harness.sync().ok
        harness.live.cancel_occurrence("weekly", SERIES[2])
        result = harness.sync()
        assert result.ok, result.error
        kept = [s for s in SERIES if s != SERIES[2]]
        assert harness.stored() == harness.expect(dict.fromkeys(kept, ACCEPTED))

    def test_delete(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        assert harness.sync().ok
        harness.live.delete("kickoff")
        result = harness.sync()
        assert result.ok, result.error
        assert result.deleted == harness.live.copies
        assert harness.stored() == harness.expect({CATCH_UP: ACCEPTED})

    # -- the cursor ----------------------------------------------------------------------

    def test_cursor_expiry(self, harness: Harness) -> None:
        """The provider forgets the sync state: a staged full resync, which lets go of
        what the listing no longer has (a deletion the expired cursor cannot tell)."""
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        assert harness.sync().ok
        harness.live.expire_cursor(harness)
        harness.live.delete("catch-up")
        harness.live.add_meeting("later", LATER)
        result = harness.sync()
        assert result.ok, result.error
        assert result.resynced
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, LATER: ACCEPTED})
        assert harness.rows() == 2 * harness.live.copies  # nothing stored twice
        assert harness.source_row().resync_started_at is None
        assert harness.staged() == 0

    def test_cursor_expiry_resync_interrupted(self, harness: Harness) -> None:
        """A resync that dies half-way drops nothing early; the next sync completes it."""
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        assert harness.sync().ok
        before = harness.stored()
        harness.live.expire_cursor(harness)
        harness.live.delete("catch-up")
        harness.crashing_sync()
        # The resync read one calendar (or page) before the process died: a copy it has
        # not seen yet is still stored (a server may name the deletion it saw; then that
        # copy went at once, which is no early drop).
        half = harness.stored()
        assert half[(KICKOFF, ACCEPTED)] == before[(KICKOFF, ACCEPTED)]
        assert half[(CATCH_UP, ACCEPTED)] >= 1, "an unseen event was dropped before the end"
        assert harness.source_row().resync_started_at is not None
        result = harness.sync()
        assert result.ok, result.error
        assert result.resynced
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED})
        assert harness.source_row().resync_started_at is None

    def test_crash_between_pages_resumes(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_series("weekly", SERIES)
        expected = harness.expect({KICKOFF: ACCEPTED, **dict.fromkeys(SERIES, ACCEPTED)})
        harness.crashing_sync()
        half = harness.stored()
        assert half, "the first page was stored with its cursor"
        assert half != expected, "the listing had more pages when the process died"
        result = harness.sync()
        assert result.ok, result.error
        assert harness.stored() == expected
        # Resumed from the stored cursor: what the first run stored is not read again.
        assert result.stored + result.unchanged <= harness.rows() - half.total()

    def test_kill_between_grouped_pages_resumes(self, harness: Harness) -> None:
        """The process is killed between two grouped pages; the next sync stores exactly
        what a clean sync stores: no duplicate, nothing lost."""
        if harness.live.objects_per_page is None:
            pytest.skip(f"{type(harness.live).__name__} pages are the provider's own")
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_meeting("catch-up", CATCH_UP)
        harness.live.add_meeting("later", LATER)
        harness.live.add_series("weekly", SERIES)
        everything = {KICKOFF: ACCEPTED, CATCH_UP: ACCEPTED, LATER: ACCEPTED}
        expected = harness.expect({**everything, **dict.fromkeys(SERIES, ACCEPTED)})
        harness.killed_sync()
        half = harness.stored()
        assert half, "the first grouped page was stored"
        assert half != expected, "the listing had more pages when the process was killed"
        result = harness.sync()
        assert result.ok, result.error
        assert harness.stored() == expected
        resumed = harness.snapshot()
        assert resumed.total() == harness.rows() == expected.total()  # nothing twice
        harness.forget_source()
        clean = harness.sync()
        assert clean.ok, clean.error
        assert harness.snapshot() == resumed

    # -- failures ------------------------------------------------------------------------

    def test_auth_failure(self, harness: Harness) -> None:
        """Refused credentials stop the source until the operator acts, keep what was
        stored, and are not retried on a timer; a retry by hand after mending works."""
        harness.live.add_meeting("kickoff", KICKOFF)
        assert harness.sync().ok
        harness.live.break_auth()
        refused = harness.sync()
        assert not refused.ok
        assert refused.needs_reauth, refused.error
        row = harness.source_row()
        assert row.needs_reauth_at is not None
        assert row.next_attempt_at is None  # no timer
        assert not row.healthy
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED})

        harness.live.add_meeting("catch-up", CATCH_UP)
        waiting = harness.sync()
        assert waiting.needs_reauth
        assert waiting.pages == 0  # not tried again on its own
        harness.live.mend_auth()
        retried = harness.sync(only=[SOURCE])
        assert retried.ok, retried.error
        assert harness.source_row().needs_reauth_at is None
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, CATCH_UP: ACCEPTED})

    def test_bad_item_skipped(self, harness: Harness) -> None:
        harness.live.add_meeting("kickoff", KICKOFF)
        harness.live.add_bad_item("broken", CATCH_UP)
        harness.live.add_meeting("later", LATER)
        result = harness.sync()
        assert result.ok, result.error
        assert result.item_errors >= 1
        assert harness.stored() == harness.expect({KICKOFF: ACCEPTED, LATER: ACCEPTED})
        assert harness.source_row().item_errors, "the skipped item is kept for the operator"

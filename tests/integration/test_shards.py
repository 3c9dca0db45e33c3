"""Sync work cut per calendar: shards of a Google source against the loopback fake.

The fake records every API call with its path and query, so each test counts the
requests per calendar (``_requests``) and the full listings per calendar (``_full``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from mentorpulse import stages
from mentorpulse.connectors.google import GoogleConnector
from mentorpulse.model import SyncPage
from mentorpulse.stages import sync as sync_stage
from mentorpulse.stages.source_health import stale_sources
from mentorpulse.storage.locks import one_at_a_time
from mentorpulse.storage.models import Event, Source, SyncCursor, SyncShard
from tests.fakes.google_api import Fault, GoogleFake, RunningFake, serve

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CALENDARS = 1000


@pytest.fixture
def google() -> Iterator[RunningFake]:
    yield from serve(GoogleFake())


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without sleeping (a fault that outlasts them fails the shard at once)."""

    def build(source: Any, **kwargs: Any) -> GoogleConnector:
        return GoogleConnector(source, sleep=lambda _s: None, **kwargs)

    monkeypatch.setattr(sync_stage, "build_connector", build)


def user(n: int) -> str:
    return f"u{n:04d}@example.org"


def organisation(google: RunningFake, people: int, meetings: int = 1) -> list[str]:
    """``people`` calendars; each two of them a pair that met ``meetings`` times, the
    meeting in the mentor's calendar only (so each event is one calendar's)."""
    users = [user(n) for n in range(people)]
    for email in users:
        google.fake.add_user(email)
    for n in range(0, people, 2):
        mentor, mentee = users[n], users[n + 1]
        for m in range(meetings):
            meet(google, mentor, mentee, f"p{n}-{m}", NOW - timedelta(days=3 + m))
    return users


def meet(google: RunningFake, mentor: str, mentee: str, event_id: str, start: datetime) -> None:
    google.fake.meeting(
        [mentor],
        event_id=event_id,
        start=start,
        organizer=mentor,
        attendees={mentor: "accepted", mentee: "accepted"},
    )


def deploy(
    google: RunningFake, tmp_path: Path, database_url: str, users: list[str], shard_size: int
) -> Path:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(google.service_account))
    pairs = "".join(f"eng,{users[n]},{users[n + 1]},2026-01-05\n" for n in range(0, len(users), 2))
    (tmp_path / "roster.csv").write_text("program,mentor_email,mentee_email,started_on\n" + pairs)
    config = {
        "database": database_url,
        "sources": [
            {
                "id": "gw",
                "kind": "google",
                "users": users,
                "service_account_key": key_file.name,
                "api_root": google.url,
                "shard_size": shard_size,
                "window_past": "90d",
                "window_future": "90d",
            }
        ],
        "roster": {"path": "roster.csv"},
        "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
    }
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def opened() -> Iterator[list[stages.Context]]:
    contexts: list[stages.Context] = []
    yield contexts
    for ctx in contexts:
        ctx.engine.dispose()


def open_context(path: Path, contexts: list[stages.Context]) -> stages.Context:
    ctx = stages.Context.open(path, clock=lambda: NOW)
    contexts.append(ctx)
    return ctx


def _requests(fake: GoogleFake, since: int = 0) -> Counter[str]:
    """Calls per calendar, from the ``since``-th call on."""
    return Counter(c for c, _q in fake.calendar_calls()[since:])


def _full(fake: GoogleFake, since: int = 0) -> Counter[str]:
    """Full listings started per calendar (no sync token, no page token)."""
    return Counter(
        c for c, q in fake.calendar_calls()[since:] if "syncToken" not in q and "pageToken" not in q
    )


def _stored(ctx: stages.Context) -> set[str]:
    with ctx.db() as db:
        return set(db.scalars(select(Event.provider_id)))


def _expected(google: RunningFake, users: list[str]) -> set[str]:
    return {f"{u}/{i}" for u in users for i in google.fake.live_events(u)}


def _entries(ctx: stages.Context) -> dict[str, Any]:
    with ctx.db() as db:
        return dict(
            db.execute(
                select(SyncCursor.calendar, SyncCursor.entry).where(SyncCursor.source_id == "gw")
            ).all()
        )


def _source(ctx: stages.Context) -> Source:
    with ctx.db() as db:
        row = db.get_one(Source, "gw")
        db.expunge(row)
        return row


def test_shards_of_a_thousand_calendars_sync_each_calendar_once(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, CALENDARS)
    ctx = open_context(deploy(google, tmp_path, database_url, users, 200), opened)
    plan = stages.sync_plan(ctx)
    assert [(s.source_id, s.index, s.count) for s in plan] == [("gw", i, 5) for i in range(5)]
    assert [s.key for s in plan] == [f"gw#{i}" for i in range(5)]

    results = [stages.sync_shard(ctx, shard) for shard in plan]
    assert all(r.ok for r in results), [r.error for r in results]
    assert _requests(google.fake) == Counter(dict.fromkeys(users, 1))
    assert _stored(ctx) == _expected(google, users)
    assert all(e and "sync_token" in e for e in _entries(ctx).values())
    assert len(_entries(ctx)) == CALENDARS

    # The CLI's pass: every shard again, one result for the source; nothing changed.
    before = len(google.fake.calendar_calls())
    meet(google, users[10], users[11], "late", NOW - timedelta(days=1))
    (result,) = stages.sync_sources(ctx)
    assert result.ok, result.error
    assert (result.stored, result.deleted) == (1, 0)
    assert _requests(google.fake, before) == Counter(dict.fromkeys(users, 1))
    assert _full(google.fake, before) == Counter()
    assert _stored(ctx) == _expected(google, users)
    source = _source(ctx)
    assert source.healthy
    assert source.last_success_at == NOW


@pytest.mark.postgres
def test_two_shards_at_once_lose_no_cursor_entry(
    google: RunningFake, tmp_path: Path, pg_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, CALENDARS)
    path = deploy(google, tmp_path, pg_url, users, 500)
    open_context(path, opened)  # creates the schema
    plan = stages.sync_plan(opened[0])
    assert len(plan) == 2
    results: dict[str, stages.SourceResult] = {}
    started = threading.Barrier(len(plan))

    def run(shard: stages.Shard) -> None:
        ctx = open_context(path, opened)
        started.wait()
        results[shard.key] = stages.sync_shard(ctx, shard)

    threads = [threading.Thread(target=run, args=(shard,)) for shard in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    assert len(results) == 2
    ctx = opened[0]
    entries = _entries(ctx)
    assert sorted(entries) == users
    assert all(e and "sync_token" in e for e in entries.values())
    assert _stored(ctx) == _expected(google, users)
    assert _requests(google.fake) == Counter(dict.fromkeys(users, 1))
    with ctx.db() as db:
        shards = {s.shard: s.healthy for s in db.scalars(select(SyncShard))}
    assert shards == {"gw#0": True, "gw#1": True}
    assert _source(ctx).healthy


@pytest.mark.postgres
def test_a_second_run_of_the_same_shard_waits_for_the_first(
    google: RunningFake, tmp_path: Path, pg_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, 4)
    path = deploy(google, tmp_path, pg_url, users, 2)
    ctx = open_context(path, opened)
    [shard0, shard1] = stages.sync_plan(ctx)
    second = open_context(path, opened)
    results: list[stages.SourceResult] = []
    with one_at_a_time(ctx.engine, f"sync:{shard0.key}"):  # a first run holds shard 0
        waiting = threading.Thread(target=lambda: results.append(stages.sync_shard(second, shard0)))
        waiting.start()
        _until(lambda: _advisory_waiters(ctx) == 1)
        assert stages.sync_shard(ctx, shard1).ok  # another shard is not held up
        assert set(_requests(google.fake)) == set(users[2:])  # shard 0's read nothing
        assert not results
    waiting.join(timeout=120)
    assert [r.ok for r in results] == [True]
    assert _requests(google.fake) == Counter(dict.fromkeys(users, 1))


def _advisory_waiters(ctx: stages.Context) -> int:
    """Sessions of this test's database waiting for an advisory lock."""
    with ctx.engine.connect() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
            or 0
        )


def _until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.05)


def test_an_expired_token_resyncs_only_its_calendar(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, 8, meetings=3)
    ctx = open_context(deploy(google, tmp_path, database_url, users, 3), opened)
    assert stages.sync_sources(ctx)[0].ok
    expired = users[4]
    # Gone while its token was stale (the fake forgets it: no deletion to report).
    with google.fake.lock:
        del google.fake.calendars[expired].events["p4-1"]
    google.fake.expire_sync_tokens(expired)
    before = len(google.fake.calendar_calls())

    (result,) = stages.sync_sources(ctx)
    assert result.ok, result.error
    assert result.resynced
    assert result.deleted == 1
    assert _full(google.fake, before) == Counter({expired: 1})
    assert _requests(google.fake, before) == Counter({**dict.fromkeys(users, 1), expired: 2})
    assert _stored(ctx) == _expected(google, users)
    source = _source(ctx)
    assert source.resync_started_at is None
    assert source.healthy


class Crash(BaseException):
    """The process dies here (the stage stores nothing more)."""


def test_an_interrupted_calendar_resync_resumes(
    google: RunningFake,
    tmp_path: Path,
    database_url: str,
    opened: list[stages.Context],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mentorpulse.connectors.google.sync as module

    users = organisation(google, 4, meetings=6)
    ctx = open_context(deploy(google, tmp_path, database_url, users, 2), opened)
    assert stages.sync_sources(ctx)[0].ok
    expired = users[2]
    with google.fake.lock:
        del google.fake.calendars[expired].events["p2-5"]  # gone meanwhile
    google.fake.expire_sync_tokens(expired)
    monkeypatch.setattr(module, "PAGE_SIZE", 2)
    listing = GoogleConnector.sync

    def crashing(
        connector: GoogleConnector, cursor: Mapping[str, object] | None
    ) -> Iterator[SyncPage]:
        for page in listing(connector, cursor):
            yield page
            if any(r.calendar_owner == expired for r in page.records):
                raise Crash  # after the first stored page of the resync

    monkeypatch.setattr(GoogleConnector, "sync", crashing)
    [shard0, shard1] = stages.sync_plan(ctx)
    assert stages.sync_shard(ctx, shard0).ok
    with pytest.raises(Crash):
        stages.sync_shard(ctx, shard1)
    monkeypatch.setattr(GoogleConnector, "sync", listing)

    source = _source(ctx)
    assert source.resync_started_at is not None  # the half-read state is marked
    with ctx.db() as db:
        resyncing = set(
            db.scalars(select(SyncCursor.calendar).where(SyncCursor.resync_started_at.is_not(None)))
        )
        assert "full resync" in stale_sources(db, ctx.config, NOW)["gw"]
    assert resyncing == {expired}
    assert f"{expired}/p2-5" in _stored(ctx)  # nothing removed before the listing completes

    before = len(google.fake.calendar_calls())
    (result,) = stages.sync_sources(ctx)
    assert result.ok, result.error
    resumed = [q for c, q in google.fake.calendar_calls()[before:] if c == expired]
    assert "pageToken" in resumed[0], "the listing resumed where it stopped"
    assert _full(google.fake, before) == Counter()
    assert _stored(ctx) == _expected(google, users)
    assert _source(ctx).resync_started_at is None


def test_mass_deletion_of_one_calendar_is_held_while_the_others_apply(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, 6, meetings=12)
    ctx = open_context(deploy(google, tmp_path, database_url, users, 4), opened)
    assert stages.sync_sources(ctx)[0].ok
    emptied = users[0]
    for event_id in list(google.fake.live_events(emptied)):
        google.fake.cancel(emptied, event_id)
    meet(google, users[2], users[3], "new", NOW - timedelta(days=1))  # same shard
    meet(google, users[4], users[5], "other", NOW - timedelta(days=1))  # the other shard
    kept = {f"{emptied}/p0-{m}" for m in range(12)}

    (held,) = stages.sync_sources(ctx)
    assert not held.ok
    assert held.held_deletions == 12
    assert held.error is not None
    assert f"calendar {emptied} would delete 12 of its 12" in held.error
    stored = _stored(ctx)
    assert kept <= stored  # held back
    assert {f"{users[2]}/new", f"{users[4]}/other"} <= stored  # the others went through
    source = _source(ctx)
    assert not source.healthy
    assert source.held_deletions == 12
    with ctx.db() as db:
        assert "deletions held" in stale_sources(db, ctx.config, NOW)["gw"]
        rows = dict(db.execute(select(SyncCursor.calendar, SyncCursor.held_deletions)).all())
    assert {c: h for c, h in rows.items() if h is not None} == {emptied: 12}

    before = len(google.fake.calendar_calls())
    (confirmed,) = stages.sync_sources(ctx)
    assert confirmed.ok, confirmed.error
    assert confirmed.deleted == 12
    assert _full(google.fake, before) == Counter({emptied: 1})  # the confirming listing
    assert _stored(ctx) == _expected(google, users)
    source = _source(ctx)
    assert source.healthy
    assert source.held_deletions is None


def test_a_calendar_cut_from_the_config_holds_the_source_no_longer(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    """Deletions held (and the resync that is to confirm them) in a calendar the operator
    then removes from the source: the source is judged on the calendars it still reads."""
    users = organisation(google, 6, meetings=12)
    path = deploy(google, tmp_path, database_url, users, 4)
    ctx = open_context(path, opened)
    assert stages.sync_sources(ctx)[0].ok
    emptied = users[0]
    for event_id in list(google.fake.live_events(emptied)):
        google.fake.cancel(emptied, event_id)
    (held,) = stages.sync_sources(ctx)
    assert held.held_deletions == 12
    config = json.loads(path.read_text())
    config["sources"][0]["users"] = users[1:]
    path.write_text(json.dumps(config))
    ctx = open_context(path, opened)

    (result,) = stages.sync_sources(ctx)
    assert result.ok, result.error
    source = _source(ctx)
    assert source.healthy
    assert source.held_deletions is None
    assert source.resync_started_at is None
    with ctx.db() as db:
        assert "gw" not in stale_sources(db, ctx.config, NOW)


def test_a_failing_shard_makes_the_source_unhealthy(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, 4)
    ctx = open_context(deploy(google, tmp_path, database_url, users, 2), opened)
    google.fake.faults.append(Fault(429, "rateLimitExceeded", times=50, calendar=users[3]))
    [shard0, shard1] = stages.sync_plan(ctx)
    assert not stages.sync_shard(ctx, shard1).ok
    assert stages.sync_shard(ctx, shard0).ok  # the last to run succeeded...
    source = _source(ctx)
    assert not source.healthy  # ...and the source still says a shard fails
    assert source.last_error is not None
    assert "gw#1" in source.last_error
    assert source.last_success_at is None  # shard 1 never synced
    with ctx.db() as db:
        assert "gw" in stale_sources(db, ctx.config, NOW)
    google.fake.faults.clear()
    assert stages.sync_shard(ctx, shard1).ok
    source = _source(ctx)
    assert source.healthy
    assert source.last_error is None
    assert source.last_success_at == NOW


def test_resharding_keeps_every_cursor_entry(
    google: RunningFake, tmp_path: Path, database_url: str, opened: list[stages.Context]
) -> None:
    users = organisation(google, 10)
    path = deploy(google, tmp_path, database_url, users, 3)
    ctx = open_context(path, opened)
    assert stages.sync_sources(ctx)[0].ok
    config = json.loads(path.read_text())
    config["sources"][0]["shard_size"] = 4
    path.write_text(json.dumps(config))
    ctx = open_context(path, opened)
    assert len(stages.sync_plan(ctx)) == 3
    before = len(google.fake.calendar_calls())
    (result,) = stages.sync_sources(ctx)
    assert result.ok, result.error
    assert _full(google.fake, before) == Counter()  # every calendar went on from its token
    assert _requests(google.fake, before) == Counter(dict.fromkeys(users, 1))
    with ctx.db() as db:
        shards = set(db.scalars(select(SyncShard.shard)))
        count = db.scalar(select(func.count()).select_from(Event))
    assert shards == {"gw#0", "gw#1", "gw#2"}
    assert count == len(_expected(google, users))


def test_migration_moves_each_calendars_cursor_entry(database_url: str) -> None:
    """A database synced before shards keeps every cursor entry: per calendar for a Google
    source, whole in its one shard for an ICS one; the health moves to the first shard."""
    from sqlalchemy import insert

    from mentorpulse.storage.engine import make_engine
    from mentorpulse.storage.migrate import upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine, "source_reauth")
        google_cursor = {
            "version": 1,
            "calendars": {"a@example.org": {"sync_token": "ta"}, "b@example.org": {}},
            "dense_series": ["a@example.org/s1"],
        }
        ics_cursor = {"version": 3, "files": {"x.ics": "digest"}}
        with engine.begin() as connection:
            connection.execute(
                insert(Source.__table__),
                [
                    _legacy_row("gw", "google", google_cursor, healthy=False, error="quota"),
                    _legacy_row("ics", "ics", ics_cursor, healthy=True, error=None),
                ],
            )
        upgrade(engine)
        with engine.connect() as connection:
            entries = {
                (r.source_id, r.calendar): r.entry
                for r in connection.execute(select(SyncCursor.__table__))
            }
            shards = {r.shard: r for r in connection.execute(select(SyncShard.__table__))}
            left = set(connection.scalars(select(Source.__table__.c.cursor)))
        assert entries == {
            ("gw", "a@example.org"): {"sync_token": "ta"},
            ("gw", "b@example.org"): {},
            ("ics", ""): None,
        }
        assert shards["gw#0"].cursor == {"version": 1, "dense_series": ["a@example.org/s1"]}
        assert (shards["gw#0"].healthy, shards["gw#0"].last_error) == (False, "quota")
        assert shards["ics#0"].cursor == ics_cursor
        assert left == {None}
    finally:
        engine.dispose()


def _legacy_row(
    source_id: str, kind: str, cursor: dict[str, Any], *, healthy: bool, error: str | None
) -> dict[str, Any]:
    return {
        "id": source_id,
        "kind": kind,
        "cursor": cursor,
        "healthy": healthy,
        "last_error": error,
        "last_success_at": NOW,
        "events_dropped": 0,
        "item_errors": [],
        "failures": 0 if healthy else 2,
    }

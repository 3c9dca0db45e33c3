"""What the sync stage promises whatever the provider: resync without loss, no mass
deletion on one sync's word, backoff that honours Retry-After, conference evidence.

A scripted connector plays the provider, so each test states exactly what the calendar
returned; the stage, the database and the session judging are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.connectors.base import CursorExpired, TransientError
from mentorpulse.model import AttendanceEvidence, Attendee, EventRecord, Response, SyncPage
from mentorpulse.stages import sync as sync_stage
from mentorpulse.stages.source_health import stale_sources
from mentorpulse.storage.models import Event, MentoringSession, Source

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MENTOR, MENTEE = "alice@example.org", "bob@example.org"


def meeting(n: int, *, days_ago: int | None = None) -> EventRecord:
    start = NOW - timedelta(days=days_ago if days_ago is not None else 100 - n)
    return EventRecord(
        source_id="cal",
        provider_id=f"m{n}",
        ical_uid=f"uid-{n}@example.org",
        start=start,
        end=start + timedelta(hours=1),
        organizer=MENTOR,
        calendar_owner=MENTOR,
        title="Mentoring",
        attendees=(
            Attendee(MENTOR, Response.ACCEPTED),
            Attendee(MENTEE, Response.ACCEPTED),
        ),
        conference_id=f"meet-{n}",
    )


Step = Callable[[Mapping[str, object] | None], Iterator[SyncPage]]


@dataclass
class ScriptedConnector:
    """Each sync() call runs the next scripted step; records every cursor it was given."""

    steps: list[Step]
    cursors: list[Mapping[str, object] | None] = field(default_factory=list)
    logs: dict[str, list[AttendanceEvidence]] = field(default_factory=dict)
    source_id: str = "cal"

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        self.cursors.append(cursor)
        return self.steps.pop(0)(cursor)

    def attendance_evidence(self, record: EventRecord) -> list[AttendanceEvidence]:
        return self.logs.get(record.provider_id, [])


def pages(*batches: list[EventRecord], deleted: tuple[str, ...] = ()) -> Step:
    def step(_cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            yield SyncPage(
                records=tuple(batch),
                deleted=deleted if last else (),
                cursor={"page": i + 1, "final": last},
            )

    return step


def expire(_cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
    raise CursorExpired("cal", "sync token no longer valid")
    yield  # pragma: no cover - makes this a generator


def fail_after(first: list[EventRecord], error: Exception) -> Step:
    def step(_cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        yield SyncPage(records=tuple(first), cursor={"page": 1, "final": False})
        raise error

    return step


@pytest.fixture
def deployment(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[ScriptedConnector], stages.Context]:
    (tmp_path / "calendars").mkdir()
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\nengineering,{MENTOR},{MENTEE},2025-09-01\n"
    )
    (tmp_path / "mentorpulse.yaml").write_text(
        f"database: {database_url}\n"
        "timezone: Europe/Berlin\n"
        "sources:\n  - id: cal\n    kind: ics\n    path: calendars\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: engineering\n    cadence: {every: 14d, grace: 3d}\n"
        "    rules:\n      - {id: lapsed, kind: cadence_gap, severity: warning}\n"
    )
    clock = {"now": NOW}

    def open_with(connector: ScriptedConnector) -> stages.Context:
        monkeypatch.setattr(sync_stage, "build_connector", lambda *_a, **_k: connector)
        return stages.Context.open(tmp_path / "mentorpulse.yaml", clock=lambda: clock["now"])

    return open_with


def stored_ids(ctx: stages.Context) -> set[str]:
    with ctx.db() as db:
        return set(db.scalars(select(Event.provider_id)))


def source_row(ctx: stages.Context) -> Source:
    with ctx.db() as db:
        source = db.get_one(Source, "cal")
        db.expunge(source)
        return source


def test_expired_cursor_resyncs_and_removes_only_what_vanished(
    deployment: Callable[[ScriptedConnector], stages.Context],
) -> None:
    everything = [meeting(n) for n in range(1, 13)]
    # The last token is rejected; the full listing lacks meeting 12 (deleted meanwhile).
    connector = ScriptedConnector(
        [pages(everything), expire, pages(everything[:6], everything[6:11])]
    )
    ctx = deployment(connector)
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)

    [result] = stages.sync_sources(ctx)

    assert result.ok
    assert result.resynced
    assert connector.cursors[1] == {"page": 1, "final": True}  # the token was tried first
    assert connector.cursors[2] is None  # then a full listing
    assert stored_ids(ctx) == {f"m{n}" for n in range(1, 12)}
    assert source_row(ctx).resync_started_at is None
    stages.rebuild_sessions(ctx)
    with ctx.db() as db:
        # No duplicates, and the past meeting whose event vanished keeps its history.
        assert db.scalar(select(func.count()).select_from(MentoringSession)) == 12


def test_a_resync_interrupted_by_a_failure_resumes_and_deletes_nothing_early(
    deployment: Callable[[ScriptedConnector], stages.Context],
) -> None:
    everything = [meeting(n) for n in range(1, 13)]
    connector = ScriptedConnector(
        [
            pages(everything),
            expire,
            fail_after(everything[:4], TransientError("cal", "connection reset")),
            pages(everything[4:11]),  # resumes from the mid-resync cursor
        ]
    )
    ctx = deployment(connector)
    stages.sync_sources(ctx)

    [failed] = stages.sync_sources(ctx)
    assert not failed.ok
    resyncing = source_row(ctx)
    assert resyncing.resync_started_at is not None  # the half-read state is marked
    with ctx.db() as db:  # and not judged
        assert "full resync" in stale_sources(db, ctx.config, NOW)["cal"]
    assert stored_ids(ctx) == {f"m{n}" for n in range(1, 13)}  # nothing removed yet

    [resumed] = stages.sync_sources(ctx)
    assert resumed.ok
    assert connector.cursors[-1] == {"page": 1, "final": False}
    # Meetings 1-4 were seen before the failure, 5-11 after: only 12 is gone.
    assert stored_ids(ctx) == {f"m{n}" for n in range(1, 12)}
    assert source_row(ctx).resync_started_at is None


def test_a_sync_deleting_most_events_is_held_until_a_second_sync_confirms(
    deployment: Callable[[ScriptedConnector], stages.Context], tmp_path: Path
) -> None:
    everything = [meeting(n) for n in range(1, 21)]
    gone = tuple(f"m{n}" for n in range(1, 16))
    connector = ScriptedConnector(
        [pages(everything), pages([], deleted=gone), pages(everything[15:])]
    )
    ctx = deployment(connector)
    stages.sync_sources(ctx)

    [held] = stages.sync_sources(ctx)
    assert not held.ok
    assert held.held_deletions == 15
    assert "would delete 15 of its 20 events" in (held.error or "")
    assert len(stored_ids(ctx)) == 20  # reported, not applied
    assert not source_row(ctx).healthy
    status = CliRunner().invoke(app, ["status", "--config", str(tmp_path / "mentorpulse.yaml")])
    assert status.exit_code == 1
    assert "cal: this sync would delete 15 of its 20 events" in status.output
    with ctx.db() as db:  # and no pair is judged on it meanwhile
        assert "deletions held" in stale_sources(db, ctx.config, NOW)["cal"]

    [confirmed] = stages.sync_sources(ctx)
    assert connector.cursors[-1] is None  # confirmation is a full listing
    assert confirmed.ok
    assert stored_ids(ctx) == {f"m{n}" for n in range(16, 21)}
    source = source_row(ctx)
    assert source.healthy
    assert source.held_deletions is None
    status = CliRunner().invoke(app, ["status", "--config", str(tmp_path / "mentorpulse.yaml")])
    assert status.exit_code == 0


def test_a_held_deletion_that_the_next_sync_refutes_is_dropped(
    deployment: Callable[[ScriptedConnector], stages.Context],
) -> None:
    everything = [meeting(n) for n in range(1, 21)]
    connector = ScriptedConnector(
        [
            pages(everything),
            pages([], deleted=tuple(f"m{n}" for n in range(1, 21))),
            pages(everything),
        ]
    )
    ctx = deployment(connector)
    stages.sync_sources(ctx)
    stages.sync_sources(ctx)  # the calendar looked empty for a moment

    [back] = stages.sync_sources(ctx)

    assert back.ok
    assert back.deleted == 0
    assert len(stored_ids(ctx)) == 20
    assert source_row(ctx).held_deletions is None


def test_small_deletions_apply_at_once(
    deployment: Callable[[ScriptedConnector], stages.Context],
) -> None:
    everything = [meeting(n) for n in range(1, 21)]
    connector = ScriptedConnector([pages(everything), pages([], deleted=("m1", "m2"))])
    ctx = deployment(connector)
    stages.sync_sources(ctx)

    [result] = stages.sync_sources(ctx)

    assert result.ok
    assert result.deleted == 2
    assert len(stored_ids(ctx)) == 18


def test_failures_back_off_and_honour_retry_after(
    deployment: Callable[[ScriptedConnector], stages.Context],
) -> None:
    connector = ScriptedConnector(
        [
            fail_after([], TransientError("cal", "429 Too Many Requests", retry_after=900)),
            pages([meeting(1)]),
        ]
    )
    ctx = deployment(connector)
    [failed] = stages.sync_sources(ctx, respect_backoff=True)
    assert failed.waiting_until is not None
    assert failed.waiting_until >= NOW + timedelta(seconds=900)

    [waiting] = stages.sync_sources(ctx, respect_backoff=True)  # the daemon waits
    assert waiting.pages == 0
    assert len(connector.steps) == 1

    [forced] = stages.sync_sources(ctx)  # an operator's `sync --once` tries at once
    assert forced.ok
    source = source_row(ctx)
    assert source.failures == 0
    assert source.next_attempt_at is None


@pytest.mark.parametrize(
    ("mentee_seconds", "outcome", "deciding"),
    [(45 * 60, "held", "joined"), (0, "missed", "no_show"), (90, "missed", "no_show")],
)
def test_conference_logs_turn_presumed_held_into_held_or_missed(
    deployment: Callable[[ScriptedConnector], stages.Context],
    mentee_seconds: int,
    outcome: str,
    deciding: str,
) -> None:
    from mentorpulse.storage.models import Evidence

    connector = ScriptedConnector([pages([meeting(1, days_ago=2)])])
    ctx = deployment(connector)
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    with ctx.db() as db:
        assert db.scalar(select(MentoringSession.outcome)) == "presumed_held"

    connector.logs["m1"] = [AttendanceEvidence("m1", MENTOR, 50 * 60, system="google_meet")]
    if mentee_seconds:
        connector.logs["m1"].append(
            AttendanceEvidence("m1", MENTEE, mentee_seconds, system="google_meet")
        )
    assert sync_stage._collect_attendance(ctx, connector, "cal", NOW) == 1
    stages.rebuild_sessions(ctx)

    with ctx.db() as db:
        assert db.scalar(select(MentoringSession.outcome)) == outcome
        first = db.scalars(select(Evidence).order_by(Evidence.rank)).first()
        assert first is not None
        assert first.kind == deciding
        if outcome == "missed":
            assert first.party == MENTEE
    # Asked again within the hour: nothing is re-read.
    assert sync_stage._collect_attendance(ctx, connector, "cal", NOW) == 0

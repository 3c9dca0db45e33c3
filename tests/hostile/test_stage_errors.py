"""An error no connector typed (a database refusal, a library's surprise) costs its source
one failed sync, never the sources after it, and ``status`` says so."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError
from structlog.testing import capture_logs
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.stages import sync as sync_stage
from mentorpulse.storage import events
from mentorpulse.storage.models import Event, Source

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MENTOR, MENTEE = "alice@example.org", "bob@example.org"
LEAK = "S3CR3T-from-the-calendar"


def _meeting(uid: str, day: datetime) -> str:
    stamp = day.strftime("%Y%m%dT%H%M%SZ")
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTART:{stamp}\r\nDURATION:PT1H\r\nORGANIZER:mailto:{MENTOR}\r\n"
        f"ATTENDEE:mailto:{MENTEE}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.ics").write_text(_meeting(name, NOW - timedelta(days=3)))
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\nengineering,{MENTOR},{MENTEE},2025-09-01\n"
    )
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(
        f"database: {database_url}\n"
        "sources:\n"
        "  - {id: first, kind: ics, path: first}\n"
        "  - {id: second, kind: ics, path: second}\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: engineering\n    cadence: {every: 14d, grace: 3d}\n"
        "    rules:\n      - {id: lapsed, kind: cadence_gap, severity: warning}\n"
    )
    return path


def _refuse_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The database refuses the first source's page, quoting the value, as PostgreSQL does."""
    real = events.store_page

    def store_page(db: Any, source: Source, *args: Any, **kwargs: Any) -> Any:
        if source.id == "first":
            raise DataError(f"INSERT INTO events … '{LEAK}'", {"uid": LEAK}, ValueError(LEAK))
        return real(db, source, *args, **kwargs)

    monkeypatch.setattr(events, "store_page", store_page)


def test_an_untyped_error_fails_its_source_only_and_status_says_so(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse_first(monkeypatch)
    ctx = stages.Context.open(config, clock=lambda: NOW)
    with capture_logs() as logs:
        first, second = stages.sync_sources(ctx)
        stages.sync_sources(ctx)  # still failing: not logged again

    assert not first.ok
    assert second.ok
    assert first.error is not None
    assert "unexpected DataError" in first.error
    with ctx.db() as db:
        rows = {s.id: s for s in db.scalars(select(Source))}
        stored = set(db.scalars(select(Event.source_id)))
    assert stored == {"second"}  # the source after the failing one was read
    assert not rows["first"].healthy
    assert rows["second"].healthy
    assert rows["first"].last_error == first.error
    assert rows["first"].next_attempt_at is not None  # backs off like any failure
    failures = [e for e in logs if e["event"] == "source_failed"]
    assert [e["source"] for e in failures] == ["first"]
    assert LEAK not in repr(logs)
    assert LEAK not in (rows["first"].last_error or "")

    status = CliRunner().invoke(app, ["status", "--config", str(config)])
    assert status.exit_code == 1
    assert "first: unexpected DataError" in status.output
    assert LEAK not in status.output


def test_an_error_raised_by_a_connector_itself_is_one_failed_source(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sync_stage.build_connector

    class Surprised:
        source_id = "first"

        def sync(self, cursor: object) -> Iterator[object]:
            raise KeyError(LEAK)

    def build(source_config: Any, **kwargs: Any) -> Any:
        return Surprised() if source_config.id == "first" else real(source_config, **kwargs)

    monkeypatch.setattr(sync_stage, "build_connector", build)
    ctx = stages.Context.open(config, clock=lambda: NOW)
    first, second = stages.sync_sources(ctx)
    assert not first.ok
    assert second.ok
    assert first.error is not None
    assert "unexpected KeyError" in first.error
    assert LEAK not in first.error

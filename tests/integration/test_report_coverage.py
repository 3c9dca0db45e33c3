"""A report for days the calendars were never read says so, in the file and on stderr.

The deployment reads one folder source 30 days back; the report command runs for real
(CLI, store, sync stage) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from click.testing import Result
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
MENTOR, MENTEE = "ana@example.org", "ben@example.org"


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Path:
    (tmp_path / "calendars").mkdir()
    start = (NOW - timedelta(days=10)).strftime("%Y%m%dT%H%M%SZ")
    end = (NOW - timedelta(days=10) + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    (tmp_path / "calendars" / f"{MENTOR}.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:m1@example.org\r\nDTSTAMP:{start}\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
        f"ORGANIZER:mailto:{MENTOR}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTEE}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2025-12-01\n"
    )
    config = tmp_path / "mentorpulse.yaml"
    config.write_text(
        f"database: {database_url}\n"
        "timezone: Europe/Berlin\n"
        "sources:\n  - {id: cal, kind: ics, path: calendars, window_past: 30d}\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: eng\n    cadence: {every: 14d}\n"
    )
    return config


def sync(config: Path) -> None:
    ctx = stages.Context.open(config, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
    finally:
        ctx.engine.dispose()


def report(config: Path, first: str, out: Path) -> Result:
    fmt = out.suffix.removeprefix(".")
    args = ["report", "--config", str(config), "--from", first, "--to", "2026-03-19"]
    with time_machine.travel(NOW, tick=False):
        result = CliRunner().invoke(app, [*args, "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result


def test_a_range_before_the_window_warns_in_the_file_and_on_stderr(
    deployment: Path, tmp_path: Path
) -> None:
    sync(deployment)
    # Read 30 days back from 2026-03-20 12:00 UTC: from 2026-02-18 13:00 in Berlin.
    result = report(deployment, "2026-01-01", tmp_path / "r.csv")
    assert "warning: Incomplete: the calendars are read from 2026-02-18 13:00 on" in (result.stderr)
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["attended"] == "1"
    assert row["note"].startswith("Incomplete: the calendars are read from 2026-02-18 13:00 on")
    assert "starts on 2026-01-01" in row["note"]

    result = report(deployment, "2026-01-01", tmp_path / "r.html")
    assert "Incomplete" in result.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<p class="note" role="alert">Incomplete: the calendars are read from' in page


def test_a_range_the_sources_cover_has_no_warning(deployment: Path, tmp_path: Path) -> None:
    sync(deployment)
    result = report(deployment, "2026-02-19", tmp_path / "r.csv")
    assert "Incomplete" not in result.stderr
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as stream:
        (row,) = list(csv.DictReader(stream))
    assert (row["attended"], row["note"]) == ("1", "")


def test_a_source_never_read_makes_every_report_incomplete(
    deployment: Path, tmp_path: Path
) -> None:
    upgraded = CliRunner().invoke(app, ["db", "upgrade", "--config", str(deployment)])
    assert upgraded.exit_code == 0, upgraded.output  # report reads, it does not migrate
    result = report(deployment, "2026-03-01", tmp_path / "r.csv")
    assert "source cal has not been read yet" in result.stderr
    assert "mentorpulse sync --once" in result.stderr

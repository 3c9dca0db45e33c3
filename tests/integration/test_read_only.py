"""Commands that only read (report, explain, status, rules test, outbox list, silence list,
config check) neither migrate nor write: the database is the same after them, and a
database whose schema is behind is named with the next step, not upgraded."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import time_machine
import yaml
from sqlalchemy import Engine, create_engine, func, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner, Result

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.sample import write_demo
from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.migrate import revision_state, upgrade

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
PREVIOUS_REVISION = "rules"
SECRET = "s3cret-pw"  # the one before the newest, job_run_errors


def cli(config: Path, *args: str) -> Result:
    with time_machine.travel(NOW, tick=False):
        return CliRunner().invoke(app, [*args, "--config", str(config)])


def demo_config(folder: Path, database_url: str) -> Path:
    """The demo organisation, its config pointing at ``database_url``."""
    write_demo(folder, today=TODAY)
    config_file = folder / "mentorpulse.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["database"] = database_url
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def first_pair(folder: Path) -> str:
    with (folder / "roster.csv").open(newline="", encoding="utf-8") as stream:
        row = next(csv.DictReader(stream))
    return f"{row['mentor_email']}:{row['mentee_email']}"


def edit_roster(folder: Path) -> str:
    """The operator's edit after the last writing run: the last pair leaves the roster
    and a new pair joins it (the new pair, MENTOR:MENTEE)."""
    path = folder / "roster.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    mentor, mentee = first_pair(folder).split(":")
    joined = lines[1].replace(mentee, "new.mentee@demo.example")
    path.write_text("\n".join([*lines[:-1], joined]) + "\n", encoding="utf-8")
    return f"{mentor}:new.mentee@demo.example"


def row_counts(engine: Engine) -> dict[str, int]:
    """Every table with its number of rows."""
    with engine.connect() as connection:
        return {
            name: connection.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in inspect(connection).get_table_names()
        }


def snapshot(database_url: str) -> tuple[tuple[object, ...], dict[str, int]]:
    """What a write would change: the tables and their rows; on SQLite also the file's
    bytes and modification time (read before any connection of ours opens it)."""
    file_state: tuple[object, ...] = ()
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        file_state = (path.read_bytes(), path.stat().st_mtime_ns)
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        url = database_url
    engine = create_engine(url)
    try:
        return file_state, row_counts(engine)
    finally:
        engine.dispose()


READ_ONLY = [
    ("status",),
    ("report", "--from", "2026-08-01", "--to", "2026-11-23"),
    ("explain", "PAIR"),
    ("rules", "test"),
    ("outbox", "list"),
    ("silence", "list"),
    ("config", "check"),
]


def test_read_only_commands_leave_the_database_as_it_was(tmp_path: Path, database_url: str) -> None:
    config = demo_config(tmp_path, database_url)
    for command in (("sync", "--once"), ("evaluate",), ("notify",)):
        result = cli(config, *command)
        assert result.exit_code == 0, (command, result.output)
    pair = first_pair(tmp_path)
    joined = edit_roster(tmp_path)  # what a writing command would now write
    before = snapshot(database_url)
    assert before[1]["outbox"] > 0, "the demo has queued emails"
    assert before[1]["sessions"] > 0, "the demo has sessions"
    for command in READ_ONLY:
        args = [pair if a == "PAIR" else a for a in command]
        result = cli(config, *args)
        assert result.exit_code == 0, (command, result.output)
        assert snapshot(database_url) == before, f"{' '.join(command)} changed the database"

    result = cli(config, "explain", joined)  # read from the database: not there yet
    assert result.exit_code == 1, result.output
    assert "is in the roster but not yet in the database: run `mentorpulse evaluate`" in (
        result.output
    )
    assert snapshot(database_url) == before


def test_a_schema_behind_is_named_with_the_upgrade_step_and_left_alone(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):  # the server trusts us: any password will do
        database_url = make_url(database_url).set(password=SECRET).render_as_string(False)
    config = demo_config(tmp_path, database_url)
    engine = make_engine(database_url)
    try:
        upgrade(engine, PREVIOUS_REVISION)
    finally:
        engine.dispose()
    before = snapshot(database_url)
    for command in (
        ("status",),
        ("report", "--from", "2026-11-01", "--to", "2026-11-23"),
        ("config", "check"),
    ):
        result = cli(config, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "run `mentorpulse db upgrade`" in result.output
        assert f"schema revision {PREVIOUS_REVISION}" in result.output
        assert "Traceback" not in result.output
        assert SECRET not in result.output
        assert database_url.startswith("sqlite") or ":***@" in result.output
        assert snapshot(database_url) == before, f"{' '.join(command)} changed the database"

    result = cli(config, "sync", "--once")  # a writing command still migrates
    assert result.exit_code == 0, result.output
    engine = make_engine(database_url)
    try:
        current, head = revision_state(engine)
    finally:
        engine.dispose()
    assert current == head != PREVIOUS_REVISION


@pytest.mark.parametrize("command", [c for c in READ_ONLY if c[0] != "config"])
def test_a_database_not_there_yet_is_not_created(tmp_path: Path, command: tuple[str, ...]) -> None:
    database = tmp_path / "mentorpulse.db"
    config = demo_config(tmp_path, f"sqlite:///{database}")
    args = [first_pair(tmp_path) if a == "PAIR" else a for a in command]
    result = cli(config, *args)
    assert result.exit_code == 2, result.output
    assert f"database sqlite:///{database} does not exist yet" in result.output
    assert "run `mentorpulse db upgrade`" in result.output
    assert not database.exists()


def test_the_database_refuses_a_write_through_a_read_only_context(
    tmp_path: Path, database_url: str
) -> None:
    """A read that would write (a future change to a read-only command) fails loudly."""
    config = demo_config(tmp_path, database_url)
    assert cli(config, "sync", "--once").exit_code == 0
    edit_roster(tmp_path)
    before = snapshot(database_url)
    ctx = stages.Context.open(config, write=False)
    try:
        with pytest.raises(DBAPIError):
            ctx.apply_roster()
    finally:
        ctx.engine.dispose()
    assert snapshot(database_url) == before

"""The command line as an operator meets it: help, clear errors, the daemon's lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mentorpulse.cli import app
from mentorpulse.daemon import jobs, lease, runner
from mentorpulse.demo import write_demo
from mentorpulse.errors import UserError
from mentorpulse.storage.models import JobRun

REPO = Path(__file__).resolve().parents[2]
cli = CliRunner()


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


def test_every_command_has_help() -> None:
    """Walks the whole command tree, so a new command without help text fails here."""
    root = typer.main.get_command(app)
    paths = list(_command_paths(root))
    assert ("config", "check") in paths
    assert ("auth", "key") in paths
    for path in paths:
        result = cli.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Usage" in result.output
        command = root
        for name in path:
            command = command.commands[name]
        assert (command.help or "").strip(), f"no help text: mentorpulse {' '.join(path)}"
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert (param.help or "").strip(), f"no help: {' '.join(path)} {param.opts}"


def test_auth_key_prints_a_usable_key_alone_on_stdout(tmp_path: Path) -> None:
    from mentorpulse.credentials import TokenStore

    result = subprocess.run(
        [sys.executable, "-m", "mentorpulse", "auth", "key"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = result.stdout.strip()
    assert "\n" not in key
    assert "MENTORPULSE_SECRET_KEY" in result.stderr
    TokenStore(tmp_path / "t.json", key=key).save("x", "secret")
    assert TokenStore(tmp_path / "t.json", key=key).load("x") == "secret"


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mentorpulse", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_a_bad_config_is_one_message_per_problem_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "mentorpulse.yaml"
    config.write_text(
        "programs:\n  - id: eng\n    cadence:\n      every: fortnightly\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "mentorpulse", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{config}:4: programs[0].cadence.every: expected a duration like 14d" in result.stderr


def test_config_check_accepts_the_example_config() -> None:
    result = cli.invoke(app, ["config", "check", "--config", str(REPO / "config/mentorpulse.yaml")])
    assert result.exit_code == 0, result.output
    assert "3 pairings" in result.output


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORPULSE_CONFIG", str(tmp_path / "nowhere.yaml"))
    result = cli.invoke(app, ["config", "check"])
    assert result.exit_code == 2
    assert "nowhere.yaml" in result.output


def test_report_rejects_a_bad_date(tmp_path: Path) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    result = cli.invoke(
        app,
        ["report", "--config", str(tmp_path / "mentorpulse.yaml"), "--from", "23/11", "--to", "x"],
    )
    assert result.exit_code == 2
    assert "--from: expected a date like 2026-01-31" in result.output


def test_schema_lists_rule_kinds() -> None:
    result = cli.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    assert "cadence_gap" in result.output


def test_a_second_daemon_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    ctx = jobs.Context.open(tmp_path / "mentorpulse.yaml")
    now = datetime.now(UTC)
    assert lease.acquire(
        ctx.sessions, runner.DAEMON_LEASE, "other-host:42", ttl=runner.LEASE_TTL, now=now
    ).acquired
    with pytest.raises(
        UserError, match="another mentorpulse daemon \\(other-host:42\\)"
    ) as refused:
        runner.run_daemon(ctx)
    assert refused.value.code == runner.LEASE_HELD_EXIT


def test_a_restart_neither_repeats_nor_skips_a_job(tmp_path: Path) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    ctx = jobs.Context.open(tmp_path / "mentorpulse.yaml", clock=lambda: now)
    every = timedelta(minutes=15)
    assert runner.first_run_at(ctx, "evaluate", every) == now, "never ran: due at once"
    with ctx.sessions.begin() as db:
        db.add(JobRun(name="evaluate", last_run_at=now - timedelta(minutes=5)))
    assert runner.first_run_at(ctx, "evaluate", every) == now + timedelta(minutes=10)
    with ctx.sessions.begin() as db:
        db.get_one(JobRun, "evaluate").last_run_at = now - timedelta(hours=3)
    assert runner.first_run_at(ctx, "evaluate", every) == now, "overdue: once, now"


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    write_demo(tmp_path, today=datetime.now(UTC).date())
    env = {**os.environ, "MENTORPULSE_CONFIG": str(tmp_path / "mentorpulse.yaml")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "mentorpulse", "--log-json", "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert daemon.stderr is not None
    try:
        for line in daemon.stderr:
            if '"rules_evaluated"' in line:  # the first stages have run
                break
        daemon.send_signal(signal.SIGTERM)
        rest = daemon.communicate(timeout=60)[1]
    finally:
        daemon.kill()
    assert daemon.returncode == 0, rest
    assert '"daemon_stopped"' in rest
    ctx = jobs.Context.open(tmp_path / "mentorpulse.yaml")
    assert lease.acquire(
        ctx.sessions, runner.DAEMON_LEASE, "next:1", ttl=runner.LEASE_TTL, now=datetime.now(UTC)
    ).acquired, "the lease was released"


def test_help_does_not_load_the_database_stack() -> None:
    """`mentorpulse --help` (and shell completion) must not pay for SQLAlchemy, Alembic …"""
    heavy = "('sqlalchemy', 'alembic', 'icalendar')"
    probe = f"import sys, mentorpulse.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

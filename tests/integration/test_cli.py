"""The command line as an operator meets it: help, clear errors, the daemon's lifecycle."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.errors import UserError
from mentorpulse.sample import write_demo
from mentorpulse.service import lease, runner
from mentorpulse.storage.models import JobRun
from tests.integration.test_daemon import _wait
from tests.loaded_modules import loaded_by
from tests.service_support import RunProcess

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
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml")
    now = datetime.now(UTC)
    assert lease.acquire(
        ctx.db, runner.DAEMON_LEASE, "other-host:42", ttl=runner.LEASE_TTL, now=now
    ).acquired
    with pytest.raises(
        UserError, match="another mentorpulse daemon \\(other-host:42\\)"
    ) as refused:
        runner.run_daemon(ctx)
    assert refused.value.code == runner.LEASE_HELD_EXIT


class _Runs:
    """Counts each stage the daemon runs, and stops the daemon once ``until`` holds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts = {"evaluate": 0, "notify": 0}
        self.stop = threading.Event()
        self.until: Callable[[dict[str, int]], bool] = lambda _counts: False
        evaluate, notify = runner.pipeline, stages.send_notifications

        def counted(name: str, stage: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any, **kwargs: Any) -> Any:
                result = stage(*args, **kwargs)
                self.counts[name] += 1
                if self.until(self.counts):
                    self.stop.set()
                return result

            return run

        monkeypatch.setattr(runner, "pipeline", counted("evaluate", evaluate))
        monkeypatch.setattr(stages, "send_notifications", counted("notify", notify))

    def daemon(
        self, config: Path, only: set[str], until: Callable[[dict[str, int]], bool]
    ) -> dict[str, int]:
        """Start a daemon (a fresh Context on the same database), run it until ``until``
        holds (60 s at most), stop it; the counts so far."""
        self.stop.clear()
        self.until = until
        bound = threading.Timer(60, self.stop.set)
        bound.start()
        try:
            runner.run_daemon(stages.Context.open(config), only=only, stop=self.stop)
        finally:
            bound.cancel()
        assert until(self.counts), f"the daemon stopped after 60 s with {self.counts}"
        return dict(self.counts)


def test_a_restart_neither_repeats_nor_skips_a_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three daemons one after another on one database: a job is run when due, once."""
    write_demo(tmp_path, today=date(2026, 11, 23))
    config = tmp_path / "mentorpulse.yaml"
    runs = _Runs(monkeypatch)

    # The first daemon ever: evaluate has never run, so it is due at once.
    assert runs.daemon(config, {"evaluate"}, lambda n: n["evaluate"] >= 1) == {
        "evaluate": 1,
        "notify": 0,
    }
    # Restarted a moment later: notify (never run) is due at once, and is run; evaluate
    # ran minutes ago, its 15 minutes are not over, and it is not run again.
    assert runs.daemon(config, {"evaluate", "notify"}, lambda n: n["notify"] >= 1) == {
        "evaluate": 1,
        "notify": 1,
    }
    # Stopped for three hours (twelve evaluate intervals): evaluate is overdue, so the
    # next daemon runs it at once, and once; notify's last run is as recent as before.
    ctx = stages.Context.open(config)
    with ctx.db.begin() as db:
        for row in db.scalars(select(JobRun).where(JobRun.name == "evaluate")):
            row.last_run_at -= timedelta(hours=3)
    assert runs.daemon(config, {"evaluate", "notify"}, lambda n: n["evaluate"] >= 2) == {
        "evaluate": 2,
        "notify": 1,
    }


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    write_demo(tmp_path, today=datetime.now(UTC).date())
    daemon = RunProcess(tmp_path / "mentorpulse.yaml")  # its log is read with a bound
    try:
        ran = '"rules_evaluated"'  # the first stages have run
        assert _wait(lambda: ran in daemon.log or daemon.process.poll() is not None, 120)
        assert ran in daemon.log, daemon.log[-2000:]
    finally:
        daemon.stop()  # SIGTERM; killed if still running after a bound
    assert daemon.process.returncode == 0, daemon.log[-2000:]
    assert '"daemon_stopped"' in daemon.log
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml")
    assert lease.acquire(
        ctx.db, runner.DAEMON_LEASE, "next:1", ttl=runner.LEASE_TTL, now=datetime.now(UTC)
    ).acquired, "the lease was released"


def test_help_does_not_load_the_database_stack() -> None:
    """`mentorpulse --help` (and shell completion) must not pay for SQLAlchemy, Alembic …"""
    heavy = "('sqlalchemy', 'alembic', 'icalendar')"
    probe = f"import sys, mentorpulse.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_sync_help_does_not_load_the_database_stack() -> None:
    heavy = ("sqlalchemy", "alembic", "icalendar", "cryptography", "apscheduler", "exchangelib")
    assert loaded_by(["sync", "--help"], heavy) == (0, [])


def test_a_sync_with_nothing_to_do_loads_only_what_it_uses(tmp_path: Path) -> None:
    """A one-shot sync on an up-to-date database runs no migration and loads neither the
    other stages (notify's templates, reports), the rule kinds, the daemon's scheduler,
    the token cipher nor, its folder unchanged, an iCalendar parser; the first one, on an
    empty database, creates the schema with Alembic."""
    write_demo(tmp_path, today=date(2026, 11, 23))
    command = ["sync", "--once", "--config", str(tmp_path / "mentorpulse.yaml")]
    unused = (
        "alembic",
        "apscheduler",
        "cryptography",
        "jinja2",
        "mentorpulse.notify",
        "mentorpulse.reports",
        "mentorpulse.stages.evaluate",
        "exchangelib",  # only an exchange source loads it
        "mentorpulse.rules.kinds",  # the config's selectors are checked without them
        "icalendar",  # unchanged files are hashed, not parsed
        "recurring_ical_events",
        "rich.progress",  # no terminal: log lines, no bar
    )
    assert loaded_by(command, ("alembic",)) == (0, ["alembic"])  # a new database: migrate
    assert loaded_by(command, unused) == (0, [])

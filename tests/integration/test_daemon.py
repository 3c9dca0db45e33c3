"""The daemon against a second process: one runs, the other refuses or takes over from
a dead one; and ``status`` never says ok while a stage is failing."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.sample import write_demo
from mentorpulse.service import lease, runner
from mentorpulse.storage.migrate import HEAD_REVISION
from mentorpulse.storage.models import JobRun, Lease, MentoringSession, Pairing
from tests.service_support import RunProcess

cli = CliRunner()
WAIT = 45.0  # seconds: a start (imports, migrations, roster) on a loaded 2-core machine
REFUSAL = re.compile(
    r"error: another mentorpulse daemon \((?P<holder>[^)]+)\) is running on this database; "
    r"its lease expires at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \(in (?P<seconds>\d+) s\) "
    r"unless it renews it; its process (?P<pid>\d+) is alive on this host"
)


def _config(folder: Path, database: str) -> Path:
    write_demo(folder, today=datetime.now(UTC).date())
    path = folder / "mentorpulse.yaml"
    yaml = path.read_text()
    path.write_text(re.sub(r"(?m)^database:.*$", f"database: {database}", yaml, count=1))
    return path


def _empty(database: str) -> None:
    """Make the database as fresh as a new one (every run of the race starts from nothing)."""
    url = make_url(database)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)
        return
    engine = create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _wait(condition: object, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


RUNS = 5


def test_two_daemons_started_together_one_runs_the_other_refuses(
    tmp_path: Path, daemons: list[RunProcess]
) -> None:
    """Embedded mode (SQLite): one process per database. (On PostgreSQL `run` starts a
    worker of the pool instead: tests/integration/test_pool.py.)"""
    database_url = f"sqlite:///{tmp_path / 'mentorpulse.db'}"
    config = _config(tmp_path, database_url)
    tally = {"runs": 0, "crashes": 0, "doubles": 0}
    for _run in range(RUNS):
        _empty(database_url)
        pair = [RunProcess(config), RunProcess(config)]
        daemons.extend(pair)
        assert _wait(lambda pair=pair: all(d.settled() for d in pair)), [d.log for d in pair]
        tally["runs"] += 1
        running = [d for d in pair if d.process.poll() is None]
        gone = [d for d in pair if d.process.poll() is not None]
        tally["doubles"] += len(running) > 1
        tally["crashes"] += any(
            "Traceback" in d.log or d.process.returncode not in (None, 3) for d in pair
        )
        assert len(running) == 1, [d.log for d in pair]
        (loser,) = gone
        assert loser.process.returncode == runner.LEASE_HELD_EXIT, loser.log
        assert "Traceback" not in loser.log, loser.log
        refusal = REFUSAL.search(loser.log)
        assert refusal, loser.log
        assert refusal["holder"] == f"{socket.gethostname()}:{running[0].process.pid}"
        assert int(refusal["pid"]) == running[0].process.pid
        assert 0 < int(refusal["seconds"]) <= runner.LEASE_TTL.total_seconds()
        for daemon in pair:
            daemon.stop()
        assert running[0].process.returncode == 0, running[0].log
    print(f"double start on {make_url(database_url).get_backend_name()}: {tally}")
    assert tally == {"runs": RUNS, "crashes": 0, "doubles": 0}


@pytest.mark.parametrize("form", ["host:pid", "host:pid/space"])
def test_a_daemon_takes_over_at_once_from_a_dead_holder_on_this_host(
    form: str, tmp_path: Path, daemons: list[RunProcess]
) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'mentorpulse.db'}")
    ctx = stages.Context.open(config)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    )
    pid = int(finished.stdout)
    dead = lease.holder_name(pid) if form == "host:pid/space" else f"{socket.gethostname()}:{pid}"
    now = datetime.now(UTC)
    assert lease.acquire(
        ctx.db, runner.DAEMON_LEASE, dead, ttl=timedelta(hours=1), now=now
    ).acquired
    daemon = RunProcess(config)
    daemons.append(daemon)
    assert _wait(daemon.settled), daemon.log
    assert daemon.started.is_set(), daemon.log
    taken = [json.loads(line) for line in daemon.lines if '"lease_taken_over"' in line]
    assert [t["dead_holder"] for t in taken] == [dead], daemon.log
    with ctx.db() as db:
        holder = db.get_one(Lease, runner.DAEMON_LEASE).holder
    assert lease.display(holder) == f"{socket.gethostname()}:{daemon.process.pid}"
    _code, output = _status(config)
    assert f"daemon: {socket.gethostname()}:{daemon.process.pid} (its lease runs out in" in output
    ctx.engine.dispose()


def test_a_live_holder_on_this_host_is_not_taken_over(tmp_path: Path) -> None:
    """The test process itself is alive: a daemon started now refuses."""
    write_demo(tmp_path, today=date(2026, 11, 23))
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml")
    alive = lease.holder_name(os.getppid())
    lease.acquire(ctx.db, runner.DAEMON_LEASE, alive, ttl=runner.LEASE_TTL, now=datetime.now(UTC))
    state = lease.acquire(
        ctx.db,
        runner.DAEMON_LEASE,
        lease.holder_name(),
        ttl=runner.LEASE_TTL,
        now=datetime.now(UTC),
    )
    assert (state.acquired, state.holder) == (False, alive)


def _status(config: Path) -> tuple[int, str]:
    done = cli.invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "400"})
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    return done.exit_code, done.output


def test_status_names_a_failing_stage_until_it_succeeds_again(tmp_path: Path) -> None:
    """A session row this version cannot read (written by a newer one, or edited by hand)
    makes the rules stage raise: the one-shot command and the daemon's job both record it,
    `status` exits 1 naming the stage and the error, and a good run clears it."""
    write_demo(tmp_path, today=datetime.now(UTC).date())
    config = tmp_path / "mentorpulse.yaml"
    assert cli.invoke(app, ["sync", "--once", "--config", str(config)]).exit_code == 0
    assert cli.invoke(app, ["evaluate", "--config", str(config)]).exit_code == 0
    code, output = _status(config)
    assert code == 0, output

    ctx = stages.Context.open(config)
    with ctx.db.begin() as db:
        # One still ahead: evaluation reads it whatever the rules' lookbacks.
        ahead = MentoringSession.end > datetime.now(UTC) + timedelta(days=1)
        broken = db.scalars(select(MentoringSession.id).where(ahead).limit(1)).one()
        outcome = db.get_one(MentoringSession, broken).outcome
        db.execute(
            update(MentoringSession).where(MentoringSession.id == broken).values(outcome="bogus")
        )
        pairing = db.get_one(MentoringSession, broken).pairing_id
        db.execute(update(Pairing).where(Pairing.id == pairing).values(sessions_changed=True))

    failed = cli.invoke(app, ["evaluate", "--config", str(config)])
    assert failed.exit_code != 0
    assert isinstance(failed.exception, KeyError)
    code, output = _status(config)
    assert code == 1, output
    assert re.search(
        r"stage evaluate: its last run failed \(\d+s ago\): unexpected KeyError while running "
        r"evaluate at \w+\.py:\d+",
        output,
    ), output

    job = runner._guarded(ctx, "evaluate", lambda: runner.pipeline(ctx))
    with capture_logs() as logs:
        job()  # the daemon's job: recorded, logged, never raised into the ticker
    # Already failing (the command's run): one line, not a second traceback.
    assert [e["event"] for e in logs if e["event"].startswith("job_")] == ["job_still_failing"]
    assert all("bogus" not in str(e) for e in logs), "the error's text (data) is not logged"
    code, output = _status(config)
    assert code == 1, output

    with ctx.db.begin() as db:
        db.execute(
            update(MentoringSession).where(MentoringSession.id == broken).values(outcome=outcome)
        )
    with capture_logs() as logs:
        job()
    assert [e["event"] for e in logs if e["event"].startswith("job_")] == ["job_recovered"]
    code, output = _status(config)
    assert code == 0, output
    assert "stage evaluate" not in output
    assert re.search(r"evaluate +│ ok .*unexpected KeyError", output), "the last error stays"
    ctx.engine.dispose()


def test_two_db_upgrades_at_once_both_succeed(database_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, database_url)
    env = {**os.environ, "MENTORPULSE_CONFIG": str(config)}
    upgrades = [
        subprocess.Popen(
            [sys.executable, "-m", "mentorpulse", "db", "upgrade"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=WAIT)[0] for p in upgrades]
    finally:
        for p in upgrades:
            p.kill()
    assert [p.returncode for p in upgrades] == [0, 0], outputs
    assert all(f"schema at revision {HEAD_REVISION}" in o for o in outputs), outputs


def test_a_daemon_unsure_of_its_lease_starts_no_job(tmp_path: Path) -> None:
    """Its database unreachable past the renewal margin, another daemon may take over:
    this one's jobs wait instead of running beside it."""
    write_demo(tmp_path, today=date(2026, 11, 23))
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml")
    ran: list[str] = []
    runner._guarded(ctx, "evaluate", lambda: ran.append("evaluate"), held=lambda: False)()
    assert ran == []
    runner._guarded(ctx, "evaluate", lambda: ran.append("evaluate"), held=lambda: True)()
    assert ran == ["evaluate"]
    with ctx.db() as db:
        assert db.scalars(select(JobRun.name).where(JobRun.name == "evaluate")).all() == [
            "evaluate"
        ]


def test_a_daemon_is_sure_of_its_lease_only_with_a_heartbeat_to_spare(tmp_path: Path) -> None:
    write_demo(tmp_path, today=date(2026, 11, 23))
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml", clock=lambda: now)
    held = runner._Lease(ctx, lease.holder_name())
    assert not held.sure(), "not taken yet"
    assert held.renew().acquired
    assert held.sure()
    now += runner.LEASE_TTL - runner.HEARTBEAT  # renewals failed since: another may take over
    assert not held.sure()


def test_status_exits_1_while_a_source_is_failing(tmp_path: Path) -> None:
    """The source half of the same promise: a sync that fails marks its source, and
    `status` exits 1 with the source id and the error until a sync succeeds."""
    write_demo(tmp_path, today=datetime.now(UTC).date())
    config = tmp_path / "mentorpulse.yaml"
    (tmp_path / "calendars").rename(tmp_path / "away")
    assert cli.invoke(app, ["sync", "--once", "--config", str(config)]).exit_code == 1
    code, output = _status(config)
    assert code == 1, output
    assert re.search(r"demo-calendars: .*calendars", output), output
    (tmp_path / "away").rename(tmp_path / "calendars")
    assert cli.invoke(app, ["sync", "--once", "--config", str(config)]).exit_code == 0
    code, output = _status(config)
    assert code == 0, output


def _together(config: Path, *command: str) -> list[subprocess.CompletedProcess[str]]:
    """The same command in two processes started at once, both waited for (bounded)."""
    env = {**os.environ, "MENTORPULSE_CONFIG": str(config)}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "mentorpulse", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=2 * WAIT) for p in started]
        return [
            subprocess.CompletedProcess(p.args, p.returncode, out, err)
            for p, (out, err) in zip(started, outputs, strict=True)
        ]
    finally:
        for p in started:
            p.kill()


def test_a_sync_or_evaluate_beside_another_waits_its_turn(
    database_url: str, tmp_path: Path
) -> None:
    """A daemon's job and an operator's command on the same source or stage: neither
    crashes on the other's new rows, and the work is done once."""
    config = _config(tmp_path, database_url)
    for _round in range(2):
        _empty(database_url)
        for command in (("sync", "--once"), ("evaluate",)):
            done = _together(config, *command)
            assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
            assert not any("Traceback" in d.stderr for d in done)
        ctx = stages.Context.open(config)
        with ctx.db() as db:
            keys = db.execute(select(MentoringSession.pairing_id, MentoringSession.key)).all()
        ctx.engine.dispose()
        assert keys, "sessions were judged"
        assert len(keys) == len(set(keys))

"""Throughput of the worker pool at 1, 2 and 3 workers: the organisation's calendars
served by the Google fake (its Google-shaped fixtures), synced by `mentorpulse run`
workers on one PostgreSQL database; calendars per second for a first sync and for a
poll where nothing changed.

Run as ``python -m bench.pool [--scale medium] [--calendars N] [--workers 1,2,3]``.

Each worker is a real `mentorpulse run` process (concurrency 1: one shard at a time). A
round starts when every worker is up and idle: the shards' last runs are moved back past
their poll interval, the next tick defers them all, and the round ends when every shard
has recorded its run. The fake runs in this process and answers every worker, so on a
small machine it competes with them for the same cores: on 2 cores the figure shows what
coordination costs, not a speed-up (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from bench.common import org_dir, quiet, scratch_database
from mentorpulse.stages.context import Context
from mentorpulse.stages.sync import sync_plan
from mentorpulse.storage.models import Event, JobRun
from tests.fakes.google_api import GoogleFake, serve

SHARDS = 12  # the one Google source is cut into this many shards (shard_size)
POLL = timedelta(hours=1)  # nothing is due again by itself during a round
ROUND_TIMEOUT = 1800.0


def load_fake(fake: GoogleFake, org: Path, limit: int | None) -> list[str]:
    """Every calendar of the organisation's fixtures (the first ``limit``), as the fake's.
    Series masters are left out: the fake serves single events, as the connector asks."""
    users = []
    for path in sorted((org / "fixtures").glob("*.json"))[:limit]:
        user = path.stem
        fake.add_user(user)
        for item in json.loads(path.read_text())["items"]:
            if "recurrence" not in item:
                fake.put_event(user, item)
        users.append(user)
    return users


def _config(org: Path, folder: Path, database: str, url: str, key: Path, users: list[str]) -> Path:
    settings = yaml.safe_load((org / "mentorpulse.yaml").read_text())
    size = -(-len(users) // SHARDS)
    settings["database"] = database
    settings["roster"] = {"path": str(org / "roster.csv")}
    settings["sources"] = [
        {
            "id": "g",
            "kind": "google",
            "users": users,
            "shard_size": size,
            "service_account_key": str(key),
            "api_root": url,
            "quota_share": 1,
            "project_quota_per_minute": 10_000_000,
            "user_quota_per_minute": 1_000_000,
            "poll_every": f"{int(POLL.total_seconds())}s",
        }
    ]
    settings["schedule"] = {"evaluate_every": "1h"}
    settings.setdefault("notify", {})["every"] = "1h"
    settings["service"] = {
        "pool": {"tick": "1s", "concurrency": 1, "stalled_after": "1m"},
        "http": {"port": 0},  # several workers on one host: any free port each
    }
    path = folder / "mentorpulse.yaml"
    path.write_text(json.dumps(settings))
    return path


@contextmanager
def _workers(config: Path, count: int, folder: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "MENTORPULSE_CONFIG": str(config)}
    started = []
    try:
        for n in range(count):
            log = (folder / f"worker{n}.log").open("wb")
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mentorpulse", "--log-json", "run"],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=env,
                )
            )
        yield started
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def _sync_runs(engine: sa.Engine) -> dict[str, datetime]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(JobRun.name, JobRun.last_run_at).where(JobRun.name.like("sync:%"))
        )
        return {row.name: row.last_run_at for row in rows}


def _round(engine: sa.Engine, shards: int, fake: GoogleFake) -> dict[str, float]:
    """Make every shard due now and time until each has run."""
    requests = fake.http_requests
    started = datetime.now(UTC)
    clock = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(
            sa.update(JobRun)
            .where(JobRun.name.like("sync:%"))
            .values(last_run_at=started - 2 * POLL)
        )
    _wait(
        lambda: sum(at > started for at in _sync_runs(engine).values()) == shards,
        ROUND_TIMEOUT,
        "every shard's sync",
    )
    return {"seconds": time.perf_counter() - clock, "requests": fake.http_requests - requests}


def measure(
    workers: int, org: Path, users: list[str], fake: GoogleFake, url: str
) -> dict[str, Any]:
    """One pool of ``workers`` on a fresh database: a first sync, then a no-change poll."""
    with (
        tempfile.TemporaryDirectory() as scratch,
        scratch_database("postgresql", Path(scratch)) as db,
    ):
        folder = Path(scratch)
        key = folder / "service-account.json"
        key.write_text(json.dumps(fake.service_account))  # type: ignore[attr-defined]
        config = _config(org, folder, db, url, key, users)
        ctx = Context.open(config)  # the schema (ours and the queue's) and the roster
        names = [f"sync:{shard.key}" for shard in sync_plan(ctx)]
        ctx.engine.dispose()
        shards = len(names)
        engine = sa.create_engine(db)
        now = datetime.now(UTC)
        with engine.begin() as connection:  # not due until a round starts
            connection.execute(
                sa.insert(JobRun),
                [{"name": name, "last_run_at": now, "failing": False} for name in names],
            )
        figures: dict[str, Any] = {"workers": workers, "calendars": len(users), "shards": shards}
        with _workers(config, workers, folder):
            logs = [folder / f"worker{n}.log" for n in range(workers)]
            _wait(
                lambda: (
                    all(b'"worker_started"' in p.read_bytes() for p in logs if p.exists())
                    and len([p for p in logs if p.exists()]) == workers
                ),
                300,
                "the workers",
            )
            _wait(lambda: _idle(engine), 600, "the first evaluation and dispatch")
            for name in ("first", "nochange"):
                result = _round(engine, shards, fake)
                figures[f"{name}_seconds"] = round(result["seconds"], 2)
                figures[f"{name}_calendars_per_s"] = round(len(users) / result["seconds"], 1)
                figures[f"{name}_requests"] = result["requests"]
                with engine.connect() as connection:
                    figures[f"{name}_events_stored"] = connection.execute(
                        sa.select(sa.func.count()).select_from(Event)
                    ).scalar_one()
            busy = [
                sum(
                    b'"pool_job_done"' in line and b'"sync:' in line
                    for line in p.read_bytes().splitlines()
                )
                for p in logs
            ]
            figures["shards_per_worker"] = busy
        engine.dispose()
        return figures


def _idle(engine: sa.Engine) -> bool:
    """No job waiting or running but the tick's own."""
    with engine.connect() as connection:
        busy = connection.execute(
            sa.text(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
                "AND task_name <> 'mentorpulse.tick'"
            )
        ).scalar_one()
    return busy == 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__)
    parser.add_argument("--scale", choices=("small", "medium", "large"), default="medium")
    parser.add_argument("--calendars", type=int, default=None, help="Only the first N.")
    parser.add_argument("--workers", default="1,2,3")
    args = parser.parse_args()
    quiet()
    org = org_dir(args.scale)
    fake = GoogleFake()
    running_server = serve(fake)
    running = next(running_server)
    fake.service_account = running.service_account  # type: ignore[attr-defined]
    try:
        users = load_fake(fake, org, args.calendars)
        rows = [measure(int(n), org, users, fake, running.url) for n in args.workers.split(",")]
    finally:
        running_server.close()
    cores = os.cpu_count()
    print(f"{args.scale}: {len(users)} Google calendars, {rows[0]['shards']} shards, {cores} cores")
    stored = rows[0]["first_events_stored"]
    print(f"events stored by the first sync: {stored}")
    print(f"{'workers':>7} | {'first sync':>18} | {'no change':>18} | shards per worker")
    for row in rows:
        first = f"{row['first_seconds']:>7.1f} s {row['first_calendars_per_s']:>6.1f}/s"
        nochange = f"{row['nochange_seconds']:>7.1f} s {row['nochange_calendars_per_s']:>6.1f}/s"
        print(f"{row['workers']:>7} | {first} | {nochange} | {row['shards_per_worker']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""The worker pool on PostgreSQL: three `mentorpulse run` processes of the real CLI share
1,000 Google calendars (the loopback fake, counting requests per calendar), one is
SIGKILLed in the middle of a shard and another finishes it, the rest stop on SIGTERM.

What is checked is what an operator would see: each calendar read exactly once per poll,
every worker having done some of the work, the killed shard finished elsewhere, no
duplicate event, session or outbox row, each email received once by a real SMTP server.

The 1,000 calendars are one Google source cut into ``SHARDS`` shards of ``PER_SHARD``
calendars (``shard_size``): the units of work the workers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from procrastinate import JobContext
from procrastinate.jobs import Job
from procrastinate.testing import InMemoryConnector
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker
from structlog.testing import capture_logs
from typer.testing import CliRunner

from mentorpulse.cli import app
from mentorpulse.sample import write_demo
from mentorpulse.service import pool, runner
from mentorpulse.stages import Context
from mentorpulse.stages.sessions import Bucket
from mentorpulse.storage.models import Event, JobRun, MentoringSession, OutboxMessage, Source
from tests.fakes.google_api import GoogleFake, RunningFake, serve
from tests.servers.smtpd import SmtpServer
from tests.service_support import RunProcess, add_settings

CALENDARS = 1000
SHARDS = 10
PER_SHARD = CALENDARS // SHARDS  # the source's shard_size
PAIRS = 40  # the first 80 users are 40 pairings; every other one has met
BATCH = 10  # calls per batch request: ten requests a shard, slow enough to act mid-shard
POLL = timedelta(seconds=20)
GRACE = 5.0  # service.pool.shutdown_grace
WAIT = 60.0  # seconds, for what a loaded 2-core machine may take


T = TypeVar("T")


def _until(condition: Callable[[], T | None], timeout: float = WAIT, what: str = "") -> T:
    """Poll ``condition`` until it returns something true; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what or condition}")


@pytest.fixture
def google() -> Iterator[RunningFake]:
    running = serve(GoogleFake())
    yield next(running)
    running.close()


def _users() -> list[str]:
    return [f"user{n:04d}@example.org" for n in range(CALENDARS)]


def _shard_users(index: int) -> list[str]:
    """The calendars of shard ``index``: shards are the sorted calendars cut in order."""
    return _users()[index * PER_SHARD : (index + 1) * PER_SHARD]


def _populate(fake: GoogleFake, now: datetime) -> None:
    users = _users()
    for n, user in enumerate(users):
        fake.add_user(user)
        # Something in every calendar (dropped at ingest: no pair in it), so that every
        # batch is a page stored with its cursor, and a shard resumes after the last one.
        fake.meeting(
            [user],
            event_id=f"focus{n}",
            start=now - timedelta(days=1),
            organizer=user,
            attendees={user: "accepted"},
            summary="Focus time",
        )
    for k in range(0, PAIRS, 2):
        mentor, mentee = users[2 * k], users[2 * k + 1]
        fake.meeting(
            [mentor, mentee],
            event_id=f"met{k}",
            start=now - timedelta(days=3),
            organizer=mentor,
            attendees={mentor: "accepted", mentee: "accepted"},
        )


def _config(tmp_path: Path, database: str, google: RunningFake, smtp: SmtpServer) -> Path:
    users = _users()
    key = tmp_path / "service-account.json"
    key.write_text(json.dumps(google.service_account))
    roster = ["program,mentor_email,mentee_email,started_on"]
    roster += [f"eng,{users[2 * k]},{users[2 * k + 1]},2025-01-06" for k in range(PAIRS)]
    (tmp_path / "roster.csv").write_text("\n".join(roster) + "\n")
    sources = [
        {
            "id": "g",
            "kind": "google",
            "users": users,
            "shard_size": PER_SHARD,
            "service_account_key": str(key),
            "api_root": google.url,
            "batch_size": BATCH,
            "quota_share": 1,
            "project_quota_per_minute": 1_000_000,
            "user_quota_per_minute": 100_000,
            "poll_every": f"{int(POLL.total_seconds())}s",
        }
    ]
    config = {
        "database": database,
        "timezone": "Europe/Berlin",
        "sources": sources,
        "roster": {"path": "roster.csv"},
        "programs": [
            {
                "id": "eng",
                "cadence": {"every": "14d"},
                "rules": [{"id": "first", "kind": "first_meeting", "within": "21d"}],
            }
        ],
        "notify": {
            "sender": "mentorpulse@example.org",
            "transport": smtp.config(),
            "every": "2s",
            "lease": "2m",
        },
        "schedule": {"evaluate_every": "2s"},
        "service": {
            "pool": {
                "tick": "1s",
                "concurrency": 2,
                "buckets": 3,
                "stalled_after": "3s",
                "shutdown_grace": f"{int(GRACE)}s",
            }
        },
    }
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _shard(index: int) -> str:
    return f"sync:g#{index}"


def _last_runs(db: sessionmaker[Db]) -> dict[str, datetime]:
    with db() as session:
        rows = session.execute(select(JobRun.name, JobRun.last_success_at))
        return {name: at for name, at in rows if name.startswith("sync:") and at is not None}


@pytest.mark.postgres
def test_three_workers_share_the_calendars_and_finish_a_killed_workers_shard(
    pg_url: str,
    tmp_path: Path,
    google: RunningFake,
    server: SmtpServer,
    workers: list[RunProcess],
) -> None:
    fake = google.fake
    _populate(fake, datetime.now(UTC))
    fake.delay = 0.25  # per request: a shard takes a few seconds
    config = _config(tmp_path, pg_url, google, server)
    workers.extend(RunProcess(config) for _ in range(3))
    engine = create_engine(pg_url)
    db = sessionmaker(engine)

    # A worker that has finished some job already and is in the middle of a shard (some
    # of its batches served, not all) is killed.
    def mid_shard() -> tuple[RunProcess, int] | None:
        served = fake.requests_per_calendar()
        for worker in workers:
            if not worker.events("pool_job_done"):
                continue
            running = worker.jobs("pool_job_started") - worker.jobs("pool_job_done")
            for index in range(SHARDS):
                if running[_shard(index)]:
                    read = sum(1 for user in _shard_users(index) if served[user])
                    if BATCH <= read <= PER_SHARD - 2 * BATCH:
                        return worker, index
        return None

    victim, killed = _until(mid_shard, what="a worker in the middle of a shard")
    victim.process.kill()
    victim.process.wait(timeout=WAIT)
    # It may have been running a second job (concurrency 2): that one is retried as well.
    in_hand = victim.jobs("pool_job_started") - victim.jobs("pool_job_done")
    survivors = [w for w in workers if w is not victim]

    # Every shard synced once, the killed one by a survivor after the stalled timeout.
    _until(lambda: len(_last_runs(db)) == SHARDS, what="every shard synced")
    after_first = fake.requests_per_calendar()
    finished_by = [w for w in survivors if w.jobs("pool_job_done")[_shard(killed)]]
    assert finished_by, [w.log for w in workers]
    assert any(w.events("pool_job_started") for w in survivors)
    retried = [e["job"] for w in survivors for e in w.events("pool_stalled_job_retried")]
    assert _shard(killed) in retried, retried
    assert set(retried) <= set(in_hand), (retried, in_hand)
    listed = fake.requests_per_calendar(full_only=True)
    for index in range(SHARDS):
        counts = Counter(after_first[user] for user in _shard_users(index))
        if _shard(index) in in_hand:
            # Resumed from its cursor: what was stored is only asked for changes since
            # (sync token); the batch or two in flight at the kill is listed again.
            full = Counter(listed[user] for user in _shard_users(index))
            assert set(full) <= {1, 2}, full
            assert full[2] <= 2 * BATCH, full
            assert set(counts) <= {1, 2}, counts
        else:
            assert counts == {1: PER_SHARD}, (index, counts)
    # Every worker did some of the work (the victim before it was killed).
    assert all(w.events("pool_job_done") for w in workers), [w.log for w in workers]

    # Findings fire once every source is synced: one email per pairing that never met,
    # each received once, however many workers ran the notify job.
    never_met = PAIRS // 2
    _until(lambda: len(server.recorder.message_ids()) >= never_met, what="the emails")
    with db() as session:
        outbox = session.execute(select(OutboxMessage.idempotency_key, OutboxMessage.status)).all()
    assert len(outbox) == never_met
    assert len({key for key, _status in outbox}) == never_met
    received = server.recorder.message_ids()
    assert len(received) == len(set(received)) == never_met
    mentors = sorted(m["To"].addresses[0].addr_spec for m in server.recorder.messages)
    assert mentors == sorted(_users()[2 * k] for k in range(1, PAIRS, 2))

    # The next poll reads every calendar exactly once more (sync tokens, nothing changed).
    first_runs = _last_runs(db)
    _until(
        lambda: (
            all(at > first_runs[name] for name, at in _last_runs(db).items())
            and len(_last_runs(db)) == SHARDS
        ),
        what="a second poll of every shard",
    )
    second = fake.requests_per_calendar() - after_first
    assert {second[user] for user in _users()} == {1}

    # Nothing stored twice, nothing lost: each meeting's copy in both calendars, one
    # session per pairing that met, every source healthy.
    with db() as session:
        events = session.execute(select(Event.source_id, Event.provider_id)).all()
        sessions = session.execute(select(MentoringSession.pairing_id, MentoringSession.key)).all()
        healthy = session.scalars(select(func.count()).where(Source.healthy)).one()
    assert len(events) == len(set(events)) == 2 * (PAIRS // 2)
    assert len(sessions) == len(set(sessions)) == PAIRS // 2
    assert healthy == 1  # the source: every shard of it

    # SIGHUP reloads the config and stops nothing.
    reloading = survivors[0]
    reloading.process.send_signal(signal.SIGHUP)
    _until(lambda: reloading.events("config_reloaded"), what="the reload's answer")
    assert reloading.process.poll() is None, reloading.log

    # SIGTERM: no new job, exit 0 within the grace period (plus a start-up's margin).
    for worker in survivors:
        worker.process.send_signal(signal.SIGTERM)
    for worker in survivors:
        started = time.monotonic()
        assert worker.process.wait(timeout=GRACE + 15) == 0, worker.log
        assert time.monotonic() - started < GRACE + 15
        assert worker.events("worker_stopped"), worker.log
        assert "Traceback" not in worker.log, worker.log
    engine.dispose()


class Proxy:
    """A TCP relay to PostgreSQL that can be cut: while cut, it closes every connection it
    has and hangs up on new ones at once (counting them), as a database that went away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.cut = threading.Event()
        self.refused = 0
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                with self.lock:
                    self.refused += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def go_down(self) -> None:
        self.cut.set()
        with self.lock:
            connections, self.open = self.open, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def come_back(self) -> None:
        self.cut.clear()

    def close(self) -> None:
        self.go_down()
        self.listener.close()


@pytest.mark.postgres
def test_a_worker_that_loses_the_database_says_so_once_and_carries_on(
    pg_url: str, tmp_path: Path, workers: list[RunProcess]
) -> None:
    url = make_url(pg_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    secret = "pool-dsn-s3cret"  # trust authentication ignores it; no log may show it
    through_proxy = url.set(host="127.0.0.1", port=proxy.port, password=secret)
    write_demo(tmp_path, today=datetime.now(UTC).date())
    config = tmp_path / "mentorpulse.yaml"
    text = config.read_text()
    text = re.sub(
        r"(?m)^database:.*$",
        f"database: {through_proxy.render_as_string(hide_password=False)}",
        text,
        count=1,
    )
    config.write_text(text + "\nschedule:\n  evaluate_every: 1s\n")
    add_settings(
        config, {"service": {"pool": {"tick": "1s", "stalled_after": "5s", "shutdown_grace": "5s"}}}
    )
    worker = RunProcess(config)
    workers.append(worker)
    try:
        _until(lambda: worker.events("pool_job_done"), what=f"a first job: {worker.log}")
        proxy.go_down()
        _until(lambda: worker.events("pool_database_lost"), what=f"the loss: {worker.log}")
        # Several attempts to reconnect meet a closed door before it opens again.
        _until(lambda: proxy.refused >= 3, what="attempts to reconnect")
        done_before = len(worker.events("pool_job_done"))
        proxy.come_back()
        _until(lambda: worker.events("pool_database_back"), what=f"the return: {worker.log}")
        _until(
            lambda: len(worker.events("pool_job_done")) > done_before,
            what=f"work after the return: {worker.log}",
        )
        assert len(worker.events("pool_database_lost")) == 1, worker.log
        assert len(worker.events("pool_database_back")) == 1, worker.log
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=GRACE + 15) == 0, worker.log
        worker.reader.join(timeout=WAIT)
        assert secret not in "".join(worker.lines)
        # The attempts themselves are not logged (psycopg's pool would, once each).
        assert not [line for line in worker.lines if "connecting" in line], worker.log
    finally:
        proxy.close()


@pytest.mark.postgres
def test_sigterm_mid_shard_hands_the_rest_back_and_exits_0_within_the_grace(
    pg_url: str,
    tmp_path: Path,
    google: RunningFake,
    server: SmtpServer,
    workers: list[RunProcess],
) -> None:
    """A shard longer than the grace period: the worker stores the page in hand, hands
    the shard back and exits 0; the next worker reads only what was not stored."""
    fake = google.fake
    _populate(fake, datetime.now(UTC))
    fake.delay = 0.5  # ten requests a shard: five seconds, longer than the grace
    grace = 1
    config = _config(tmp_path, pg_url, google, server)
    settings = json.loads(config.read_text())
    settings["sources"][0]["users"] = _shard_users(0)  # one shard
    settings["service"]["pool"]["shutdown_grace"] = f"{grace}s"
    config.write_text(json.dumps(settings))
    first = RunProcess(config)
    workers.append(first)

    def mid_shard() -> bool:
        served = fake.requests_per_calendar()
        read = sum(1 for user in _shard_users(0) if served[user])
        return BATCH <= read <= PER_SHARD - 3 * BATCH

    _until(mid_shard, what=f"the shard under way: {first.log}")
    first.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert first.process.wait(timeout=WAIT) == 0, first.log
    # The grace, then the page in flight (a request of the slow fake or two).
    assert time.monotonic() - started < grace + 4 * fake.delay + 5
    first.reader.join(timeout=WAIT)
    assert first.events("pool_shard_handed_back"), first.log
    assert not first.jobs("pool_job_done")[_shard(0)], first.log
    handed_back = fake.requests_per_calendar()

    second = RunProcess(config)
    workers.append(second)
    engine = create_engine(pg_url)
    _until(lambda: _last_runs(sessionmaker(engine)), what=f"the shard finished: {second.log}")
    assert second.jobs("pool_job_done")[_shard(0)] == 1, second.log
    # What the first worker stored (the page in hand included) is not listed again: the
    # second asks those calendars only for changes since (their sync tokens).
    listed = fake.requests_per_calendar(full_only=True)
    assert Counter(listed[user] for user in _shard_users(0)) == {1: PER_SHARD}
    stored_first = [user for user in _shard_users(0) if handed_back[user]]
    assert BATCH <= len(stored_first) < PER_SHARD
    asked = fake.requests_per_calendar()
    assert {asked[user] for user in stored_first} == {2}
    with sessionmaker(engine)() as session:
        events = session.execute(select(Event.source_id, Event.provider_id)).all()
    assert len(events) == len(set(events)) == 2 * (PAIRS // 2)
    engine.dispose()


@pytest.mark.postgres
def test_status_names_a_failing_pool_job(pg_url: str, tmp_path: Path) -> None:
    """A bucket's or shard's job that failed is a problem `status` names (exit 1), as
    the embedded daemon's stages are; one that succeeded since is not."""
    write_demo(tmp_path, today=datetime.now(UTC).date())
    config = tmp_path / "mentorpulse.yaml"
    config.write_text(re.sub(r"(?m)^database:.*$", f"database: {pg_url}", config.read_text()))
    ctx = Context.open(config)
    bucket = runner.bucket_job(Bucket(1, ctx.config.service.pool.buckets))
    with contextlib.suppress(RuntimeError), ctx.recorded(bucket):
        raise RuntimeError("boom")
    done = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "400"})
    assert done.exit_code == 1, done.output
    assert f"stage {bucket}: its last run failed" in done.output
    with ctx.recorded(bucket):
        pass
    done = CliRunner().invoke(app, ["status", "--config", str(config)], env={"COLUMNS": "400"})
    assert f"stage {bucket}" not in done.output, done.output
    ctx.engine.dispose()


def test_a_tick_defers_due_work_once_and_skips_a_shard_still_running(tmp_path: Path) -> None:
    """The tick against Procrastinate's in-memory queue (the database of record is
    SQLite here: what is due comes from ``job_runs``, whatever the backend)."""
    write_demo(tmp_path, today=datetime.now(UTC).date())
    ctx = Context.open(tmp_path / "mentorpulse.yaml")
    now = datetime.now(UTC)
    ctx.clock = lambda: now
    buckets = ctx.config.service.pool.buckets
    (source,) = ctx.config.sources
    shard = f"sync:{source.id}#0"
    connector = InMemoryConnector()
    with pool.app.replace_connector(connector) as app:

        def tick() -> int:
            job = Job(id=0, queue="default", lock=None, queueing_lock=None, task_name="tick")
            context = JobContext(
                app=app,
                job=job,
                start_timestamp=0.0,
                abort_reason=lambda: None,
                additional_context={pool.CONTEXT_KEY: ctx},
            )
            return int(asyncio.run(pool.tick(context, timestamp=0)))

        def queued() -> dict[str, str]:
            return {str(j["lock"]): str(j["status"]) for j in connector.jobs.values()}

        expected = {shard, *(f"evaluate:{b}/{buckets}" for b in range(buckets)), "notify"}
        assert tick() == len(expected)
        assert set(queued()) == expected
        assert all(j["queueing_lock"] == j["lock"] for j in connector.jobs.values())
        assert tick() == 0, "still queued: not queued twice"
        assert len(connector.jobs) == len(expected)

        # The shard's job is running: the next tick skips it rather than queue another.
        (sync_id,) = [i for i, j in connector.jobs.items() if j["lock"] == shard]
        connector.jobs[sync_id]["status"] = "doing"
        with capture_logs() as logs:
            assert tick() == 0
        assert len(connector.jobs) == len(expected)
        assert {"event": "pool_job_still_running", "job": shard, "log_level": "info"} in logs

        # Done and recorded: due again only once its source's poll interval has passed.
        connector.reset()
        with ctx.recorded(shard):
            pass
        assert tick() == len(expected) - 1
        assert shard not in queued()
        connector.reset()
        now += source.poll_every
        assert tick() == len(expected)
        assert shard in queued()
    ctx.engine.dispose()

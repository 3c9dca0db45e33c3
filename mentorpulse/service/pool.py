"""The worker pool: `mentorpulse run` on PostgreSQL, any number of workers on any hosts.

The work is shared through Procrastinate, a task queue in the same database, instead of
leases of our own:

- ``tick`` is a periodic task (every ``service.pool.tick``), deferred once per tick
  however many workers run (Procrastinate records each periodic defer). It looks up
  what is due from ``job_runs`` (a shard whose source's ``poll_every`` has passed since
  its last sync, an evaluation bucket, the outbox), so a restart neither repeats nor
  skips work, and defers one job for each with a ``lock`` (one at a time per shard or
  bucket) and a ``queueing_lock`` (never two waiting). A shard whose job is still
  running is skipped, not queued behind it.
- ``sync_shard``, ``evaluate_bucket`` and ``notify`` call the same stages as the
  embedded runner (sync a shard, sessions + rules for a bucket of pairings, dispatch the
  outbox, whose rows are claimed with ``SKIP LOCKED`` so an email goes out once).
- ``retry_stalled`` (periodic as well) hands the running jobs of a worker whose heartbeat
  stopped for ``stalled_after`` back to the queue: a SIGKILLed worker's shard is finished
  by another. Its stored pages stay stored; the cursor resumes after the last of them.

Signals: SIGTERM/SIGINT stop taking jobs; running jobs get ``shutdown_grace`` to finish,
then a sync hands its shard back after the page in hand (retried by another worker) and
the worker exits 0. SIGHUP reloads the config and roster (``Context.reload``). A worker
that loses the database says so once, retries with backoff, and says when it is back.

``app`` is also what Procrastinate's own CLI loads, for an operator who wants to look at
the queue: ``MENTORPULSE_CONFIG=... procrastinate --app=mentorpulse.service.pool.app
shell`` (its database is the config's; ``MENTORPULSE_DATABASE_URL`` or libpq's ``PG*``
variables otherwise). Workers are started with ``mentorpulse run``, not with
``procrastinate worker``: the tasks need the context a ``run`` opens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import procrastinate
import structlog
from procrastinate import JobContext
from procrastinate.exceptions import AlreadyEnqueued, JobAborted
from procrastinate.job_context import AbortReason
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL, make_url

from mentorpulse import stages
from mentorpulse.config.schema import PoolConfig
from mentorpulse.errors import UserError
from mentorpulse.service import http, metrics
from mentorpulse.service.runner import BEAT, bucket_job, job_run, reload_config, shard_job
from mentorpulse.stages.sessions import Bucket
from mentorpulse.stages.sync import LoggedProgress
from mentorpulse.storage import runs

log = structlog.get_logger(__name__)

CONTEXT_KEY = "mentorpulse"  # where a job finds the worker's stages.Context
RECONNECT_FIRST = 1.0  # seconds before the first attempt to reach a lost database
RECONNECT_MAX = 30.0


def conninfo(url: str | URL) -> str:
    """libpq's form of our database URL (SQLAlchemy's ``postgresql+psycopg://`` → ``postgresql://``).
    It carries the password: it goes to psycopg only, never to a log or a message."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _environment_conninfo() -> str:
    """The database of Procrastinate's CLI: ``MENTORPULSE_DATABASE_URL``, else the one of the
    config ``MENTORPULSE_CONFIG`` names, else libpq's defaults (``PG*`` variables)."""
    url = os.environ.get("MENTORPULSE_DATABASE_URL")
    if not url and os.environ.get("MENTORPULSE_CONFIG"):
        from mentorpulse.config.loader import config_path, load_config

        url = load_config(config_path(None)).database
    if url and make_url(url).get_backend_name() != "postgresql":
        raise UserError("the worker pool's queue lives in PostgreSQL; this database is not")
    return conninfo(url) if url else ""


def _pool_from_environment(**kwargs: Any) -> AsyncConnectionPool:
    """A pool on the environment's database, resolved when the app opens (not at import)."""
    return AsyncConnectionPool(conninfo=_environment_conninfo(), **kwargs)


app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(pool_factory=_pool_from_environment)
)

# A job that failed (an unexpected error, or a shard handed back at shutdown) is retried a
# few times, soon; the tick defers due work again anyway.
RETRY = procrastinate.RetryStrategy(max_attempts=5, wait=2)


def _context(job: JobContext) -> stages.Context:
    ctx = job.additional_context.get(CONTEXT_KEY)
    if not isinstance(ctx, stages.Context):
        raise RuntimeError("mentorpulse tasks run in `mentorpulse run` workers only")
    return ctx


# -- what is due ------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """One job the tick defers: its task, arguments, and the lock that serialises it."""

    task: Literal["sync_shard", "evaluate_bucket", "notify"]
    lock: str
    kwargs: dict[str, Any]


NOTIFY_RUN = "notify"  # the same job name as the embedded daemon's


def due_work(ctx: stages.Context) -> list[Due]:
    """What is due now, from when each piece last ran (``job_runs``)."""
    now = ctx.clock()
    pool = ctx.config.service.pool
    wanted: list[tuple[Due, timedelta]] = []
    every = {source.id: source.poll_every for source in ctx.config.sources}
    for shard in stages.sync_plan(ctx):
        kwargs = {"source_id": shard.source_id, "index": shard.index, "count": shard.count}
        wanted.append((Due("sync_shard", shard_job(shard), kwargs), every[shard.source_id]))
    for index in range(pool.buckets):
        bucket = Bucket(index, pool.buckets)
        kwargs = {"index": index, "count": pool.buckets}
        wanted.append(
            (
                Due("evaluate_bucket", bucket_job(bucket), kwargs),
                ctx.config.schedule.evaluate_every,
            )
        )
    wanted.append((Due("notify", NOTIFY_RUN, {}), ctx.config.notify.every))
    with ctx.db() as db:
        last = runs.last_runs(db, [due.lock for due, _every in wanted])
    return [
        due
        for due, interval in wanted
        if (at := last.get(due.lock)) is None or at + interval <= now
    ]


# -- the tasks ----------------------------------------------------------------------------


@app.task(name="mentorpulse.tick", queueing_lock="mentorpulse.tick", pass_context=True)
async def tick(context: JobContext, timestamp: int) -> int:
    """Defer each due piece of work once; returns how many jobs were deferred."""
    ctx = _context(context)
    manager = context.app.job_manager
    # Running jobs are read first: one that ends meanwhile has recorded its run already.
    running = {job.lock for job in await manager.list_jobs_async(status="doing") if job.lock}
    deferred = 0
    for due in await asyncio.to_thread(due_work, ctx):
        if due.lock in running:
            log.info("pool_job_still_running", job=due.lock)
            continue
        task = TASKS[due.task]
        try:
            await task.configure(lock=due.lock, queueing_lock=due.lock).defer_async(**due.kwargs)
        except AlreadyEnqueued:
            continue  # deferred by an earlier tick, waiting for a worker
        deferred += 1
    return deferred


class HandedBack(BaseException):
    """The job was asked to stop: the shard stops after the page in hand (stored with its
    cursor). On shutdown it goes back to the queue; an operator's abort (Procrastinate's
    ``cancel --abort``) ends it. A BaseException, so the stage's own error handling does
    not record it as the source failing."""


class _AbortablePages:
    """Sync progress that logs like the daemon's and hands the shard back on shutdown."""

    def __init__(self, job: JobContext) -> None:
        self.job = job
        self.logged = LoggedProgress()

    def start(self, source_id: str) -> None:
        self.logged.start(source_id)

    def page(self, source_id: str, records: int) -> None:
        self.logged.page(source_id, records)
        if self.job.should_abort():
            log.warning("pool_shard_handed_back", source=source_id, pages=self.logged.pages)
            raise HandedBack(source_id)

    def stop(self) -> None:
        self.logged.stop()


@app.task(name="mentorpulse.sync_shard", pass_context=True, retry=RETRY)
def sync_shard(context: JobContext, source_id: str, index: int, count: int) -> bool:
    """Sync one shard; True when it succeeded (a failing source backs off as always)."""
    ctx = _context(context)
    shard = stages.Shard(source_id, index, count)
    try:
        with _job(ctx, shard_job(shard)):
            result = stages.sync_shard(
                ctx, shard, respect_backoff=True, progress=_AbortablePages(context)
            )
        metrics.observe_sync([result])
    except HandedBack:
        if context.abort_reason() == AbortReason.USER_REQUEST:
            raise JobAborted(shard.key) from None  # aborted, not retried
        raise  # shutdown: retried (RETRY), by whichever worker takes it
    return result.ok


@app.task(name="mentorpulse.evaluate_bucket", pass_context=True, retry=RETRY)
def evaluate_bucket(context: JobContext, index: int, count: int) -> int:
    """Sessions, then rules, for one bucket of pairings; returns the pairings judged."""
    ctx = _context(context)
    bucket = Bucket(index, count)
    with _job(ctx, bucket_job(bucket)):
        stages.rebuild_sessions(ctx, bucket=bucket)
        stats = stages.evaluate_rules(ctx, bucket=bucket)
    return stats.pairings


@app.task(name="mentorpulse.notify", pass_context=True, retry=RETRY)
def notify(context: JobContext) -> int:
    """Dispatch the outbox (rows claimed with SKIP LOCKED: each email goes out once)."""
    ctx = _context(context)
    with _job(ctx, NOTIFY_RUN):
        stats = stages.send_notifications(ctx)
    return stats.sent


@app.task(
    name="mentorpulse.retry_stalled", queueing_lock="mentorpulse.retry_stalled", pass_context=True
)
async def retry_stalled(context: JobContext, timestamp: int) -> int:
    """Hand the running jobs of workers whose heartbeat stopped back to the queue."""
    ctx = _context(context)
    seconds = ctx.config.service.pool.stalled_after.total_seconds()
    manager = context.app.job_manager
    retried = 0
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=seconds):
        try:
            await manager.retry_job(job)
        except Exception as exc:  # another worker retried it first, or it ended meanwhile
            log.info(
                "pool_stalled_job_not_retried",
                job=job.lock or job.task_name,
                error=type(exc).__name__,
            )
            continue
        log.warning(
            "pool_stalled_job_retried", job=job.lock or job.task_name, dead_worker=job.worker_id
        )
        retried += 1
    return retried


TASKS: dict[str, procrastinate.tasks.Task[Any, Any, Any]] = {
    "sync_shard": sync_shard,
    "evaluate_bucket": evaluate_bucket,
    "notify": notify,
}


@contextmanager
def _job(ctx: stages.Context, name: str) -> Iterator[None]:
    """A job's run as the embedded runner's (:func:`runner.job_run`). A shard handed back
    at shutdown is neither a success nor a failure (it is not over): ``HandedBack`` is a
    BaseException, which neither records."""
    log.info("pool_job_started", job=name)
    with job_run(ctx, name):
        yield
    log.info("pool_job_done", job=name)


# -- the worker ---------------------------------------------------------------------------


def cron(every: timedelta) -> str:
    """The cron line of a tick (``PoolConfig.tick`` divides a minute or an hour)."""
    seconds = int(every.total_seconds())
    if seconds < 60:
        return f"* * * * * */{seconds}"  # Procrastinate's sixth column: seconds
    minutes = seconds // 60
    return "0 * * * *" if minutes >= 60 else f"*/{minutes} * * * *"


def _schedule(pool: PoolConfig) -> None:
    """Register the periodic tasks on the config's tick (once per process: a second
    worker in the same process, as in tests, replaces the first's)."""
    registry = app.periodic_registry
    for task in (tick, retry_stalled):
        registry.periodic_tasks.pop((task.name, ""), None)
        registry.register_task(task=task, cron=cron(pool.tick), periodic_id="", configure_kwargs={})


def worker_options(ctx: stages.Context) -> dict[str, Any]:
    """How this worker runs its jobs, from ``service.pool``."""
    pool = ctx.config.service.pool
    stalled = pool.stalled_after.total_seconds()
    return {
        "name": f"{socket.gethostname()}:{os.getpid()}",
        "concurrency": pool.concurrency,
        "shutdown_graceful_timeout": pool.shutdown_grace.total_seconds(),
        # Beat a few times within the stalled timeout, so one late beat is no death.
        "update_heartbeat_interval": max(1.0, min(10.0, stalled / 4)),
        "stalled_worker_timeout": stalled,
        "additional_context": {CONTEXT_KEY: ctx},
        "install_signal_handlers": False,  # ours: SIGTERM/SIGINT stop, SIGHUP reloads
        "delete_jobs": "successful",  # the queue keeps failures to look at, not history
    }


def run_worker(ctx: stages.Context) -> None:
    """Block until SIGTERM/SIGINT: one worker of the pool on ``ctx``'s PostgreSQL, serving
    ``service.http`` (its health, readiness and metrics)."""
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # we say it, once
    asyncio.run(_serve(ctx, http.Health(ctx.clock())))


async def _serve(ctx: stages.Context, health: http.Health) -> None:
    """Run the worker, and again after losing the database (with backoff, said once)."""
    _schedule(ctx.config.service.pool)
    options = worker_options(ctx)
    stopping = asyncio.Event()
    running: list[asyncio.Task[None]] = []
    handled = _on_signals(ctx, health, stopping, running)
    beating = asyncio.create_task(_beat(health))  # /healthz: this loop still turns
    pool_size = ctx.config.service.pool.concurrency + 4  # jobs, listener, heartbeat, fetch
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(ctx.engine.url), min_size=1, max_size=pool_size, timeout=10
    )
    delay, lost = RECONNECT_FIRST, False
    try:
        # Served once the signals are ours, until the last job has ended.
        with http.serving(ctx, health), app.replace_connector(connector):
            while not stopping.is_set():
                try:
                    async with app.open_async():
                        if stopping.is_set():  # a SIGTERM while connecting: start nothing
                            break
                        if lost:
                            log.info("pool_database_back")
                            delay, lost = RECONNECT_FIRST, False
                        log.info("worker_started", worker=options["name"], **_shown(ctx))
                        worker = asyncio.create_task(app.run_worker_async(**options))
                        running[:] = [worker]
                        try:
                            await worker
                        except asyncio.CancelledError:
                            if not stopping.is_set():
                                raise
                        running.clear()
                except Exception as exc:  # the database went away (or never answered)
                    running.clear()
                    with suppress(Exception):  # a pool half-opened: start afresh next time
                        await connector.close_async()
                    if stopping.is_set():
                        break
                    if not lost:
                        log.warning("pool_database_lost", error=type(exc).__name__)
                        lost = True
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), timeout=delay)
                    delay = min(delay * 2, RECONNECT_MAX)
    finally:
        beating.cancel()
        loop = asyncio.get_running_loop()
        for signum in handled:
            loop.remove_signal_handler(signum)
    log.info("worker_stopped", worker=options["name"])


async def _beat(health: http.Health) -> None:
    while True:
        health.beat()
        await asyncio.sleep(BEAT)


def _on_signals(
    ctx: stages.Context,
    health: http.Health,
    stopping: asyncio.Event,
    running: list[asyncio.Task[None]],
) -> tuple[signal.Signals, ...]:
    """SIGTERM/SIGINT stop the worker (Procrastinate's graceful stop: no new job, the grace
    for the running ones), SIGHUP reloads; returns the signals handled."""
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        if stopping.is_set():
            return
        log.info("worker_stopping", signal=signum.name)
        stopping.set()
        for task in running:
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    reloads: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak refs)

    def reload() -> None:
        task = loop.create_task(_reload(ctx, health))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    return (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _shown(ctx: stages.Context) -> dict[str, Any]:
    pool = ctx.config.service.pool
    return {
        "concurrency": pool.concurrency,
        "tick": pool.tick.total_seconds(),
        "buckets": pool.buckets,
        "stalled_after": pool.stalled_after.total_seconds(),
    }


async def _reload(ctx: stages.Context, health: http.Health) -> None:
    """SIGHUP: :func:`runner.reload_config` off the event loop (it reads files and writes
    the roster). The tick, concurrency and other ``service.pool`` settings are read at
    start only."""
    if await asyncio.to_thread(reload_config, ctx, health):
        # The tick reads the sources and intervals in force at each turn: nothing to redo.
        log.info(
            "config_reloaded",
            config=str(ctx.config_path),
            sources=len(ctx.config.sources),
            pairings=len(ctx.roster),
        )

"""`mentorpulse run`: the stages on APScheduler intervals until SIGTERM/SIGINT.

APScheduler is only the in-process ticker (memory job store rebuilt from the config).
When each stage last ran is kept in the database (``job_runs``), so after a restart the
first run of each job is due at ``last run + interval``: nothing is repeated or skipped.
A failed run is kept there too (time and a short error), and ``status`` reports it.

One daemon per database: it holds the ``daemon`` lease, renewed every 30 s for 90 s. A
second one refuses to start (exit 3), saying who holds it, when it expires and, for a
holder on this host, that its process is alive; a holder of this machine that has exited
is taken over at once. A daemon that cannot renew its lease starts no job once it is no
longer sure it still holds it. (On PostgreSQL, `mentorpulse run` starts a worker of the
pool instead: service/pool.py; `sync` without --once still runs this daemon there.)
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from mentorpulse import stages
from mentorpulse.errors import UserError, code_trace
from mentorpulse.service import lease
from mentorpulse.stages.sessions import Bucket
from mentorpulse.storage import runs
from mentorpulse.storage.locks import one_at_a_time

if TYPE_CHECKING:  # APScheduler and the HTTP service load when a daemon starts
    from apscheduler.schedulers.background import BackgroundScheduler

    from mentorpulse.service import http

log = structlog.get_logger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

DAEMON_LEASE = "daemon"
LEASE_TTL = timedelta(seconds=90)
HEARTBEAT = timedelta(seconds=30)
LEASE_HELD_EXIT = 3  # `run` refused: another daemon holds the lease (README documents it)


def first_run_at(ctx: stages.Context, name: str, every: timedelta) -> datetime:
    """When a job is next due, from its last run kept in the database."""
    now = ctx.clock()
    with ctx.db() as db:
        last = runs.last_run_at(db, name)
    return now if last is None else max(now, last + every)


def refusal(ctx: stages.Context, held: lease.LeaseState) -> UserError:
    """The second daemon's message: who runs, until when its lease holds, what to do."""
    expires = held.expires_at.astimezone(ZoneInfo(ctx.config.timezone))
    seconds = max(0, math.ceil((held.expires_at - ctx.clock()).total_seconds()))
    shown = lease.display(held.holder)
    pid = shown.rpartition(":")[2]
    alive = lease.alive_here(held.holder)
    if alive is None:
        process = f"it runs on another host ({shown.rpartition(':')[0]})"
    elif alive:
        process = f"its process {pid} is alive on this host"
    else:
        process = f"its process {pid} on this host has exited"
    return UserError(
        f"another mentorpulse daemon ({shown}) is running on this database; its lease "
        f"expires at {expires:%Y-%m-%d %H:%M:%S %Z} (in {seconds} s) unless it renews it; "
        f"{process}: stop it first, or start this one once it has stopped",
        code=LEASE_HELD_EXIT,
    )


class _Lease:
    """Until when this daemon knows it holds its lease (renewed by the heartbeat)."""

    def __init__(self, ctx: stages.Context, holder: str) -> None:
        self.ctx, self.holder = ctx, holder
        self.until = ctx.clock()

    def renew(self) -> lease.LeaseState:
        state = lease.acquire(
            self.ctx.db, DAEMON_LEASE, self.holder, ttl=LEASE_TTL, now=self.ctx.clock()
        )
        if state:
            self.until = state.expires_at
        return state

    def sure(self) -> bool:
        """Held with a heartbeat to spare, so a job started now is not a second daemon's."""
        return self.ctx.clock() < self.until - HEARTBEAT


@contextmanager
def job_run(ctx: stages.Context, name: str) -> Iterator[None]:
    """One run of a job, whoever runs it (the embedded ticker, a pool worker): recorded in
    ``job_runs`` and timed for /metrics; a failure is logged with its traceback when it
    starts, then in one line per run, and the recovery once. The exception goes on."""
    from mentorpulse.service import metrics

    started = time.monotonic()
    try:
        with ctx.recorded(name) as recorded:
            yield
    except Exception as exc:
        metrics.observe_job(name, time.monotonic() - started, ok=False)
        if recorded.was_failing:
            log.warning("job_still_failing", job=name, error=recorded.error)
        else:
            log.error("job_failed", job=name, error=recorded.error, trace=code_trace(exc))
        raise
    metrics.observe_job(name, time.monotonic() - started, ok=True)
    if recorded.was_failing:
        log.info("job_recovered", job=name)


def _guarded(
    ctx: stages.Context,
    name: str,
    stage: Callable[[], object],
    held: Callable[[], bool] = lambda: True,
) -> Callable[[], None]:
    """A :func:`job_run` that never kills the ticker; it starts nothing while the daemon
    is unsure it still holds its lease."""

    def run() -> None:
        if not held():
            log.warning("job_skipped", job=name, reason="daemon lease not renewed")
            return
        with suppress(Exception), job_run(ctx, name):  # logged there; the ticker goes on
            stage()

    return run


def pipeline(
    ctx: stages.Context, *, full: bool = False
) -> tuple[stages.SessionStats, stages.EvaluationStats]:
    """Sessions, rules: one job, since rules read what the session stage wrote. One
    process at a time (the daemon's job and an `evaluate` command would both write the
    same new sessions and findings): a second waits, then finds little left to do."""
    with one_at_a_time(ctx.engine, "evaluate"):
        return stages.rebuild_sessions(ctx), stages.evaluate_rules(ctx, full=full)


STAGES = frozenset({"sync", "evaluate", "notify"})
STAGE_JOBS = ("evaluate", "notify")  # one job each; sync has one per source


def sync_job(source_id: str) -> str:
    return f"sync:{source_id}"


def shard_job(shard: stages.Shard) -> str:
    """The worker pool's name (in ``job_runs``, and its lock) of a shard's sync."""
    return f"sync:{shard.key}"


def bucket_job(bucket: Bucket) -> str:
    """The worker pool's name of an evaluation bucket's job."""
    return f"evaluate:{bucket}"


def job_names(ctx: stages.Context) -> list[str]:
    """The names of the jobs, as kept in ``job_runs``: the embedded daemon's (one sync job
    per source; `sync` without --once runs it on either database), and on PostgreSQL the
    worker pool's too (one per shard and per evaluation bucket)."""
    embedded = [sync_job(source.id) for source in ctx.config.sources]
    if ctx.engine.dialect.name != "postgresql":
        return embedded + list(STAGE_JOBS)
    buckets = ctx.config.service.pool.buckets
    return (
        embedded
        + [shard_job(shard) for shard in stages.sync_plan(ctx)]
        + [bucket_job(Bucket(index, buckets)) for index in range(buckets)]
        + list(STAGE_JOBS)
    )


BEAT = 1.0  # seconds between two turns of the daemon's loop (heartbeat, SIGHUP)


def run_daemon(
    ctx: stages.Context,
    *,
    only: frozenset[str] | set[str] = STAGES,
    stop: threading.Event | None = None,
    reload: threading.Event | None = None,
) -> None:
    """Block until SIGTERM/SIGINT (or ``stop`` is set), running the stages in ``only``
    and serving ``service.http``. SIGHUP (or setting ``reload``) reloads the config."""
    from mentorpulse.service import http

    holder = lease.holder_name()
    held = _Lease(ctx, holder)
    state = held.renew()
    if not state:
        raise refusal(ctx, state)
    stop = stop or threading.Event()
    reload = reload or threading.Event()
    health = http.Health(ctx.clock())
    # Signals first: a SIGTERM once /readyz has said ready stops the daemon cleanly.
    previous = _on_signals(stop, reload)
    try:
        # The HTTP service outlives the jobs: it answers until the last one has finished.
        with http.serving(ctx, health):
            scheduler = _scheduler(ctx, only, held, stop)
            scheduler.start()
            log.info(
                "daemon_started",
                holder=holder,
                jobs=len(scheduler.get_jobs()),
                took_over_from=state.took_over,
            )
            try:
                while not stop.wait(BEAT):
                    health.beat()
                    if reload.is_set():
                        reload.clear()
                        _reload(ctx, scheduler, only, held, health)
            finally:
                scheduler.shutdown(wait=True)
    finally:
        lease.release(ctx.db, DAEMON_LEASE, holder)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("daemon_stopped", holder=holder)


_RELOADING = threading.Lock()


def reload_config(ctx: stages.Context, health: http.Health) -> bool:
    """SIGHUP in any long-running process: the new config and roster put in force, or
    refused with file:line in the log and the old ones kept; /metrics says which.
    Returns whether the new ones are in force."""
    serving = ctx.config.service.http, ctx.config.service.dashboard_served
    try:
        with _RELOADING:  # two SIGHUPs in a row: one reload after the other
            ctx.reload()
    except UserError as exc:
        log.error("config_reload_failed", config=str(ctx.config_path), error=exc.message)
        health.reload_result(False, ctx.clock())
        return False
    health.reload_result(True, ctx.clock())
    if ctx.config.service.http != serving[0]:
        log.warning("config_reload_needs_restart", setting="service.http")
    if ctx.config.service.dashboard_served != serving[1]:  # its routes are made at start
        log.warning("config_reload_needs_restart", setting="service.dashboard.enabled")
    return True


def _reload(
    ctx: stages.Context,
    scheduler: BackgroundScheduler,
    only: frozenset[str] | set[str],
    held: _Lease,
    health: http.Health,
) -> None:
    """SIGHUP in the embedded daemon: :func:`reload_config`, then the jobs follow the
    sources and intervals that changed."""
    before = {name: every for name, (every, _stage) in _jobs(ctx, only).items()}
    if not reload_config(ctx, health):
        return
    jobs = _jobs(ctx, only)
    rescheduled = []
    for name in before.keys() - jobs.keys():
        scheduler.remove_job(name)
    for name, (every, stage) in jobs.items():
        if name not in before:
            _add(scheduler, ctx, name, (every, stage), held)
        elif every != before[name]:
            scheduler.reschedule_job(name, trigger="interval", seconds=every.total_seconds())
            rescheduled.append(name)
    log.info(
        "config_reloaded",
        config=str(ctx.config_path),
        sources=len(ctx.config.sources),
        pairings=len(ctx.roster),
        jobs_added=sorted(jobs.keys() - before.keys()),
        jobs_removed=sorted(before.keys() - jobs.keys()),
        jobs_rescheduled=rescheduled,
    )


def _jobs(
    ctx: stages.Context, only: frozenset[str] | set[str]
) -> dict[str, tuple[timedelta, Callable[[], object]]]:
    """The daemon's jobs for the config in force: name → (interval, stage)."""
    from mentorpulse.service import metrics

    def sync(source_id: str) -> None:
        results = stages.sync_sources(ctx, [source_id], respect_backoff=True)
        metrics.observe_sync(results)

    jobs: dict[str, tuple[timedelta, Callable[[], object]]] = {}
    if "sync" in only:
        for source in ctx.config.sources:
            jobs[sync_job(source.id)] = (source.poll_every, functools.partial(sync, source.id))
    if "evaluate" in only:
        jobs["evaluate"] = (ctx.config.schedule.evaluate_every, lambda: pipeline(ctx))
    if "notify" in only:
        jobs["notify"] = (ctx.config.notify.every, lambda: stages.send_notifications(ctx))
    return jobs


def _add(
    scheduler: BackgroundScheduler,
    ctx: stages.Context,
    name: str,
    job: tuple[timedelta, Callable[[], object]],
    held: _Lease,
) -> None:
    every, stage = job
    scheduler.add_job(
        _guarded(ctx, name, stage, held.sure),
        "interval",
        seconds=every.total_seconds(),
        next_run_time=first_run_at(ctx, name, every),
        id=name,
    )


def _scheduler(
    ctx: stages.Context, only: frozenset[str] | set[str], held: _Lease, stop: threading.Event
) -> BackgroundScheduler:
    """The ticker with one job per source's sync and per stage in ``only``, and the
    heartbeat that renews the daemon's lease (and stops the daemon if it lost it)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    misfire = int(ctx.config.schedule.misfire_grace.total_seconds())
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire},
        timezone="UTC",
    )
    for name, job in _jobs(ctx, only).items():
        _add(scheduler, ctx, name, job, held)

    def heartbeat() -> None:
        try:
            state = held.renew()
        except Exception:  # the database is unreachable: jobs pause once the lease may lapse
            log.exception("daemon_lease_not_renewed", holder=held.holder, held_until=held.until)
            return
        if not state:
            log.error("daemon_lease_lost", holder=held.holder, now_held_by=state.holder)
            stop.set()

    scheduler.add_job(heartbeat, "interval", seconds=HEARTBEAT.total_seconds(), id="heartbeat")
    return scheduler


def _on_signals(stop: threading.Event, reload: threading.Event) -> dict[signal.Signals, _Handler]:
    """SIGTERM and SIGINT stop the daemon, SIGHUP asks its loop to reload the config
    (from the main thread only, where Python allows handlers); returns the handlers they
    replaced."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("daemon_stopping", signal=signal.Signals(signum).name)
        stop.set()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        reload.set()  # the loop reloads: nothing heavy runs inside a signal handler

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    return previous

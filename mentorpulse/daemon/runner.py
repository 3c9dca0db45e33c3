"""`mentorpulse run`: the stages on APScheduler intervals until SIGTERM/SIGINT.

APScheduler is only the in-process ticker (memory job store rebuilt from the config).
When each stage last ran is kept in the database (``job_runs``), so after a restart the
first run of each job is due at ``last run + interval``: nothing is repeated or skipped.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from mentorpulse.daemon import jobs, lease
from mentorpulse.errors import UserError
from mentorpulse.storage.models import JobRun

log = structlog.get_logger(__name__)

DAEMON_LEASE = "daemon"
LEASE_TTL = timedelta(seconds=90)
HEARTBEAT = timedelta(seconds=30)


def first_run_at(ctx: jobs.Context, name: str, every: timedelta) -> datetime:
    """When a job is next due, from its last completed run kept in the database."""
    now = ctx.clock()
    with ctx.sessions() as db:
        last = db.scalar(select(JobRun.last_run_at).where(JobRun.name == name))
    return now if last is None else max(now, last + every)


def _record_run(ctx: jobs.Context, name: str) -> None:
    with ctx.sessions.begin() as db:
        row = db.get(JobRun, name)
        if row is None:
            db.add(JobRun(name=name, last_run_at=ctx.clock()))
        else:
            row.last_run_at = ctx.clock()


def _guarded(ctx: jobs.Context, name: str, stage: Callable[[], object]) -> Callable[[], None]:
    """A job that logs its own failure and records its completion, never killing the ticker."""

    def run() -> None:
        try:
            stage()
        except Exception:
            log.exception("job_failed", job=name)
            return
        _record_run(ctx, name)

    return run


def pipeline(ctx: jobs.Context) -> None:
    """Sessions, rules: one job, since rules read what the session stage wrote."""
    jobs.rebuild_sessions(ctx)
    jobs.evaluate_rules(ctx)


STAGES = frozenset({"sync", "evaluate", "notify"})


def run_daemon(
    ctx: jobs.Context,
    *,
    stages: frozenset[str] | set[str] = STAGES,
    stop: threading.Event | None = None,
) -> None:
    """Block until SIGTERM/SIGINT (or ``stop`` is set), running ``stages`` on their timers."""
    holder = lease.holder_name()
    other = lease.acquire(ctx.sessions, DAEMON_LEASE, holder, ttl=LEASE_TTL, now=ctx.clock())
    if other is not None:
        raise UserError(
            f"another mentorpulse daemon ({other}) is running on this database; "
            "stop it first, or wait for its lease to expire (90 s after it died)"
        )
    stop = stop or threading.Event()
    misfire = int(ctx.config.schedule.misfire_grace.total_seconds())
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire},
        timezone="UTC",
    )

    def add(name: str, every: timedelta, stage: Callable[[], object]) -> None:
        scheduler.add_job(
            _guarded(ctx, name, stage),
            "interval",
            seconds=every.total_seconds(),
            next_run_time=first_run_at(ctx, name, every),
            id=name,
        )

    if "sync" in stages:
        for source in ctx.config.sources:
            add(
                f"sync:{source.id}",
                source.poll_every,
                functools.partial(jobs.sync_sources, ctx, [source.id], respect_backoff=True),
            )
    if "evaluate" in stages:
        add("evaluate", ctx.config.schedule.evaluate_every, lambda: pipeline(ctx))
    if "notify" in stages:
        add("notify", ctx.config.notify.every, lambda: jobs.send_notifications(ctx))

    def heartbeat() -> None:
        if lease.acquire(ctx.sessions, DAEMON_LEASE, holder, ttl=LEASE_TTL, now=ctx.clock()):
            log.error("daemon_lease_lost", holder=holder)
            stop.set()

    scheduler.add_job(heartbeat, "interval", seconds=HEARTBEAT.total_seconds(), id="heartbeat")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("daemon_stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = (
        {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    scheduler.start()
    log.info("daemon_started", holder=holder, jobs=len(scheduler.get_jobs()))
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        lease.release(ctx.sessions, DAEMON_LEASE, holder)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("daemon_stopped", holder=holder)

"""The Prometheus figures of a long-running process (`/metrics`).

Two kinds, so that figures from several workers add up (README, "Metrics"):

- **Per process** (counters and histograms: job durations, pages, events and item errors
  this process synced; its config reloads): module-level, fed by :func:`observe_job`,
  :func:`observe_sync` and :func:`observe_reload`. Prometheus sums them over workers.
- **Database-wide** (gauges: sources' state, findings, outbox, live workers): read from
  the database at scrape time by :class:`DatabaseFigures`; every worker reports the same
  value, labelled ``scope="database"``, so aggregate them with ``max`` (never ``sum``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mentorpulse import stages
from mentorpulse.stages.source_health import stale_sources
from mentorpulse.storage import metrics as stored
from mentorpulse.storage import sources as stored_sources
from mentorpulse.storage.models import Source

log = structlog.get_logger(__name__)

PREFIX = "mentorpulse"
SOURCE_STATES = ("ok", "stale", "resyncing", "needs_reauth")
DATABASE_SCOPE = {"scope": "database"}
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: none needed
PROCESS = CollectorRegistry()  # this process's own figures, whatever serves them

JOB_DURATION = Histogram(
    f"{PREFIX}_job_duration_seconds",
    "How long this process's runs of each stage took.",
    ["stage", "result"],
    buckets=DURATION_BUCKETS,
    registry=PROCESS,
)
SYNC_PAGES = Counter(
    f"{PREFIX}_sync_pages",
    "Pages this process fetched and stored, per source.",
    ["source"],
    registry=PROCESS,
)
SYNC_EVENTS_STORED = Counter(
    f"{PREFIX}_sync_events_stored",
    "Events this process stored (new or changed), per source.",
    ["source"],
    registry=PROCESS,
)
SYNC_ITEM_ERRORS = Counter(
    f"{PREFIX}_sync_item_errors",
    "Items this process skipped as unreadable, per source.",
    ["source"],
    registry=PROCESS,
)
CONFIG_RELOAD_SUCCESS = Gauge(
    f"{PREFIX}_config_last_reload_success",
    "1 if this process's last config load (start or SIGHUP) succeeded, else 0.",
    registry=PROCESS,
)
CONFIG_RELOAD_TIME = Gauge(
    f"{PREFIX}_config_last_reload_success_timestamp_seconds",
    "When this process last loaded its config successfully (Unix time).",
    registry=PROCESS,
)


def stage_of(job: str) -> str:
    """The stage a job runs: ``sync:google`` → ``sync`` (one label value per stage)."""
    return job.partition(":")[0]


def observe_job(stage: str, seconds: float, *, ok: bool) -> None:
    """A run of ``stage`` (a job name is fine) ended after ``seconds``."""
    JOB_DURATION.labels(stage_of(stage), "ok" if ok else "failed").observe(seconds)


def observe_sync(results: Iterable[stages.SourceResult]) -> None:
    """What this process's sync of each source fetched and stored."""
    for result in results:
        SYNC_PAGES.labels(result.source_id).inc(result.pages)
        SYNC_EVENTS_STORED.labels(result.source_id).inc(result.stored)
        SYNC_ITEM_ERRORS.labels(result.source_id).inc(result.item_errors)


ANSWER_REQUESTS = Counter(
    f"{PREFIX}_answer_requests",
    "Attendance-answer page requests this process served, by method and result "
    "(shown, recorded, expired, invalid, failed).",
    ["method", "result"],
    registry=PROCESS,
)


def observe_answer(method: str, result: str) -> None:
    """An answer page was served: the question ``shown`` or an answer ``recorded`` (a
    link refused as ``expired`` or ``invalid``; ``failed``: an error on our side)."""
    ANSWER_REQUESTS.labels(method, result).inc()


def observe_reload(*, ok: bool, at: datetime) -> None:
    """The config was loaded (``ok``) or a new one refused; the old one stays in force."""
    CONFIG_RELOAD_SUCCESS.set(1 if ok else 0)
    if ok:
        CONFIG_RELOAD_TIME.set(at.timestamp())


class _ProcessFigures(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from PROCESS.collect()


class DatabaseFigures(Collector):
    """The gauges that describe the whole database, read at each scrape (see the
    module docstring). If the database cannot be read, they are left out and
    ``mentorpulse_database_read_success`` is 0."""

    def __init__(self, ctx: stages.Context) -> None:
        self.ctx = ctx
        self.failing = False

    def collect(self) -> Iterator[Metric]:
        try:
            figures = list(self._read())
        except Exception as exc:
            if not self.failing:
                log.warning("metrics_database_unreadable", error=type(exc).__name__)
            self.failing = True
            figures = []
        else:
            if self.failing:
                log.info("metrics_database_readable")
            self.failing = False
        yield _gauge(
            "database_read_success",
            "1 if this scrape could read the database-wide figures, else 0.",
            [([], 0.0 if self.failing else 1.0)],
            labelled=False,
        )
        yield from figures

    def _read(self) -> Iterator[Metric]:
        now = self.ctx.clock()
        return itertools.chain(self._sources(now), self._work(now))

    def _sources(self, now: datetime) -> Iterator[Metric]:
        """Each configured source's health, as the evaluation stage judges it."""
        config = self.ctx.config
        with self.ctx.db() as db:
            rows = stored_sources.sources(db)
            events = stored_sources.event_counts(db)
            stale = stale_sources(db, config, now)
        configured = [source.id for source in config.sources]
        succeeded = {
            source_id: row.last_success_at
            for source_id, row in rows.items()
            if source_id in configured and row.last_success_at is not None
        }
        yield _gauge(
            "source_last_success_timestamp_seconds",
            "When each source last synced successfully (Unix time).",
            [([s], at.timestamp()) for s, at in succeeded.items()],
            ["source"],
        )
        yield _gauge(
            "source_sync_lag_seconds",
            "Seconds since each source last synced successfully.",
            [([s], max(0.0, (now - at).total_seconds())) for s, at in succeeded.items()],
            ["source"],
        )
        yield _gauge(
            "source_consecutive_failures",
            "Failed syncs of each source since its last success.",
            [([s], float(rows[s].failures or 0) if s in rows else 0.0) for s in configured],
            ["source"],
        )
        yield _gauge(
            "source_events",
            "Events each source has stored in the database.",
            [([s], float(events.get(s, 0))) for s in configured],
            ["source"],
        )
        states = {s: source_state(rows.get(s), stale=s in stale) for s in configured}
        yield _gauge(
            "source_state",
            "1 for the state each source is in (ok, stale, resyncing, needs_reauth), else 0.",
            [([s, st], float(states[s] == st)) for s in configured for st in SOURCE_STATES],
            ["source", "state"],
        )

    def _work(self, now: datetime) -> Iterator[Metric]:
        """Findings, the outbox, the workers."""
        with self.ctx.db() as db:
            findings = stored.findings_by_rule_and_state(db)
            outbox = stored.outbox_by_status(db)
            failures = stored.send_failures_by_kind(db)
            oldest = stored.oldest_queued_at(db)
            stalled_after = self.ctx.config.service.pool.stalled_after  # the pool's own bound
            workers = stored.live_workers(db, now=now, stalled_after=stalled_after)
        yield _gauge(
            "findings",
            "Findings by rule and state.",
            [([rule, state], float(n)) for rule, state, n in findings],
            ["rule", "state"],
        )
        yield _gauge(
            "outbox_messages",
            "Outbox rows by status.",
            [([status], float(n)) for status, n in outbox.items()],
            ["status"],
        )
        yield _gauge(
            "outbox_send_failures",
            "Outbox rows whose last send attempt failed, by kind "
            "(retrying, permanent, delivery_unknown).",
            [([kind], float(n)) for kind, n in failures.items()],
            ["kind"],
        )
        age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        yield _gauge(
            "outbox_oldest_queued_age_seconds",
            "Age of the oldest message still waiting to be sent (0: none waits).",
            [([], age)],
        )
        yield _gauge(
            "workers_alive",
            "Worker processes alive on this database (embedded: 1).",
            [([], float(1 if workers is None else workers))],
        )


def source_state(row: Source | None, *, stale: bool) -> str:
    """One of :data:`SOURCE_STATES`: waiting for new credentials comes first, then a
    full resync in progress, then staleness as the evaluation stage judges it
    (:func:`~mentorpulse.stages.source_health.stale_sources`)."""
    if row is not None and row.needs_reauth_at is not None:
        return "needs_reauth"
    if row is not None and row.resync_started_at is not None:
        return "resyncing"
    return "stale" if stale else "ok"


def _gauge(
    name: str,
    documentation: str,
    samples: Iterable[tuple[list[str], float]],
    labels: Iterable[str] = (),
    *,
    labelled: bool = True,
) -> GaugeMetricFamily:
    """A database-wide gauge, labelled ``scope="database"`` (``labelled``)."""
    scope = DATABASE_SCOPE if labelled else {}
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=[*labels, *scope])
    for values, value in samples:
        family.add_metric([*values, *scope.values()], value)
    return family


def registry(ctx: stages.Context) -> CollectorRegistry:
    """What one `/metrics` serves: this process's figures and the database's."""
    served = CollectorRegistry(auto_describe=False)
    served.register(_ProcessFigures())
    served.register(DatabaseFigures(ctx))
    return served


def exposition(served: CollectorRegistry) -> bytes:
    """The Prometheus text format of ``served``."""
    return generate_latest(served)

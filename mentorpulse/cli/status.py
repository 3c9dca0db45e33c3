"""`mentorpulse status`: is every source and every stage healthy, and if not, what does the
operator do? Exit 1 while a source needs attention or a stage's last run failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from mentorpulse.cli.common import (
    ConfigOption,
    FormatOption,
    OutputFormat,
    TzOption,
    out,
    print_json,
    view_zone,
    with_context,
)
from mentorpulse.text import local_time

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from zoneinfo import ZoneInfo

    from pydantic import BaseModel

    from mentorpulse.config.schema import Source as SourceConfig
    from mentorpulse.stages import Context
    from mentorpulse.storage.models import JobRun, Lease, Source


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _state(source: Source | None, now: datetime, configured: BaseModel) -> str:
    from mentorpulse.stages.sync import config_fingerprint, reauth_step

    if source is None:
        return "not synced yet"
    if source.needs_reauth_at is not None:
        if source.config_fingerprint != config_fingerprint(configured):
            return "needs_reauth: the config changed since; the next sync tries it again"
        return f"needs_reauth: {reauth_step(configured)}"
    if source.held_deletions is not None:
        return f"deletions held ({source.held_deletions})"
    if source.resync_started_at is not None:
        return "full resync under way"
    if not source.healthy:
        retry = source.next_attempt_at
        return "failing" + (f", retry {_when(retry, now)}" if retry else "")
    return "ok"


def _stage_state(run: JobRun | None) -> str:
    if run is None:
        return "never run"
    return "failing" if run.failing else "ok"


def _last_error(run: JobRun | None, now: datetime) -> str:
    if run is None or run.last_error is None:
        return ""
    return f"{_when(run.last_error_at, now)}: {run.last_error}"


@dataclass
class _Report:
    """What ``status`` shows: the tables, the same rows for --format json, the problems."""

    now: datetime
    sources: Table = field(
        default_factory=lambda: Table(
            "source", "kind", "state", "last success", "events", "item errors"
        )
    )
    stages: Table = field(
        default_factory=lambda: Table("stage", "state", "last run", "last success", "last error")
    )
    source_rows: list[dict[str, object]] = field(default_factory=list)
    stage_rows: list[dict[str, object]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _add_source(
    report: _Report, configured: SourceConfig, source: Source | None, events: int, zone: ZoneInfo
) -> None:
    now = report.now
    state = _state(source, now, configured)
    if state != "ok":
        detail = source.last_error if source and source.last_error else state
        if source is not None and source.needs_reauth_at is not None:
            detail = f"{detail} ({_when(source.needs_reauth_at, now)}); {state}"
        report.problems.append(f"{configured.id}: {detail}")
    last_success = source.last_success_at if source else None
    item_errors = len(source.item_errors or []) if source else 0
    report.sources.add_row(
        configured.id,
        configured.kind,
        state,
        _when(last_success, now) + (f" ({local_time(last_success, zone)})" if last_success else ""),
        str(events),
        str(item_errors),
    )
    report.source_rows.append(
        {
            "id": configured.id,
            "kind": configured.kind,
            "state": state,
            "last_success_at": last_success,
            "events": events,
            "item_errors": item_errors,
            "last_error": source.last_error if source else None,
            "needs_reauth_at": source.needs_reauth_at if source else None,
        }
    )


def _add_stage(report: _Report, name: str, run: JobRun | None) -> None:
    now = report.now
    if run is not None and run.failing:
        report.problems.append(
            f"stage {name}: its last run failed ({_when(run.last_error_at, now)}): {run.last_error}"
        )
    report.stages.add_row(
        name,
        _stage_state(run),
        _when(run.last_run_at if run else None, now),
        _when(run.last_success_at if run else None, now),
        Text(_last_error(run, now)),
    )
    report.stage_rows.append(
        {
            "stage": name,
            "state": _stage_state(run),
            "last_run_at": run.last_run_at if run else None,
            "last_success_at": run.last_success_at if run else None,
            "last_error_at": run.last_error_at if run else None,
            "last_error": run.last_error if run else None,
        }
    )


def _gather(ctx: Context, zone: ZoneInfo) -> tuple[_Report, Lease | None]:
    """Read every source's and stage's state; the daemon's lease if one is live."""
    from mentorpulse.service import runner
    from mentorpulse.storage import runs, sources

    report = _Report(now=ctx.clock())
    with ctx.db() as db:
        rows = sources.sources(db)
        counts = sources.event_counts(db)
        job_runs = runs.job_runs(db)
        daemon = runs.get_lease(db, runner.DAEMON_LEASE)
    for configured in ctx.config.sources:
        _add_source(report, configured, rows.get(configured.id), counts.get(configured.id, 0), zone)
    for name in runner.job_names(ctx):
        run = job_runs.get(name)
        if name not in runner.STAGE_JOBS and (run is None or not run.failing):
            continue  # a source's sync job: the table above tells how its sync went
        _add_stage(report, name, run)
    live = daemon is not None and daemon.expires_at > report.now
    return report, daemon if live else None


def _print_json(report: _Report, daemon: Lease | None, zone: ZoneInfo) -> None:
    from mentorpulse.service.lease import display

    print_json(
        {
            "ok": not report.problems,
            "zone": str(zone),
            "sources": report.source_rows,
            "stages": report.stage_rows,
            "daemon": (
                {"holder": display(daemon.holder), "lease_expires_at": daemon.expires_at}
                if daemon is not None
                else None
            ),
            "problems": report.problems,
        },
        zone=zone,
    )


def _print_tables(report: _Report, daemon: Lease | None, zone: ZoneInfo) -> None:
    from mentorpulse.service.lease import display

    out.print(report.sources)
    out.print(report.stages)
    if daemon is not None:
        out.print(
            f"daemon: {display(daemon.holder)} (its lease runs out "
            f"{_when(daemon.expires_at, report.now)}, {local_time(daemon.expires_at, zone)}, "
            "unless renewed)",
            highlight=False,
            markup=False,
        )
    else:
        out.print("daemon: not running (no live lease)", highlight=False)
    for problem in report.problems:
        out.print(problem, highlight=False, markup=False, soft_wrap=True)


def status(
    config: ConfigOption = None, tz: TzOption = None, fmt: FormatOption = OutputFormat.table
) -> None:
    """Show each source's health, last sync and last error, and each stage's last run, last
    success and last error; exit 1 if a source needs attention or a stage is failing."""

    def action(ctx: Context) -> bool:
        zone = view_zone(tz, ctx.config)
        report, daemon = _gather(ctx, zone)
        if fmt is OutputFormat.json:
            _print_json(report, daemon, zone)
        else:
            _print_tables(report, daemon, zone)
        return not report.problems

    if not with_context(config, action, write=False):
        raise typer.Exit(1)

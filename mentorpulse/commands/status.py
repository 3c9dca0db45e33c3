"""`mentorpulse status`: is every source healthy, and if not, what does the operator do?"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from mentorpulse.commands.common import (
    ConfigOption,
    FormatOption,
    OutputFormat,
    TzOption,
    local_time,
    out,
    print_json,
    view_zone,
    with_context,
)

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from mentorpulse.daemon.jobs import Context
    from mentorpulse.storage.models import Source


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


def _state(source: Source | None, now: datetime) -> str:
    if source is None:
        return "not synced yet"
    if source.held_deletions is not None:
        return f"deletions held ({source.held_deletions})"
    if source.resync_started_at is not None:
        return "full resync under way"
    if not source.healthy:
        retry = source.next_attempt_at
        return "failing" + (f", retry {_when(retry, now)}" if retry else "")
    return "ok"


def status(
    config: ConfigOption = None, tz: TzOption = None, fmt: FormatOption = OutputFormat.table
) -> None:
    """Show each source's health, last sync and last error; exit 1 if any needs attention."""
    from sqlalchemy import func, select

    from mentorpulse.storage.models import Event, Source

    def action(ctx: Context) -> bool:
        now = ctx.clock()
        zone = view_zone(tz, ctx.config)
        table = Table("source", "kind", "state", "last success", "events", "item errors")
        listed: list[dict[str, object]] = []  # the same rows for --format json
        problems: list[str] = []
        with ctx.sessions() as db:
            rows = {s.id: s for s in db.scalars(select(Source))}
            counts = dict(
                db.execute(select(Event.source_id, func.count()).group_by(Event.source_id)).all()
            )
            for configured in ctx.config.sources:
                source = rows.get(configured.id)
                state = _state(source, now)
                if state != "ok":
                    detail = source.last_error if source and source.last_error else state
                    problems.append(f"{configured.id}: {detail}")
                last_success = source.last_success_at if source else None
                table.add_row(
                    configured.id,
                    configured.kind,
                    state,
                    _when(last_success, now)
                    + (f" ({local_time(last_success, zone)})" if last_success else ""),
                    str(counts.get(configured.id, 0)),
                    str(len(source.item_errors or []) if source else 0),
                )
                listed.append(
                    {
                        "id": configured.id,
                        "kind": configured.kind,
                        "state": state,
                        "last_success_at": last_success,
                        "events": counts.get(configured.id, 0),
                        "item_errors": len(source.item_errors or []) if source else 0,
                        "last_error": source.last_error if source else None,
                    }
                )
        if fmt is OutputFormat.json:
            print_json(
                {"ok": not problems, "zone": str(zone), "sources": listed, "problems": problems},
                zone=zone,
            )
            return not problems
        out.print(table)
        for problem in problems:
            out.print(problem, highlight=False, markup=False, soft_wrap=True)
        return not problems

    if not with_context(config, action):
        raise typer.Exit(1)

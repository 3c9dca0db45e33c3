"""`mentorpulse sync`, `evaluate` and `run`: one stage now, or every stage on its timer."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mentorpulse.cli.common import (
    ConfigOption,
    OptionError,
    out,
    user_errors,
    with_context,
)


def sync(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over the sources, then exit.")
    ] = False,
    source: Annotated[
        list[str] | None, typer.Option("--source", "-s", help="Only this source id (repeatable).")
    ] = None,
) -> None:
    """Pull the calendars into the database (without --once: keep polling until stopped)."""
    from mentorpulse import stages
    from mentorpulse.cli.progress import sync_progress

    with user_errors():
        if source and not once:
            raise OptionError("--source needs --once (polling reads every source)")

    def action(ctx: stages.Context) -> None:
        known = [s.id for s in ctx.config.sources]
        unknown = [s for s in source or () if s not in known]
        if unknown:
            raise OptionError(
                f"--source: no source {', '.join(map(repr, unknown))} in the config "
                f"(sources: {', '.join(known) or 'none'})"
            )
        if not once:
            from mentorpulse.service import runner

            runner.run_daemon(ctx, only={"sync"})
            return
        with sync_progress() as progress:
            results = stages.sync_sources(ctx, source, progress=progress)
        table = Table("source", "ok", "pages", "stored", "deleted", "dropped", "item errors")
        for r in results:
            note = " (full resync)" if r.resynced else ""
            table.add_row(
                r.source_id,
                f"yes{note}" if r.ok else f"no: {r.error}",
                str(r.pages),
                str(r.stored),
                str(r.deleted),
                str(r.dropped),
                str(r.item_errors),
            )
        out.print(table)
        if not all(r.ok for r in results):
            raise typer.Exit(1)

    with_context(config, action)


def evaluate(
    config: ConfigOption = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Judge every pairing, not only those changed or due."),
    ] = False,
) -> None:
    """Judge sessions from the stored events and run the cadence rules."""
    from mentorpulse import stages
    from mentorpulse.service import runner

    def action(ctx: stages.Context) -> None:
        with ctx.recorded("evaluate"):  # `status` shows a failed run, as the daemon's
            sessions, stats = runner.pipeline(ctx, full=full)
        out.print(
            f"{sessions.pairings} pairings re-judged, {sessions.changed} sessions changed; "
            f"{stats.pairings} pairings evaluated: {stats.firing} firing, "
            f"{stats.pending} pending findings"
            + (f", {stats.suppressed} suppressed (stale sources)" if stats.suppressed else "")
            + (f", {stats.errors} rule errors" if stats.errors else ""),
            highlight=False,
        )

    with_context(config, action)


def run(config: ConfigOption = None) -> None:
    """Run every stage on its schedule until SIGTERM or Ctrl-C: on SQLite one process (a
    second is refused); on PostgreSQL a worker of a pool that any number of them share."""
    from mentorpulse import stages

    def action(ctx: stages.Context) -> None:
        if ctx.engine.dialect.name == "postgresql":
            from mentorpulse.service import pool

            pool.run_worker(ctx)
            return
        from mentorpulse.service import runner

        runner.run_daemon(ctx)

    with_context(config, action)

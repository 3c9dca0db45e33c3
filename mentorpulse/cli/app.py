"""The `mentorpulse` command: each stage alone, the daemon, the demo, config tools."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentorpulse import logs
from mentorpulse.cli import auth_google
from mentorpulse.cli import status as status_command
from mentorpulse.cli.auth import auth_app
from mentorpulse.cli.auth_microsoft import auth_microsoft
from mentorpulse.cli.common import (
    ConfigOption,
    GlobalOptions,
    OptionError,
    check_range,
    day_option,
    log_settings,
    out,
    user_errors,
    with_context,
)
from mentorpulse.cli.notify import notify, outbox_app
from mentorpulse.cli.rules import explain, rules_app, silence_app

app = typer.Typer(
    cls=GlobalOptions,  # --config and --log-* on every command, in any position
    help="Track which mentoring pairs actually meet, from the calendars you already have.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Check and describe the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(auth_app, name="auth")
auth_app.command("microsoft")(auth_microsoft)
auth_app.command("google")(auth_google.google)
app.command("status")(status_command.status)
app.add_typer(outbox_app, name="outbox")
app.command("notify")(notify)
app.add_typer(rules_app, name="rules")
app.add_typer(silence_app, name="silence")
app.command("explain")(explain)


PRIVATE_UMASK = 0o077


@app.callback()
def main_options(ctx: typer.Context) -> None:
    """Before any command: files we create are private, logs go where they were asked to."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)  # database, reports, outbox, tokens
    logs.configure(**log_settings(ctx))


# ---------------------------------------------------------------- config


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate mentorpulse.yaml and the roster, and open the database; print every
    problem with file:line."""
    from mentorpulse.config.loader import check_source_paths, config_path, load_config
    from mentorpulse.config.roster import load_roster
    from mentorpulse.config.schema import sqlite_path
    from mentorpulse.rules.check import check_selectors
    from mentorpulse.storage.engine import check_connection
    from mentorpulse.storage.migrate import open_read_only

    with user_errors():
        path = config_path(config)
        loaded = load_config(path)
        roster = load_roster(loaded.resolve(loaded.roster.path), loaded)
        check_selectors(loaded, roster, path)
        check_source_paths(loaded, path)
    out.print(
        f"{path}: ok — {len(loaded.programs)} programs, {len(loaded.sources)} sources, "
        f"{len(roster)} pairings",
        highlight=False,
    )
    with user_errors():
        database = check_connection(loaded.database, loaded.base_dir)
        existing = sqlite_path(loaded.database, loaded.base_dir)
        if existing is None or existing.exists():  # its schema: not behind, not migrated
            open_read_only(loaded.database, loaded.base_dir, empty_ok=True).dispose()
    out.print(f"database: {database}", highlight=False, markup=False, soft_wrap=True)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of mentorpulse.yaml (for editor autocompletion)."""
    from mentorpulse.config.loader import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to this version of mentorpulse."""
    from mentorpulse.config.loader import config_path, load_config
    from mentorpulse.storage.engine import make_engine, safe_url
    from mentorpulse.storage.migrate import revision_state, upgrade

    with user_errors():
        loaded = load_config(config_path(config))
        engine = make_engine(loaded.database, loaded.base_dir)
        upgrade(engine)
        current, _head = revision_state(engine)
    out.print(f"{safe_url(str(engine.url))}: schema at revision {current}", highlight=False)


# ---------------------------------------------------------------- stages


@app.command()
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
    from mentorpulse.service import runner

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


@app.command()
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


class ReportFormat(StrEnum):
    csv = "csv"
    html = "html"


REPORT_SUFFIXES = {".csv": ReportFormat.csv, ".html": ReportFormat.html, ".htm": ReportFormat.html}


@app.command()
def report(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
    config: ConfigOption = None,
    fmt: Annotated[
        ReportFormat | None,
        typer.Option(
            "--format",
            help="csv or html (default: from the extension of --out, else csv).",
            show_default=False,
        ),
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Attended vs scheduled, one row per pairing, for the days given."""
    from mentorpulse import stages
    from mentorpulse.reports.export import write_report

    with user_errors():
        first, last = day_option(start, "--from"), day_option(end, "--to")
        check_range(first, last)
        if out_path is not None:
            check_out_path(out_path)
        chosen = report_format(fmt, out_path)

    def action(ctx: stages.Context) -> None:
        try:
            written = write_report(
                ctx.db,
                first=first,
                last=last,
                zone=ctx.config.timezone,
                now=ctx.clock(),
                fmt=chosen.value,
                out=out_path,
                sources=ctx.config.sources,
            )
        except BrokenPipeError:  # the reader (`| head`) has all it wanted: not an error
            raise typer.Exit(0) from None
        except OSError as exc:  # a full disk, a folder removed meanwhile, no permission
            if out_path is None:
                raise
            raise OptionError(
                f"--out {out_path}: cannot write the report ({exc.strerror})"
            ) from None
        if written.note:
            typer.echo(f"warning: {written.note}", err=True)

    with_context(config, action, write=False)


def report_format(fmt: ReportFormat | None, out_path: Path | None) -> ReportFormat:
    """--format, else the one --out's extension names; a mismatch is refused, not obeyed."""
    if out_path is None:
        return fmt or ReportFormat.csv
    suffix = out_path.suffix.lower()
    implied = REPORT_SUFFIXES.get(suffix)
    if fmt is None:
        if implied is None:
            raise OptionError(
                f"--out {out_path}: cannot tell the format from "
                + (f"the extension {suffix}" if suffix else "a name without extension")
                + "; give --format csv or --format html"
            )
        return implied
    if implied is not None and implied != fmt:
        raise OptionError(
            f"--format {fmt.value} does not match --out {out_path} (a {suffix} file): "
            f"name the file .{fmt.value} or drop --format"
        )
    return fmt


def check_out_path(path: Path) -> None:
    """--out names a file in a folder that exists: say so before the report is computed."""
    try:
        is_folder, parent_exists = path.is_dir(), path.parent.is_dir()
    except OSError as exc:  # a name too long, a folder we may not look into
        raise OptionError(f"--out {path}: cannot write the report ({exc.strerror})") from None
    if is_folder:
        raise OptionError(
            f"--out {path}: is a folder; give a file name, like {path / 'report.csv'}"
        )
    if not parent_exists:
        raise OptionError(f"--out {path}: the folder {path.parent} does not exist; create it first")


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run every stage on its schedule until SIGTERM or Ctrl-C."""
    from mentorpulse.service import runner

    with_context(config, runner.run_daemon)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Folder for the sample deployment (created if missing).")
    ] = Path("mentorpulse-demo"),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite files in --workdir that an earlier demo did not write."
        ),
    ] = False,
) -> None:
    """Write a sample organisation and run the whole flow on it, on SQLite."""
    from mentorpulse.cli.demo import run_demo

    with user_errors():
        summary = run_demo(workdir, today=datetime.now(UTC).date(), force=force)
    out.print(summary.table())


def main() -> None:
    app()

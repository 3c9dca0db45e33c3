"""`mentorpulse notify` and `mentorpulse outbox …`: send, preview, and operate the outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mentorpulse.cli.common import (
    ConfigOption,
    FormatOption,
    OptionError,
    OutputFormat,
    TzOption,
    duration_option,
    err,
    out,
    print_json,
    user_errors,
    view_zone,
    with_context,
)
from mentorpulse.text import local_time

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from zoneinfo import ZoneInfo

    from mentorpulse.storage.models import OutboxMessage

outbox_app = typer.Typer(
    help="Inspect and operate the outbox of notifications.", no_args_is_help=True
)


def notify(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what would be sent now; send and store nothing."),
    ] = False,
) -> None:
    """Queue notifications for firing findings and the scheduled reports that are due, then
    deliver what is due."""
    from mentorpulse import stages
    from mentorpulse.stages.notify import preview
    from mentorpulse.storage.outbox import counts

    def action(ctx: stages.Context) -> None:
        if dry_run:
            emails = preview(ctx)
            table = Table("to", "subject", "template", "items", title="would send now")
            for e in emails:
                table.add_row(e.recipient, e.subject, e.template, str(e.items))
            out.print(table)
            out.print(f"{len(emails)} emails would be sent (dry run: nothing sent)")
            return
        with ctx.recorded("notify"):  # `status` shows a failed run, as the daemon's
            stats = stages.send_notifications(ctx)
        out.print(
            f"{stats.queued} queued, {stats.sent} sent, {stats.failed} failed, "
            f"{stats.retried} to retry",
            highlight=False,
        )
        with ctx.db() as db:
            unknown = counts(db).get("unknown", 0)
        if unknown:
            err.print(
                f"{unknown} emails may or may not have been delivered (a sender died mid-send): "
                "see `mentorpulse outbox list --status unknown`; `outbox retry ID` resends one",
                highlight=False,
            )
        if stats.released:
            err.print(
                f"{stats.released} emails handed back unsent: sending is slower than "
                "notify.lease allows; raise notify.lease (or the transport's timeout is too "
                "long for it)",
                highlight=False,
            )
        if stats.failed:
            err.print(
                "some emails failed for good: see `mentorpulse outbox list --status failed`",
                highlight=False,
            )
        if stats.failed or stats.released:
            raise typer.Exit(1)

    with_context(config, action)


STATUSES = ("pending", "sending", "sent", "failed", "unknown", "digest", "digested", "cancelled")


@outbox_app.command("list")
def outbox_list(
    config: ConfigOption = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help=f"Only these statuses ({', '.join(STATUSES)})."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows, newest first.")] = 50,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show outbox rows: who, what, status, attempts, next attempt, last error."""
    from mentorpulse import stages
    from mentorpulse.storage.outbox import counts, latest

    with user_errors():
        for s in status or ():
            if s not in STATUSES:
                raise OptionError(f"--status: expected one of {', '.join(STATUSES)}, got {s!r}")

    def action(ctx: stages.Context) -> None:
        zone = view_zone(tz, ctx.config)
        with ctx.db() as db:
            rows = latest(db, statuses=status or (), limit=limit)
            totals = counts(db)
        if fmt is OutputFormat.json:
            _print_rows_json(rows, totals, zone)
        else:
            _print_rows(rows, totals, zone)

    with_context(config, action, write=False)


def _print_rows_json(rows: list[OutboxMessage], totals: dict[str, int], zone: ZoneInfo) -> None:
    document = {
        "zone": str(zone),
        "messages": [
            {
                "id": row.id,
                "status": row.status,
                "recipient": row.recipient,
                "template": row.template,
                "attempts": row.attempts,
                "created_at": row.created_at,
                "next_attempt_at": row.next_attempt_at,
                "sent_at": row.sent_at,
                "last_error": row.last_error,
            }
            for row in rows
        ],
        "totals": dict(sorted(totals.items())),
    }
    print_json(document, zone=zone)


def _print_rows(rows: list[OutboxMessage], totals: dict[str, int], zone: ZoneInfo) -> None:
    table = Table("id", "status", "to", "template", "tries", "sent / due", "error")
    for column in table.columns:
        column.overflow = "fold"  # an operator needs whole addresses and errors
    for row in rows:
        when = row.sent_at if row.status == "sent" and row.sent_at else row.next_attempt_at
        table.add_row(
            str(row.id),
            row.status,
            row.recipient,
            row.template,
            str(row.attempts),
            local_time(when, zone),
            (row.last_error or "")[:300],  # whole in --format json
        )
    out.print(table)
    out.print(
        ", ".join(f"{n} {s}" for s, n in sorted(totals.items())) or "the outbox is empty",
        highlight=False,
    )


@outbox_app.command("retry")
def outbox_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Row ids (default: every failed/unknown row).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Queue failed (and unknown) rows again, due now; the next `notify` sends them."""
    from mentorpulse import stages
    from mentorpulse.storage.outbox import retry

    def action(ctx: stages.Context) -> None:
        with ctx.db.begin() as db:
            n = retry(db, now=ctx.clock(), ids=ids or ())
        out.print(f"{n} rows queued again", highlight=False)

    with_context(config, action)


@outbox_app.command("purge")
def outbox_purge(
    config: ConfigOption = None,
    older_than: Annotated[
        str, typer.Option(help="Only rows created longer ago than this (e.g. 90d).")
    ] = "90d",
    failed: Annotated[
        bool, typer.Option("--failed", help="Also delete failed and unknown rows.")
    ] = False,
) -> None:
    """Delete delivered rows older than --older-than (rows of findings still firing, of
    the latest scheduled reports and of attendance questions still open stay, so nothing
    is sent twice)."""
    from mentorpulse import stages
    from mentorpulse.notify.route import Alert
    from mentorpulse.stages.answers import questions_to_keep
    from mentorpulse.stages.reports import current_report_prefixes
    from mentorpulse.storage.outbox import firing_since, purge

    with user_errors():
        age = duration_option(older_than, "--older-than")

    def action(ctx: stages.Context) -> None:
        statuses = ("sent", "digested", "cancelled", *(("failed", "unknown") if failed else ()))
        with ctx.db.begin() as db:
            keep = [
                Alert.episode_key(fingerprint, since) for fingerprint, since in firing_since(db)
            ]
            now = ctx.clock()
            n = purge(
                db,
                before=now - age,
                statuses=statuses,
                keep=keep,
                keep_prefixes=current_report_prefixes(ctx.config, now),
                keep_since=[questions_to_keep(ctx, now)],
            )
        out.print(f"{n} rows purged", highlight=False)

    with_context(config, action)

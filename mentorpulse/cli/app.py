"""The `mentorpulse` command: the root group, assembled from one module per group."""

from __future__ import annotations

import os

import typer

from mentorpulse import logs
from mentorpulse.cli import config, db, demo, report, run
from mentorpulse.cli import status as status_command
from mentorpulse.cli.auth import auth_app
from mentorpulse.cli.common import (
    GlobalOptions,
    log_settings,
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
app.add_typer(config.config_app, name="config")
app.add_typer(db.db_app, name="db")
app.command()(run.sync)
app.command()(run.evaluate)
app.command()(report.report)
app.command()(run.run)
app.command()(demo.demo)
app.add_typer(auth_app, name="auth")
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


def main() -> None:
    app()

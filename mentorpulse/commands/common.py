"""What every command shares: the consoles, the --config option, user errors as one line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from mentorpulse.errors import UserError

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="mentorpulse.yaml (default: $MENTORPULSE_CONFIG, else ./config/mentorpulse.yaml).",
        show_default=False,
    ),
]

T = TypeVar("T")


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a user's mistake as one clear message and a non-zero exit, never a traceback."""
    from mentorpulse.config.loader import ConfigError

    try:
        yield
    except ConfigError as error:
        for problem in error.problems:
            err.print(problem, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(error.code) from None
    except UserError as error:
        err.print(f"error: {error.message}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(error.code) from None


def with_context(config: Path | None, action: Callable[..., T]) -> T:
    from mentorpulse.config.loader import config_path
    from mentorpulse.daemon.jobs import Context

    with user_errors():
        ctx = Context.open(config_path(config))
        try:
            return action(ctx)
        finally:
            ctx.engine.dispose()


def day_option(value: str, option: str) -> date:
    """A YYYY-MM-DD option, or one clear error naming the option."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: expected a date like 2026-01-31, got {value!r}") from None


def duration_option(value: str, option: str) -> timedelta:
    """A duration option (``14d``), or one clear error naming the option."""
    from mentorpulse.config.schema import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}, got {value!r}") from None


def check_range(first: date, last: date) -> None:
    """--from and --to in order."""
    if last < first:
        raise UserError("--to is before --from")

"""What every command shares: the consoles, the global options, user errors as one line."""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text
from typer.core import TyperGroup

from mentorpulse import logs
from mentorpulse.errors import UserError
from mentorpulse.model import known_zone, unknown_zone

if TYPE_CHECKING:
    from mentorpulse.config.schema import MentorpulseConfig

PIPE_WIDTH = 100_000  # wider than any row we print: a pipe gets whole lines, never wrapped


class _Console(Console):
    """A console that prints data as data: no markup, no emoji codes, and, when not a
    terminal, lines as long as they are (a pipe or a file is no 80-column screen)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._width = kwargs.get("width")  # not $COLUMNS: a terminal's width is read live

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, self._height or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# markup=False: a roster value such as "[/]" or "[link=…]" is text, never a rich tag.
out = _Console(markup=False, emoji=False, highlight=False)
err = _Console(stderr=True, markup=False, emoji=False, highlight=False)


class OptionError(UserError):
    """A command-line option that cannot be used: exit 2, as for the parser's own errors."""

    code = 2


# ---------------------------------------------------------------- global options

_CONFIG_KEY = "mentorpulse.config"
_LOGS_KEY = "mentorpulse.logs"
_CONFIG_HELP = "mentorpulse.yaml (default: $MENTORPULSE_CONFIG, else ./config/mentorpulse.yaml)."
GLOBAL_PANEL = "Global options (any position)"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _root_meta(ctx: typer.Context) -> dict[str, Any]:
    return ctx.find_root().meta


def _given_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """A command's own --config, else one given earlier on the line (before the command)."""
    if value is not None:
        _root_meta(ctx)[_CONFIG_KEY] = value
        return value
    found: Path | None = _root_meta(ctx).get(_CONFIG_KEY)
    return found


def _set_log_level(ctx: typer.Context, value: LogLevel | None) -> None:
    if value is not None:
        log_settings(ctx)["level"] = value.value
        logs.configure(**log_settings(ctx))


def _set_log_json(ctx: typer.Context, value: bool | None) -> None:
    if value is not None:
        log_settings(ctx)["json"] = value
        logs.configure(**log_settings(ctx))


def log_settings(ctx: typer.Context) -> dict[str, Any]:
    """The log level and format given so far on the command line, wherever they were."""
    settings: dict[str, Any] = _root_meta(ctx).setdefault(_LOGS_KEY, {})
    return settings


def _config_option(*, expose: bool) -> Any:
    """``--config``: on a command that reads it (``expose``) and, kept aside for the
    commands that do not, among the global options."""
    return typer.Option(
        "--config",
        "-c",
        help=_CONFIG_HELP,
        show_default=False,
        callback=_given_config,
        expose_value=expose,
        rich_help_panel=GLOBAL_PANEL,
    )


ConfigOption = Annotated[Path | None, _config_option(expose=True)]


def _global_options(
    config: Annotated[Path | None, _config_option(expose=False)] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            help="debug, info (default), warning or error.",
            case_sensitive=False,
            callback=_set_log_level,
            expose_value=False,
            show_default=False,
            rich_help_panel=GLOBAL_PANEL,
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-text",
            help="Log format (default: JSON unless a terminal).",
            callback=_set_log_json,
            expose_value=False,
            show_default=False,
            rich_help_panel=GLOBAL_PANEL,
        ),
    ] = None,
) -> None:
    """The template of the options every command and group accepts (see GlobalOptions)."""


def _global_params() -> list[Any]:
    """Fresh click parameters for ``_global_options``: copies of those typer built once
    (building them for each of the 28 commands was two thirds of typer's start-up)."""
    return [copy.copy(param) for param in _built_global_params()]


@functools.cache
def _built_global_params() -> tuple[Any, ...]:
    template = typer.Typer()
    template.command()(_global_options)
    return tuple(typer.main.get_command(template).params)


class GlobalOptions(TyperGroup):
    """The root group: gives --config, --log-level and --log-json/--log-text to every
    group and command under it, so each works before, between or after the command names.

    A command that declares its own ``config: ConfigOption`` keeps it; others accept
    --config and ignore it, so a wrapper that always passes it works for every command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._give_global_options(self)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if not sys.stderr.isatty():  # a usage error in a pipe or a log: lines, not a box
            self.rich_markup_mode = None
        return super().main(*args, **kwargs)

    @classmethod
    def _give_global_options(cls, command: Any) -> None:
        names = {p.name for p in command.params}
        command.params.extend(p for p in _global_params() if p.name not in names)
        for sub in getattr(command, "commands", {}).values():
            cls._give_global_options(sub)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="table (to read) or json (one document, for scripts).",
        case_sensitive=False,
    ),
]


def _check_zone(value: str | None) -> str | None:
    if value is not None and known_zone(value) is None:
        raise typer.BadParameter(unknown_zone(value))
    return value


TzOption = Annotated[
    str | None,
    typer.Option(
        "--tz",
        help="Show times in this IANA zone (default: the config's timezone).",
        callback=_check_zone,
        show_default=False,
    ),
]


def view_zone(tz: str | None, config: MentorpulseConfig) -> ZoneInfo:
    """The one zone a view shows its times in: --tz, else the config's ``timezone``."""
    return ZoneInfo(tz or config.timezone)


def print_json(document: Mapping[str, Any], *, zone: ZoneInfo | None = None) -> None:
    """One JSON document on standard output (a script reads it with one json.load).

    Moments are ISO 8601 in ``zone`` (the view's), days ISO dates, spans seconds.
    """

    def plain(value: object) -> object:
        if isinstance(value, datetime):
            return value.astimezone(zone).isoformat() if zone else value.isoformat()
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        return str(value)

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=plain) + "\n")


def heading(title: str) -> None:
    """A section title: a rule across a terminal, a plain line in a pipe."""
    if out.is_terminal:
        out.rule(Text(title))
    else:
        out.print(f"== {title} ==")


# ---------------------------------------------------------------- errors

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


def with_context(config: Path | None, action: Callable[..., T], *, write: bool = True) -> T:
    """Run ``action`` on an open context. ``write=False`` for a command that only reads:
    it neither migrates nor writes the roster (see ``Context.open``)."""
    from mentorpulse.config.loader import config_path
    from mentorpulse.stages import Context

    with user_errors():
        ctx = Context.open(config_path(config), write=write)
        try:
            return action(ctx)
        finally:
            ctx.engine.dispose()


def day_option(value: str, option: str) -> date:
    """A YYYY-MM-DD option, or one clear error naming the option."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise OptionError(f"{option}: expected a date like 2026-01-31, got {value!r}") from None


def duration_option(value: str, option: str) -> timedelta:
    """A duration option (``14d``), or one clear error naming the option."""
    from mentorpulse.config.schema import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise OptionError(f"{option}: {exc}, got {value!r}") from None


def check_range(first: date, last: date) -> None:
    """--from and --to in order."""
    if last < first:
        raise OptionError("--to is before --from")

"""structlog setup: readable on a terminal, one JSON object per line otherwise.

Every log line is an event name plus key=value fields. Values under keys that name a
secret are masked before rendering, wherever they come from.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

# rich's traceback and pretty-printer modules: structlog loads them with itself, to draw
# tracebacks on a terminal; our logs use them nowhere else.
RICH_TRACEBACKS = ("rich.traceback", "rich.pretty")


@contextmanager
def _hidden(modules: tuple[str, ...], *, hide: bool) -> Iterator[None]:
    """While inside, ``import`` of ``modules`` fails as if they were not installed (those
    not loaded yet; restored on the way out)."""
    hidden = [name for name in modules if hide and name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's "not installed"
    try:
        yield
    finally:
        for name in hidden:
            del sys.modules[name]


# Logs that are not for a terminal (JSON, or plain text in a pipe) never draw a rich
# traceback: there structlog loads as if rich were absent (plain tracebacks), which spares
# a one-shot command ~0.05 s of imports (rich.pretty, rich.traceback, pygments).
with _hidden(RICH_TRACEBACKS, hide=not (sys.stderr and sys.stderr.isatty())):
    import structlog

LEVELS = ("debug", "info", "warning", "error")
SECRET_WORDS = ("password", "secret", "token", "authorization", "api_key", "credential")


def redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask the value of any field whose name says it holds a secret."""
    for key in event_dict:
        if any(word in key.lower() for word in SECRET_WORDS):
            event_dict[key] = "***"
    return event_dict


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at the time of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    *, level: str = "info", stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Configure structlog and route stdlib logging (alembic, apscheduler) through it."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (expected {', '.join(LEVELS)})")
    out: TextIO = stream or _CurrentStderr()  # type: ignore[assignment]
    as_json = not out.isatty() if json is None else json
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))

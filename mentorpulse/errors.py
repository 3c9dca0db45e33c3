"""Errors a user can cause: shown as one clear message, exit non-zero, no traceback."""

from __future__ import annotations

import traceback
from pathlib import Path


class UserError(Exception):
    """Bad input from a person (config, roster, command line): one message, exit ``code``.

    ``message`` is complete on its own: where (file:line or source id), what, and when
    useful the next step. It never carries a secret.
    """

    code = 1

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(UserError):
    """The configuration or roster is invalid; ``problems`` lists every one found."""

    code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DatabaseUnavailable(UserError):
    """The configured database cannot be opened (a missing folder, a server that does not
    answer, a wrong password): the message names the URL, password masked, and what to do.
    """

    code = 2


def unexpected_summary(exc: BaseException, doing: str) -> str:
    """One line on an error nobody typed (a database refusal, a bug, a library's
    surprise), for ``status`` and ``last_error``: its type and where it was raised.

    Never the error's text: a DataError quotes the SQL parameters, a parser the line it
    choked on, so the message would carry calendar data (or secrets) into the status.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"unexpected {type(exc).__name__} while {doing}{where}"


def code_trace(exc: BaseException) -> str:
    """Where an unexpected error went through our code and the libraries', for the log:
    the frames only, never the message (which may quote calendar data or a secret)."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()

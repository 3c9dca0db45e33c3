"""Errors a user can cause: shown as one clear message, exit non-zero, no traceback."""

from __future__ import annotations


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

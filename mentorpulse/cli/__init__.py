"""The command line: one module per command group; :mod:`mentorpulse.cli.app` assembles them."""

import sys

# httpx loads its own command-line tool with itself (click, rich.syntax, pygments: ~0.05 s
# of every command that reads a calendar over HTTP) unless that import fails, as it does
# without httpx's [cli] extra. mentorpulse never runs it: mark it absent.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from mentorpulse.cli.app import app, main  # noqa: E402 - after the line above

__all__ = ["app", "main"]

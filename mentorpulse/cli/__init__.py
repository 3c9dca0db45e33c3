"""The command line: one module per command group; :mod:`mentorpulse.cli.app` assembles them."""

from mentorpulse.cli.app import app, main

__all__ = ["app", "main"]

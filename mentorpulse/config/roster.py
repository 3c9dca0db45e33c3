"""The roster CSV: one row per mentor/mentee pairing in a program."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class RosterPairing:
    """A pairing as the admin wrote it in the roster; ``line`` is its CSV line number."""

    program: str
    mentor_email: str  # lower-cased
    mentee_email: str  # lower-cased
    started_on: date
    ended_on: date | None = None
    mentor_name: str | None = None
    mentee_name: str | None = None
    mentor_timezone: str | None = None
    mentee_timezone: str | None = None
    line: int = 0

    @property
    def key(self) -> str:
        """Stable identity of the pairing across roster edits: program, mentor, mentee."""
        return f"{self.program}:{self.mentor_email}:{self.mentee_email}"

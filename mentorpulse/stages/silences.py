"""Silences: an admin's "do not notify" for a pair or a program, for a while.

A silenced finding keeps its state (it is still evaluated and shown by ``explain``);
only notification skips it. Which findings a silence covers is worked out on every
evaluation and whenever a silence is added or expired.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session as Db

from mentorpulse.errors import UserError
from mentorpulse.model import OPEN
from mentorpulse.stages.context import Context
from mentorpulse.storage import findings as stored
from mentorpulse.storage.models import Silence


def silence_matches(silence: Silence, program_id: str, mentor: str, mentee: str) -> bool:
    """Whether ``silence`` covers the pairing of this program, mentor and mentee."""
    if silence.program_id is not None and silence.program_id != program_id:
        return False
    if silence.mentor_email is not None and silence.mentor_email != mentor:
        return False
    return silence.mentee_email is None or silence.mentee_email == mentee


def apply_silences(db: Db, now: datetime) -> int:
    """Set ``silence_id`` on every open finding an active silence covers; clear it on
    findings whose silence ended. Returns the number of findings changed."""
    active = stored.active_silences(db, now)
    changed = 0
    for finding, program_id, mentor, mentee in stored.silenceable(db, any_active=bool(active)):
        wanted = None
        if finding.state in OPEN:
            matching = (s.id for s in active if silence_matches(s, program_id, mentor, mentee))
            wanted = next(matching, None)
        if finding.silence_id != wanted:
            finding.silence_id = wanted
            changed += 1
    return changed


@dataclass(frozen=True, slots=True)
class SilenceRequest:
    """What ``silence add`` asks for: a program, a pair (in a program or any), or both."""

    reason: str
    length: timedelta
    program_id: str | None = None
    mentor_email: str | None = None
    mentee_email: str | None = None
    created_by: str | None = (
        None  # who asked (the dashboard's signed-in email); default: the OS user
    )


def add_silence(ctx: Context, request: SilenceRequest) -> Silence:
    """Store a silence starting now and apply it to the open findings at once."""
    now = ctx.clock()
    with ctx.db.begin() as db:
        silence = stored.add_silence(
            db,
            program_id=request.program_id,
            mentor_email=request.mentor_email,
            mentee_email=request.mentee_email,
            starts_at=now,
            ends_at=now + request.length,
            reason=request.reason,
            created_by=request.created_by or getpass.getuser(),
        )
        apply_silences(db, now)
    return silence


def list_silences(ctx: Context, *, expired: bool = False) -> list[Silence]:
    """Silences in force or still to come (with ``expired``: every one), by id."""
    with ctx.db() as db:
        return stored.silences(db, ctx.clock(), expired=expired)


def expire_silence(ctx: Context, silence_id: int) -> None:
    """End a silence now: its findings notify again from the next evaluation."""
    now = ctx.clock()
    with ctx.db.begin() as db:
        silence = stored.get_silence(db, silence_id)
        if silence is None:
            raise UserError(f"no silence with id {silence_id}")
        stored.end_silence(silence, now)
        apply_silences(db, now)

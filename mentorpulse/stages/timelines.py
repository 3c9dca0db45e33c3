"""A pairing as the rules see it: its stored rows, the roster's say (own cadence,
pause) and the program's overrides, made into a :class:`Timeline`. Shared by
evaluation, the backtest and ``explain``, so all three judge the same thing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter

from sqlalchemy.orm import Session as Db

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig, Program, pair_matches
from mentorpulse.rules.kinds import Session, Timeline, holds_anchors
from mentorpulse.storage import timelines as stored
from mentorpulse.storage.timelines import PairingRow, SessionRow


@dataclass(frozen=True, slots=True)
class Judged:
    """A pairing's rows and its timeline; ``timeline`` is None when it is not judged
    (left the roster, paused, its program gone)."""

    row: PairingRow
    entry: RosterPairing | None  # its roster row (None: it left the roster)
    timeline: Timeline | None

    @property
    def pairing(self) -> PairingRow:
        return self.row


def load_timelines(
    db: Db,
    config: MentorpulseConfig,
    roster: Sequence[RosterPairing],
    pairing_ids: Collection[int] | None = None,
) -> list[Judged]:
    """Pairings (all, or the ids given), by key, with their timelines under ``config``."""
    rows = stored.pairings(db, pairing_ids)
    sessions = stored.sessions_of(db, [row.id for row in rows])
    return timelines(rows, sessions, config, roster)


def sessions_read(
    db: Db, pairing_ids: Sequence[int], since: datetime | None, now: datetime
) -> Mapping[int, Sequence[SessionRow]]:
    """The sessions of the pairings that the rules read at ``now``, by pairing id: with
    ``since`` (``rules.engine.sessions_read_since``), those ending after it and the
    anchors; all of them for a pairing whose anchors may lie earlier. The same verdicts
    as all sessions, from two fifths of the rows at a year of history (120-day windows).
    """
    if since is None:
        return stored.sessions_of(db, pairing_ids)
    found = stored.sessions_of(db, pairing_ids, ending_after=since)
    earlier = [p for p in pairing_ids if not holds_anchors(found.get(p, ()), since, now)]
    if earlier:
        found.update(stored.sessions_of(db, earlier))
    return found


def timelines(
    rows: Sequence[PairingRow],
    sessions: Mapping[int, Sequence[SessionRow]],
    config: MentorpulseConfig,
    roster: Sequence[RosterPairing],
) -> list[Judged]:
    """The loaded rows made into timelines (``sessions``: by pairing id)."""
    entries = {e.key: e for e in roster}
    judged = []
    for row in rows:
        entry = entries.get(row.key)
        # A stored row is a Session as the rules read it: no copy of each.
        of_pairing = sessions.get(row.id, ())
        judged.append(Judged(row, entry, timeline_for(row, entry, of_pairing, config)))
    return judged


def timeline_for(
    row: PairingRow,
    entry: RosterPairing | None,
    sessions: Sequence[Session],
    config: MentorpulseConfig,
) -> Timeline | None:
    """The pairing as the rules see it; None when it is not judged (inactive, paused)."""
    program = config.program(row.program_id)
    cadence, paused = override(program, entry)
    if not row.active or program is None or paused:
        return None
    return Timeline(
        pairing_key=row.key,
        program=row.program_id,
        mentor=row.mentor_email,
        mentee=row.mentee_email,
        started_on=row.started_on,
        ended_on=row.ended_on,
        zone=row.mentor_timezone or config.timezone,
        sessions=tuple(sorted(sessions, key=_START)),
        cadence=cadence,
    )


_START = attrgetter("start")


def override(program: Program | None, entry: RosterPairing | None) -> tuple[timedelta | None, bool]:
    """This pairing's own cadence and pause: the roster row, else a matching YAML override."""
    cadence = entry.cadence if entry is not None else None
    paused = entry.paused if entry is not None else False
    if program is not None and entry is not None:
        for rule in program.overrides:
            if pair_matches(entry.mentor_email, entry.mentee_email, rule.pair):
                cadence = cadence or rule.every
                paused = paused or rule.paused
    return cadence, paused


def why_not_judged(pairing: PairingRow, program: Program | None, paused: bool) -> str:
    """Why the rules no longer judge a pairing (the reason its open findings resolve)."""
    if not pairing.active:
        return "pairing left the roster"
    if program is None:
        return "program no longer configured"
    if paused:
        return "pairing paused"
    return "rule no longer applies to this pairing"

"""What was planted, computed from the plan and never by running mentorpulse.

One :class:`Manifest` at every scale: the spec, the counts a correct ingest and sessions
stage produce, and every planted session with what befell it, so a test compares the
pipeline's figures against the calendars' truth and not against mentorpulse's own logic.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mentorpulse.sample.org import Meeting, Org, Spec

FILE = "manifest.json"
REBOOKED_AFTER = timedelta(days=2)  # a cancelled-and-rebooked slot is booked again then


@dataclass(frozen=True)
class PlantedSession:
    """One meeting slot planted between a pair, at its actual start (after any move).

    ``planted``: attended, declined_by_mentor, declined_by_mentee, cancelled,
    late_cancelled, rebooked or upcoming.
    """

    pairing_key: str
    start: datetime  # aware UTC
    planted: str


@dataclass(frozen=True)
class Manifest:
    spec: Spec
    # pairings, people, calendars, occurrences (every copy read), events_stored (both
    # copies of every session), events_dropped (everything else), sessions
    counts: dict[str, int]
    planted: dict[str, int]  # planted sessions by what befell them
    pairings: tuple[str, ...]
    sessions: tuple[PlantedSession, ...]
    fixtures: bool = False

    @property
    def today(self) -> date:
        return self.spec.day

    def to_json(self) -> str:
        document = {
            "spec": asdict(self.spec),
            "counts": self.counts,
            "planted": self.planted,
            "fixtures": self.fixtures,
            "pairings": list(self.pairings),
            "sessions": [[s.pairing_key, s.start.isoformat(), s.planted] for s in self.sessions],
        }
        return json.dumps(document, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        return cls(
            spec=Spec(**data["spec"]),
            counts=data["counts"],
            planted=data["planted"],
            pairings=tuple(data["pairings"]),
            sessions=tuple(
                PlantedSession(key, datetime.fromisoformat(start), planted)
                for key, start, planted in data["sessions"]
            ),
            fixtures=data["fixtures"],
        )


def read_manifest(folder: Path) -> Manifest:
    return Manifest.from_json((folder / FILE).read_text(encoding="utf-8"))


def truth(meeting: Meeting, today: date) -> list[PlantedSession]:
    """The sessions ``meeting`` planted, each with what befell it."""
    assert meeting.pair is not None
    key = meeting.pair.key
    sessions = []
    for occurrence in meeting.occurrences:
        change, start = occurrence.change, occurrence.actual
        if occurrence.deleted:
            continue
        if start.date() > today:
            planted = "upcoming"
        elif change is None or change.kind == "moved":
            planted = "attended"
        elif change.kind == "declined":
            planted = f"declined_by_{change.by}"
        else:
            planted = change.kind
        sessions.append(PlantedSession(key, start.astimezone(UTC), planted))
        if change and change.kind == "rebooked":
            rebooked = occurrence.start + REBOOKED_AFTER
            assert rebooked.date() < today
            sessions.append(PlantedSession(key, rebooked.astimezone(UTC), "attended"))
    return sessions


def _events(meeting: Meeting) -> int:
    """The events one copy of ``meeting`` expands to (a rebooking adds one)."""
    rebooked = sum(1 for o in meeting.occurrences if o.change and o.change.kind == "rebooked")
    return sum(1 for o in meeting.occurrences if not o.deleted) + rebooked


def manifest(org: Org, *, fixtures: bool = False) -> Manifest:
    """What ``org`` planted: the counts a correct run produces, and every session."""
    seen: set[str] = set()
    copies = noise = 0
    sessions: list[PlantedSession] = []
    for meetings in org.calendars.values():
        for meeting in meetings:
            if meeting.pair is None:
                noise += _events(meeting)
                continue
            copies += _events(meeting)
            if meeting.uid not in seen:
                seen.add(meeting.uid)
                sessions += truth(meeting, org.spec.day)
    sessions.sort(key=lambda s: (s.pairing_key, s.start))
    counts = {
        "pairings": len(org.pairs),
        "people": len(org.people),
        "calendars": len(org.calendars),
        "occurrences": copies + noise,
        "events_stored": copies,
        "events_dropped": noise,
        "sessions": len(sessions),
    }
    planted = dict(sorted(Counter(s.planted for s in sessions).items()))
    return Manifest(
        spec=org.spec,
        counts=counts,
        planted=planted,
        pairings=tuple(p.key for p in org.pairs),
        sessions=tuple(sessions),
        fixtures=fixtures,
    )

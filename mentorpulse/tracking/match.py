"""Event → pairing: which rostered pairs an ingested calendar event is a session of.

This runs on every ingested event, and most events involve no rostered pair at all, so
the :class:`Matcher` indexes pairings by mentor email once and each lookup costs
O(participants), not O(roster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MatchCriteria
from mentorpulse.model import EventRecord


@dataclass(frozen=True, slots=True)
class PairingRef:
    """What matching needs to know of a pairing: who the two people are, and the rules."""

    key: str  # RosterPairing.key: "program:mentor:mentee"
    program: str
    mentor: str  # lower-cased email
    mentee: str  # lower-cased email
    criteria: MatchCriteria

    @classmethod
    def from_roster(cls, pairing: RosterPairing, criteria: MatchCriteria) -> PairingRef:
        """Build from a roster row and its program's ``match`` criteria."""
        return cls(
            key=pairing.key,
            program=pairing.program,
            mentor=pairing.mentor_email.lower(),
            mentee=pairing.mentee_email.lower(),
            criteria=criteria,
        )


def criteria_hold(record: EventRecord, criteria: MatchCriteria) -> bool:
    """Whether the event looks like a session of a program with these criteria.

    All-day events never count: they are out-of-office markers and reminders, not
    meetings. Keywords match as case-insensitive substrings of the title, so "1:1" or
    "mentoring" match however the title is decorated; without a title there is nothing to
    match a keyword against. With neither keywords nor categories to go by, a meeting of
    more than ``max_participants`` people is a group meeting (an all-hands, a team
    review) that the pair merely both attend, not their session.
    """
    if record.all_day:
        return False
    if record.end - record.start < criteria.min_duration:
        return False
    if not criteria.title_keywords and not criteria.categories:
        cap = criteria.max_participants
        return cap is None or head_count(record) <= cap
    if criteria.title_keywords:
        if record.title is None:
            return False
        title = record.title.casefold()
        if not any(word.casefold() in title for word in criteria.title_keywords if word):
            return False
    if criteria.categories:
        have = {c.strip().casefold() for c in record.categories}
        if not any(c.strip().casefold() in have for c in criteria.categories):
            return False
    return True


def head_count(record: EventRecord) -> int:
    """How many people a meeting involves: organizer and attendees, rooms and resources
    not counted (a booked room does not make a 1:1 a group meeting)."""
    people = {a.email for a in record.attendees if not a.is_resource}
    if record.organizer:
        people.add(record.organizer)
    return len(people)


class Matcher:
    """Finds the pairings an event is a session of; built once per roster load."""

    def __init__(self, pairings: Iterable[PairingRef]) -> None:
        # Both people must take part, so indexing by the mentor alone is enough: a lookup
        # walks the participants, and only pairings whose mentor is among them are checked.
        self._by_mentor: dict[str, list[PairingRef]] = {}
        for pairing in pairings:
            self._by_mentor.setdefault(pairing.mentor.lower(), []).append(pairing)

    def __len__(self) -> int:
        return sum(len(found) for found in self._by_mentor.values())

    def match(self, record: EventRecord) -> list[str]:
        """Keys of the pairings this event is a session of, in roster order per mentor.

        Cancelled events match too: their cancellation is evidence about the session.
        """
        participants = record.participants()
        keys: list[str] = []
        for person in sorted(participants):
            for pairing in self._by_mentor.get(person, ()):
                if pairing.mentee.lower() in participants and criteria_hold(
                    record, pairing.criteria
                ):
                    keys.append(pairing.key)
        return keys

"""The synthetic organisation's model: people, pairs, meetings and their occurrences.

Both plans (the demo's twelve hand-placed pairs and bench's seeded organisation at any
scale) build an :class:`Org` of these, and both writers (icalendar for the demo, plain
text and Google-shaped JSON for bench) read it, so what was planted is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

Role = Literal["mentor", "mentee"]
ChangeKind = Literal["moved", "cancelled", "late_cancelled", "rebooked", "declined", "deleted"]
TODAY = date(2026, 11, 2)  # a Monday; "now" of every benchmark run is noon UTC that day


@dataclass(frozen=True)
class Spec:
    """What to generate: ``scale`` "demo" is the hand-placed twelve pairs, any other
    scale the seeded organisation of ``pairs`` pairings over ``months`` of history."""

    pairs: int
    months: int
    noise: int
    seed: int = 1
    today: str = TODAY.isoformat()
    scale: str = "custom"

    @property
    def day(self) -> date:
        return date.fromisoformat(self.today)

    @property
    def now(self) -> datetime:
        return datetime.combine(self.day, time(12), UTC)

    @property
    def history_start(self) -> date:
        return self.day - timedelta(days=30 * self.months)


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    zone: str

    @property
    def local(self) -> str:
        return self.email.split("@")[0]


@dataclass(frozen=True)
class Pair:
    program: str
    mentor: Person
    mentee: Person
    started_on: date

    @property
    def key(self) -> str:
        return f"{self.program}:{self.mentor.email}:{self.mentee.email}"

    def person(self, role: Role) -> Person:
        return self.mentor if role == "mentor" else self.mentee

    def role_of(self, email: str) -> Role | None:
        if email == self.mentor.email:
            return "mentor"
        return "mentee" if email == self.mentee.email else None


@dataclass(frozen=True)
class Change:
    """What happened to one occurrence."""

    kind: ChangeKind
    by: Role | None = None  # who declined
    propagated: bool = True  # a decline also shows in the other party's copy
    shift: timedelta = timedelta(0)  # for moved


@dataclass
class Occurrence:
    start: datetime  # the original start, aware in the meeting's zone
    change: Change | None = None

    @property
    def actual(self) -> datetime:
        """Where the occurrence really is, after any move."""
        if self.change is not None and self.change.kind == "moved":
            return self.start + self.change.shift
        return self.start

    @property
    def deleted(self) -> bool:
        return self.change is not None and self.change.kind == "deleted"


@dataclass(frozen=True)
class Attendee:
    person: Person
    partstat: str = "ACCEPTED"
    cutype: str = "INDIVIDUAL"


@dataclass
class Meeting:
    """A series (``rrule``) or a single event; a mentoring one has its ``pair``."""

    uid: str  # without the domain
    title: str
    zone: str
    organizer: Person | None  # None: nobody else is invited (an all-day marker)
    attendees: tuple[Attendee, ...]
    occurrences: list[Occurrence]
    duration: timedelta = timedelta(minutes=45)
    rrule: dict[str, Any] | None = None  # None: a single event (one occurrence)
    pair: Pair | None = None
    all_day: bool = False
    status: str | None = "CONFIRMED"
    booked: timedelta = timedelta(days=7)  # created this long before its first start
    # The attendee's RSVP as the organizer's copy shows it (a reply may never arrive).
    organizer_sees: str = "ACCEPTED"

    @classmethod
    def of(
        cls,
        uid: str,
        title: str,
        starts: list[datetime],
        *,
        minutes: int,
        organizer: Person,
        attendees: tuple[Attendee, ...],
        **fields: Any,
    ) -> Meeting:
        """A meeting at ``starts`` (aware, in the zone it is booked in)."""
        return cls(
            uid=uid,
            title=title,
            zone=str(starts[0].tzinfo),
            organizer=organizer,
            attendees=attendees,
            occurrences=[Occurrence(s) for s in starts],
            duration=timedelta(minutes=minutes),
            **fields,
        )

    @classmethod
    def all_day_marker(cls, uid: str, title: str, day: date, zone: str) -> Meeting:
        """A whole day marked in one person's calendar, nobody invited, time left free."""
        start = datetime.combine(day, time(), ZoneInfo(zone))
        occurrences = [Occurrence(start)]
        return cls(
            uid, title, zone, None, (), occurrences, timedelta(days=1), all_day=True, status=None
        )

    @property
    def starts(self) -> list[datetime]:
        return [o.start for o in self.occurrences]

    @property
    def organizer_role(self) -> Role:
        assert self.pair is not None
        assert self.organizer is not None
        role = self.pair.role_of(self.organizer.email)
        assert role is not None
        return role


@dataclass
class Org:
    spec: Spec
    domain: str
    pairs: list[Pair]
    people: dict[str, Person]  # email → person, in the order of their calendars
    calendars: dict[str, list[Meeting]] = field(default_factory=dict)  # email → meetings

    def add(self, meeting: Meeting, *owners: str) -> None:
        """Put ``meeting`` into the calendar of each of ``owners``."""
        for email in owners:
            self.calendars[email].append(meeting)

    def add_all(self, owner: str, meetings: list[Meeting]) -> None:
        self.calendars[owner].extend(meetings)

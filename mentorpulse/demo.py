"""A synthetic organisation: config, roster and one iCalendar file per person.

It feeds ``mentorpulse demo`` and the end-to-end tests. The calendars look like what real
servers export: every meeting sits in both people's files under one UID, each copy with
that person's own RSVP; recurring series carry moved, cancelled and declined instances.
:class:`DemoTruth` records what was planted, computed here from the plan and never by
running mentorpulse's own matching or attendance logic, so tests can compare against it.

Everything is anchored on ``today`` and a fixed seed: the same ``today`` gives
byte-identical files (no wall clock anywhere).
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import structlog
from icalendar import Calendar, Event, Timezone, vCalAddress

from mentorpulse.config.roster import OPTIONAL_COLUMNS, REQUIRED_COLUMNS

log = structlog.get_logger(__name__)

SEED = 20240611
DOMAIN = "demo.example"
# Slots are planted within today ± SPAN; the config expands ±100 days, so it sees them all.
SPAN = timedelta(days=88)

Planted = Literal[
    "attended",
    "declined_by_mentor",
    "declined_by_mentee",
    "cancelled",
    "late_cancelled",
    "rebooked",
    "upcoming",
]
Role = Literal["mentor", "mentee"]


@dataclass(frozen=True)
class PlantedSession:
    """One meeting slot planted between a pair, at its actual start (after any move)."""

    pairing_key: str
    start: datetime  # aware UTC
    planted: str  # one of Planted


@dataclass(frozen=True)
class DemoTruth:
    pairings: tuple[str, ...]
    sessions: tuple[PlantedSession, ...]
    today: date


@dataclass(frozen=True)
class _Person:
    local: str
    name: str
    zone: str

    @property
    def email(self) -> str:
        return f"{self.local}@{DOMAIN}"


@dataclass(frozen=True)
class _Pair:
    program: str
    mentor: _Person
    mentee: _Person
    started_on: date

    @property
    def key(self) -> str:
        return f"{self.program}:{self.mentor.email}:{self.mentee.email}"

    def person(self, role: Role) -> _Person:
        return self.mentor if role == "mentor" else self.mentee


@dataclass(frozen=True)
class _Change:
    """What happened to one occurrence."""

    kind: Literal["moved", "cancelled", "late_cancelled", "rebooked", "declined"]
    by: Role | None = None  # who declined
    propagated: bool = True  # a decline also shows in the other party's copy
    shift: timedelta = timedelta(0)  # for moved


@dataclass
class _Meeting:
    """A series (``rrule`` set) or a single event between a pair, and what befell it."""

    pair: _Pair
    uid: str
    organizer: Role
    starts: list[datetime]  # original local starts, in the organizer's zone
    rrule: dict[str, Any] | None = None
    duration: timedelta = timedelta(minutes=45)
    changes: dict[int, _Change] = field(default_factory=dict)
    # The attendee's RSVP as the organizer's copy shows it (a reply may never arrive).
    organizer_sees: str = "ACCEPTED"

    def title(self) -> str:
        first = self.pair.mentor.name.split()[0]
        second = self.pair.mentee.name.split()[0]
        return f"Mentoring: {first} / {second}"


_COLLEAGUES = (
    ("morgan.lee", "Morgan Lee"),
    ("riley.chen", "Riley Chen"),
    ("jordan.ortiz", "Jordan Ortiz"),
    ("casey.dubois", "Casey Dubois"),
    ("avery.singh", "Avery Singh"),
    ("taylor.brooks", "Taylor Brooks"),
)
_NOISE_TITLES = (
    "Sprint planning",
    "1:1 with manager",
    "Architecture review",
    "Quarterly business review",
    "Hiring debrief",
    "Customer call",
    "Incident retro",
)
# Zones to try for the series that crosses a DST change, in order of preference; between
# them some transition falls within ~11 weeks of any date of the year.
_DST_CANDIDATES = (
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "America/Santiago",
)
_DST_REACH = 77  # days around today in which the transition must fall


def dst_transition(today: date) -> tuple[str, date]:
    """A zone whose UTC offset changes within ``_DST_REACH`` days of ``today``, and the
    first day on the new offset (so one series can straddle it)."""
    for name in _DST_CANDIDATES:
        zone = ZoneInfo(name)
        day = today - timedelta(days=_DST_REACH)
        previous = datetime.combine(day, time(12), zone).utcoffset()
        while day < today + timedelta(days=_DST_REACH):
            day += timedelta(days=1)
            offset = datetime.combine(day, time(12), zone).utcoffset()
            if offset != previous:
                return name, day
            previous = offset
    raise AssertionError("no DST transition near today in any candidate zone")  # pragma: no cover


def _people(dst_zone: str) -> dict[str, _Person]:
    rows = [
        ("ana.alvarez", "Ana Álvarez", "Europe/Berlin"),
        ("ben.okafor", "Ben Okafor", "Europe/London"),
        ("carla.mendes", "Carla Mendes", "America/New_York"),
        ("dev.patel", "Dev Patel", "Asia/Kolkata"),
        ("elena.fischer", "Elena Fischer", dst_zone),
        ("farid.haddad", "Farid Haddad", "Europe/London"),
        ("emma.clarke", "Emma Clarke", "Europe/London"),
        ("felix.wagner", "Felix Wagner", "Europe/Berlin"),
        ("grace.kim", "Grace Kim", "America/New_York"),
        ("hugo.silva", "Hugo Silva", "America/New_York"),
        ("isha.rao", "Isha Rao", "Asia/Kolkata"),
        ("jonas.berg", "Jonas Berg", "Europe/London"),
        ("kai.schmidt", "Kai Schmidt", "Europe/Berlin"),
        ("lena.novak", "Lena Novak", "America/New_York"),
        ("marcus.reid", "Marcus Reid", "Europe/London"),
        ("nisha.iyer", "Nisha Iyer", "Asia/Kolkata"),
        ("omar.farouk", "Omar Farouk", "America/New_York"),
        ("priya.nair", "Priya Nair", "Europe/London"),
        ("quinn.baker", "Quinn Baker", "Europe/Berlin"),
        ("ravi.kumar", "Ravi Kumar", "Asia/Kolkata"),
        ("sofia.rossi", "Sofia Rossi", "Europe/London"),
        ("tom.becker", "Tom Becker", "America/New_York"),
        ("uma.shah", "Uma Shah", "America/New_York"),
    ]
    return {local.split(".")[0]: _Person(local, name, zone) for local, name, zone in rows}


def _weekly(
    today: date, zone: str, *, offset: int, weeks: int, at: time, last: date | None = None
) -> list[datetime]:
    """Every ``weeks`` weeks on ``today + offset (+ k·weeks)``, within the span.

    Offsets are kept 2-5 days from today modulo a week, so no slot lands near today and
    past vs upcoming is never in doubt.
    """
    tz = ZoneInfo(zone)
    step = timedelta(weeks=weeks)
    day = today + timedelta(days=offset)
    while day - step >= today - SPAN:
        day -= step
    limit = min(last, today + SPAN) if last else today + SPAN
    starts = []
    while day <= limit:
        starts.append(datetime.combine(day, at, tz))
        day += step
    return starts


def _monthly(today: date, zone: str, *, at: time) -> list[datetime]:
    """Same day each month, at least a week away from today's day of the month."""
    tz = ZoneInfo(zone)
    dom = today.day + 7 if today.day <= 14 else min(today.day, 28) - 7
    starts = []
    for months in range(-3, 4):
        index = today.year * 12 + today.month - 1 + months
        day = date(index // 12, index % 12 + 1, dom)
        if today - SPAN <= day <= today + SPAN:
            starts.append(datetime.combine(day, at, tz))
    return starts


def _past(meeting: _Meeting, today: date) -> list[int]:
    """Indices of occurrences safely in the past: the ones that get moved or cancelled."""
    return [i for i, s in enumerate(meeting.starts) if s.date() <= today - timedelta(days=6)]


def _future(meeting: _Meeting, today: date) -> list[int]:
    return [i for i, s in enumerate(meeting.starts) if s.date() >= today + timedelta(days=5)]


def _short(pair: _Pair) -> str:
    return f"{pair.mentor.local.split('.')[0]}-{pair.mentee.local.split('.')[0]}"


def _series(
    pair: _Pair, starts: list[datetime], *, weeks: int | None, until: bool = False
) -> _Meeting:
    """A series organised by the mentor; ``weeks=None`` repeats monthly."""
    rrule: dict[str, Any] = {"freq": "monthly"} if weeks is None else {"freq": "weekly"}
    if weeks and weeks > 1:
        rrule["interval"] = weeks
    if until:
        rrule["until"] = starts[-1].astimezone(UTC)
    else:
        rrule["count"] = len(starts)
    return _Meeting(pair, f"series-{_short(pair)}", "mentor", starts, rrule)


def _singles(
    pair: _Pair, zone: str, slots: list[tuple[int, time]], today: date, minutes: int = 45
) -> list[_Meeting]:
    """One-off bookings by the mentor, ``slots`` as (days from today, local time)."""
    tz = ZoneInfo(zone)
    return [
        _Meeting(
            pair,
            f"single-{_short(pair)}-{i}",
            "mentor",
            [datetime.combine(today + timedelta(days=days), at, tz)],
            duration=timedelta(minutes=minutes),
        )
        for i, (days, at) in enumerate(slots)
    ]


def _plan(today: date) -> tuple[list[_Pair], list[_Meeting], dict[str, _Person]]:
    """The organisation: who mentors whom, and every meeting they booked."""
    dst_zone, _ = dst_transition(today)
    p = _people(dst_zone)
    # Just before the first planted sessions and inside the sync window, so no rule sees
    # a gap at the start that the calendars cannot explain.
    long_ago = today - timedelta(days=90)
    pairs = [
        _Pair("engineering", p[mentor], p[mentee], started)
        for mentor, mentee, started in (
            ("ana", "ben", long_ago),
            ("carla", "dev", long_ago),
            ("elena", "farid", long_ago),
            ("emma", "felix", long_ago),
            ("grace", "hugo", long_ago),
            ("isha", "jonas", long_ago),
            ("kai", "lena", today - timedelta(days=84)),  # never met
            ("marcus", "nisha", long_ago),
        )
    ] + [
        _Pair("leadership", p[mentor], p[mentee], long_ago)
        for mentor, mentee in (
            ("omar", "priya"),
            ("quinn", "ravi"),
            ("sofia", "tom"),
            ("ana", "uma"),
        )
    ]
    by = {_short(x): x for x in pairs}
    meetings = _engineering(today, by, dst_zone) + _leadership(today, by)
    return pairs, meetings, p


def _engineering(today: date, by: dict[str, _Pair], dst_zone: str) -> list[_Meeting]:
    meetings = []

    # Biweekly, Berlin: a moved instance, an early cancellation, a mentee decline,
    # and an upcoming instance moved by a day.
    starts = _weekly(today, "Europe/Berlin", offset=-3, weeks=2, at=time(10))
    m = _series(by["ana-ben"], starts, weeks=2)
    past, future = _past(m, today), _future(m, today)
    m.changes[past[-2]] = _Change("moved", shift=timedelta(days=1, hours=4))
    m.changes[past[-3]] = _Change("cancelled")
    m.changes[past[-4]] = _Change("declined", by="mentee")
    m.changes[future[1]] = _Change("moved", shift=timedelta(days=1))
    meetings.append(m)

    # Weekly, organised by the mentee in Kolkata (no DST) for a New York mentor: a late
    # cancellation by the organizer and a mentor decline.
    starts = _weekly(today, "Asia/Kolkata", offset=2, weeks=1, at=time(19, 30))
    m = _series(by["carla-dev"], starts, weeks=1)
    m.organizer = "mentee"
    past = _past(m, today)
    m.changes[past[-2]] = _Change("late_cancelled")
    m.changes[past[-5]] = _Change("declined", by="mentor")
    meetings.append(m)

    # Weekly at constant local wall-clock time across a DST change in the mentor's zone.
    starts = _weekly(today, dst_zone, offset=4, weeks=1, at=time(9, 30))
    meetings.append(_series(by["elena-farid"], starts, weeks=1))

    # Biweekly, London: cancelled and rebooked two days later, plus an early cancellation.
    starts = _weekly(today, "Europe/London", offset=-5, weeks=2, at=time(15))
    m = _series(by["emma-felix"], starts, weeks=2)
    past = _past(m, today)
    m.changes[past[-2]] = _Change("rebooked")
    m.changes[past[-4]] = _Change("cancelled")
    meetings.append(m)

    # Biweekly, New York: the mentor's copy never got the mentee's replies (NEEDS-ACTION);
    # only the mentee's own copy shows the one decline.
    starts = _weekly(today, "America/New_York", offset=4, weeks=2, at=time(11))
    m = _series(by["grace-hugo"], starts, weeks=2)
    m.organizer_sees = "NEEDS-ACTION"
    m.changes[_past(m, today)[-3]] = _Change("declined", by="mentee", propagated=False)
    meetings.append(m)

    # Lapsed: a biweekly series that ended seven weeks ago (UNTIL).
    ended = today - timedelta(days=49)
    starts = _weekly(today, "Asia/Kolkata", offset=-49, weeks=2, at=time(16), last=ended)
    meetings.append(_series(by["isha-jonas"], starts, weeks=2, until=True))

    # One-off bookings at irregular times; one booked, then cancelled early, by the mentee.
    rng = random.Random(SEED)  # noqa: S311 - reproducible demo data, not a secret
    slots = [
        (days, time(rng.randint(9, 16), rng.choice((0, 30))))
        for days in (-80, -66, -52, -38, -23, -9, 5, 19, 33, 47, 61, 75)
    ]
    singles = _singles(by["marcus-nisha"], "Europe/London", slots, today, minutes=30)
    singles[3].organizer = "mentee"
    singles[3].changes[0] = _Change("cancelled")
    return meetings + singles


def _leadership(today: date, by: dict[str, _Pair]) -> list[_Meeting]:
    meetings = []

    # Monthly, New York, with the latest past instance moved two days later.
    m = _series(by["omar-priya"], _monthly(today, "America/New_York", at=time(14)), weeks=None)
    m.duration = timedelta(hours=1)
    m.changes[_past(m, today)[-1]] = _Change("moved", shift=timedelta(days=2))
    meetings.append(m)

    # Every four weeks, Berlin morning for a Kolkata mentee, who declines one.
    starts = _weekly(today, "Europe/Berlin", offset=-2, weeks=4, at=time(8, 30))
    m = _series(by["quinn-ravi"], starts, weeks=4)
    m.changes[_past(m, today)[-2]] = _Change("declined", by="mentee")
    meetings.append(m)

    # Monthly one-off bookings in London; one cancelled three hours before it started.
    slots = [(days, time(16)) for days in (-85, -58, -30, -3, 25, 53, 81)]
    singles = _singles(by["sofia-tom"], "Europe/London", slots, today)
    singles[2].changes[0] = _Change("late_cancelled")
    meetings.extend(singles)

    # Monthly, Berlin evening / New York morning, for a mentor who has two mentees.
    m = _series(by["ana-uma"], _monthly(today, "Europe/Berlin", at=time(17)), weeks=None)
    m.changes[_past(m, today)[-2]] = _Change("cancelled")
    meetings.append(m)
    return meetings


def _all_hands(people: dict[str, _Person], today: date) -> list[Event]:
    """Every four weeks the whole company meets, every mentor and mentee included.

    Each pair both attend it, and the programs match by who takes part, not by title: it
    is the participant cap (``match.max_participants``) that keeps it from counting as a
    session of every pair. A booked room is on the invitation too.
    """
    stamp = _stamp(today)
    starts = _weekly(today, "Europe/London", offset=3, weeks=4, at=time(13))
    organizer = _Person(*_COLLEAGUES[4], "Europe/London")
    event = Event()
    event.add("uid", f"all-hands@{DOMAIN}")
    event.add("dtstamp", stamp)
    booked = min(starts[0].astimezone(UTC) - timedelta(days=14), stamp)
    event.add("created", booked)
    event.add("last-modified", booked)
    event.add("summary", "All hands")
    event.add("dtstart", starts[0])
    event.add("dtend", starts[0] + timedelta(hours=1))
    event.add("rrule", {"freq": "weekly", "interval": 4, "count": len(starts)})
    event.add("status", "CONFIRMED")
    event.add("organizer", _address(organizer))
    event.add("attendee", _address(organizer, "ACCEPTED"))
    for person in people.values():
        event.add("attendee", _address(person, "ACCEPTED"))
    room = vCalAddress(f"mailto:auditorium@rooms.{DOMAIN}")
    room.params["CN"] = "Auditorium"
    room.params["CUTYPE"] = "ROOM"
    room.params["PARTSTAT"] = "ACCEPTED"
    event.add("attendee", room)
    return [event]


def _stamp(today: date) -> datetime:
    """The export time of every file: the start of ``today`` in UTC, never the clock."""
    return datetime.combine(today, time(0), UTC)


def _address(person: _Person, partstat: str | None = None) -> vCalAddress:
    address = vCalAddress(f"mailto:{person.email}")
    address.params["CN"] = person.name
    if partstat is not None:
        address.params["CUTYPE"] = "INDIVIDUAL"
        address.params["ROLE"] = "REQ-PARTICIPANT"
        address.params["PARTSTAT"] = partstat
    return address


def _vevent(
    meeting: _Meeting,
    *,
    uid: str,
    start: datetime,
    partstats: dict[Role, str],
    stamp: datetime,
    modified: datetime,
    created: datetime,
    sequence: int = 0,
    status: str = "CONFIRMED",
    recurrence_id: datetime | None = None,
    rrule: dict[str, Any] | None = None,
) -> Event:
    pair = meeting.pair
    event = Event()
    event.add("uid", f"{uid}@{DOMAIN}")
    event.add("dtstamp", stamp)
    event.add("created", created)
    event.add("last-modified", modified)
    event.add("sequence", sequence)
    event.add("summary", meeting.title())
    event.add("dtstart", start)
    event.add("dtend", start + meeting.duration)
    if recurrence_id is not None:
        event.add("recurrence-id", recurrence_id)
    if rrule is not None:
        event.add("rrule", rrule)
    event.add("status", status)
    event.add("organizer", _address(pair.person(meeting.organizer)))
    for role in ("mentor", "mentee"):
        event.add("attendee", _address(pair.person(role), partstats[role]))
    return event


def _copies(meeting: _Meeting, today: date) -> dict[Role, list[Event]]:
    """The events of ``meeting`` as they appear in the mentor's and the mentee's file."""
    stamp = _stamp(today)
    created = min(min(meeting.starts).astimezone(UTC) - timedelta(days=10), stamp)
    single = meeting.rrule is None
    attendee: Role = "mentee" if meeting.organizer == "mentor" else "mentor"
    copies: dict[Role, list[Event]] = {"mentor": [], "mentee": []}
    for owner in ("mentor", "mentee"):
        base: dict[Role, str] = {meeting.organizer: "ACCEPTED", attendee: "ACCEPTED"}
        if owner == meeting.organizer:
            base[attendee] = meeting.organizer_sees
        master: dict[str, Any] = {
            "uid": meeting.uid,
            "start": meeting.starts[0],
            "stamp": stamp,
            "created": created,
            "modified": created,
            "rrule": meeting.rrule,
        }
        overrides: list[Event] = []
        for index, change in sorted(meeting.changes.items()):
            original = meeting.starts[index]
            fields: dict[str, Any] = {"partstats": dict(base), "sequence": 1}
            if change.kind == "moved":
                fields["start"] = original + change.shift
                fields["modified"] = min(original, original + change.shift) - timedelta(days=3)
            elif change.kind == "cancelled":
                fields["status"] = "CANCELLED"
                fields["modified"] = original - timedelta(days=4)
            elif change.kind == "late_cancelled":
                fields["status"] = "CANCELLED"
                fields["modified"] = original - timedelta(hours=5)
            elif change.kind == "rebooked":
                fields["status"] = "CANCELLED"
                fields["modified"] = original - timedelta(hours=30)
            else:  # declined
                assert change.by is not None
                if owner != change.by and not change.propagated:
                    continue  # the reply never reached this copy
                fields["partstats"][change.by] = "DECLINED"
                fields["modified"] = original - timedelta(days=2)
            fields["modified"] = min(fields["modified"].astimezone(UTC), stamp)
            if single:
                master.update(fields)
                master["sequence"] = 1
            else:
                event_fields = {**master, "rrule": None, "start": original, **fields}
                overrides.append(_vevent(meeting, recurrence_id=original, **event_fields))
            if change.kind == "rebooked":
                cancelled_at = (original - timedelta(hours=30)).astimezone(UTC)
                rebook = _Meeting(meeting.pair, "", meeting.organizer, [original])
                rebook.duration = meeting.duration
                overrides.append(
                    _vevent(
                        rebook,
                        uid=f"{meeting.uid}-rebooked-{index}",
                        start=original + timedelta(days=2),
                        partstats=dict(base),
                        stamp=stamp,
                        created=cancelled_at,
                        modified=cancelled_at,
                    )
                )
        master.setdefault("partstats", base)
        copies[owner] = [_vevent(meeting, **master), *overrides]
    return copies


def _truth(meeting: _Meeting, today: date) -> list[PlantedSession]:
    sessions = []
    for index, original in enumerate(meeting.starts):
        change = meeting.changes.get(index)
        start = original + change.shift if change and change.kind == "moved" else original
        planted: str
        if start.date() > today:
            planted = "upcoming"
        elif change is None or change.kind == "moved":
            planted = "attended"
        elif change.kind == "declined":
            planted = f"declined_by_{change.by}"
        else:
            planted = change.kind
        sessions.append(PlantedSession(meeting.pair.key, start.astimezone(UTC), planted))
        if change and change.kind == "rebooked":
            rebooked = original + timedelta(days=2)
            assert rebooked.date() < today
            sessions.append(PlantedSession(meeting.pair.key, rebooked.astimezone(UTC), "attended"))
    return sessions


def _noise(person: _Person, index: int, today: date, rng: random.Random) -> list[Event]:
    """Meetings with colleagues outside the roster, which the matcher must ignore."""
    stamp = _stamp(today)
    tz = ZoneInfo(person.zone)
    events = []
    for n in range(3):
        colleague, name = _COLLEAGUES[rng.randrange(len(_COLLEAGUES))]
        other, other_name = _COLLEAGUES[rng.randrange(len(_COLLEAGUES))]
        day = today + timedelta(days=rng.randint(-85, 85))
        start = datetime.combine(day, time(rng.randint(8, 16), rng.choice((0, 15, 30))), tz)
        event = Event()
        event.add("uid", f"noise-{person.local}-{n}@{DOMAIN}")
        event.add("dtstamp", stamp)
        booked = min(start.astimezone(UTC) - timedelta(days=7), stamp)
        event.add("created", booked)
        event.add("last-modified", booked)
        event.add("summary", _NOISE_TITLES[rng.randrange(len(_NOISE_TITLES))])
        event.add("dtstart", start)
        event.add("dtend", start + timedelta(minutes=rng.choice((30, 45, 60))))
        event.add("status", "CONFIRMED")
        event.add("organizer", _address(_Person(colleague, name, "UTC")))
        event.add("attendee", _address(_Person(colleague, name, "UTC"), "ACCEPTED"))
        event.add("attendee", _address(person, "ACCEPTED"))
        if other != colleague:
            event.add("attendee", _address(_Person(other, other_name, "UTC"), "TENTATIVE"))
        events.append(event)
    if index % 3 == 0:  # a weekly stand-up, organised by the person, with colleagues
        start = datetime.combine(today - timedelta(days=84), time(9, 15), tz)
        event = Event()
        event.add("uid", f"standup-{person.local}@{DOMAIN}")
        event.add("dtstamp", stamp)
        booked = min(start.astimezone(UTC) - timedelta(days=7), stamp)
        event.add("created", booked)
        event.add("last-modified", booked)
        event.add("summary", "Team stand-up")
        event.add("dtstart", start)
        event.add("dtend", start + timedelta(minutes=15))
        event.add("rrule", {"freq": "weekly", "count": 24})
        event.add("organizer", _address(person))
        event.add("attendee", _address(person, "ACCEPTED"))
        for colleague, name in _COLLEAGUES[:3]:
            event.add("attendee", _address(_Person(colleague, name, "UTC"), "ACCEPTED"))
        events.append(event)
    if index % 5 == 0:  # an all-day event, no attendees
        day = today + timedelta(days=rng.randint(-60, 60))
        event = Event()
        event.add("uid", f"offsite-{person.local}@{DOMAIN}")
        event.add("dtstamp", stamp)
        event.add("summary", "Company offsite")
        event.add("dtstart", day)
        event.add("dtend", day + timedelta(days=1))
        event.add("transp", "TRANSPARENT")
        events.append(event)
    return events


_CONFIG = """\
# The mentorpulse demo organisation, generated for {today}.
# Sessions are found by who takes part, whatever their title: no keywords needed.
database: sqlite:///mentorpulse.db
timezone: Europe/London
sources:
  - id: demo-calendars
    kind: ics
    path: calendars          # one <email>.ics per person; the file name is the owner
    window_past: 100d
    window_future: 100d
roster:
  path: roster.csv
programs:
  - id: engineering
    name: Engineering mentoring
    match:
      # No title keywords: any meeting of the pair counts, however it was booked, but
      # only up to 4 people (rooms not counted). The monthly all-hands that every
      # mentor and mentee attends is a group meeting, not a session of each pair.
      max_participants: 4
    cadence:
      every: 14d
      grace: 3d
    rules:
      - id: engineering-cadence-gap
        kind: cadence_gap
        severity: warning
    admins: [eng-admin]
  - id: leadership
    name: Leadership mentoring
    cadence:
      every: 28d
      grace: 7d
    rules:
      - id: leadership-cadence-gap
        kind: cadence_gap
        severity: warning
    admins: [leadership-admin]
contacts:
  hr:
    email: hr@{domain}
    name: People Team
    timezone: Europe/London
  eng-admin:
    email: eng-mentoring@{domain}
    name: Engineering mentoring admins
    timezone: Europe/Berlin
  leadership-admin:
    email: leadership-mentoring@{domain}
    name: Leadership mentoring admins
    timezone: America/New_York
notify:
  sender: mentorpulse@{domain}
  transport:
    kind: file
    path: outbox
reports:
  out_dir: reports
  send:                      # when a month ends, HR gets its attended-vs-scheduled report
    - every: month
      to: [hr]
"""

ROSTER_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS  # every column, so the demo shows all


def _roster(pairs: list[_Pair]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROSTER_COLUMNS)
    for x in pairs:
        writer.writerow(
            [
                x.program,
                x.mentor.email,
                x.mentee.email,
                x.started_on.isoformat(),
                "",
                x.mentor.name,
                x.mentee.name,
                x.mentor.zone,
                x.mentee.zone,
            ]
        )
    return out.getvalue()


def write_demo(workdir: Path, *, today: date) -> DemoTruth:
    """Write ``mentorpulse.yaml``, ``roster.csv`` and ``calendars/<email>.ics`` into workdir.

    Returns what was planted. Existing files of the same names are overwritten; nothing
    else in ``workdir`` is touched.
    """
    pairs, meetings, people = _plan(today)
    files: dict[str, list[Event]] = {person.email: [] for person in people.values()}
    sessions: list[PlantedSession] = []
    for meeting in meetings:
        for role, events in _copies(meeting, today).items():
            files[meeting.pair.person(role).email].extend(events)
        sessions.extend(_truth(meeting, today))

    rng = random.Random(SEED + 1)  # noqa: S311 - reproducible demo data, not a secret
    all_hands = _all_hands(people, today)
    for index, person in enumerate(people.values()):
        files[person.email].extend(_noise(person, index, today, rng))
        files[person.email].extend(all_hands)

    calendars = workdir / "calendars"
    calendars.mkdir(parents=True, exist_ok=True)
    zones: dict[str, Timezone] = {}
    for person in people.values():
        calendar = Calendar()
        calendar.add("prodid", "-//mentorpulse//demo organisation//EN")
        calendar.add("version", "2.0")
        calendar.add("calscale", "GREGORIAN")
        calendar.add("x-wr-calname", person.name)
        calendar.add("x-wr-timezone", person.zone)
        for event in files[person.email]:
            calendar.add_component(event)
        # Sorted, not add_missing_timezones(): that walks a set, whose order changes
        # from one process to the next and would break byte-identical output.
        for position, tzid in enumerate(sorted(calendar.get_missing_tzids())):
            if tzid not in zones:
                zones[tzid] = Timezone.from_tzid(
                    tzid,
                    first_date=today - timedelta(days=365),
                    last_date=today + timedelta(days=365),
                )
            calendar.subcomponents.insert(position, zones[tzid])
        (calendars / f"{person.email}.ics").write_bytes(calendar.to_ical())

    (workdir / "mentorpulse.yaml").write_text(
        _CONFIG.format(today=today.isoformat(), domain=DOMAIN), encoding="utf-8"
    )
    (workdir / "roster.csv").write_text(_roster(pairs), encoding="utf-8", newline="")

    sessions.sort(key=lambda s: (s.pairing_key, s.start))
    log.info(
        "demo_written",
        workdir=str(workdir),
        today=today.isoformat(),
        people=len(people),
        pairings=len(pairs),
        sessions=len(sessions),
    )
    return DemoTruth(pairings=tuple(x.key for x in pairs), sessions=tuple(sessions), today=today)

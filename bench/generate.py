"""A deterministic synthetic organisation at any scale: roster, config, calendars.

``python -m bench.generate --pairs N --months M --noise K --seed S --out DIR`` writes

- ``mentorpulse.yaml`` and ``roster.csv`` (three programs: weekly, biweekly, monthly);
- ``calendars/<email>.ics``: one file per person, every mentoring meeting in both the
  mentor's and the mentee's file under one UID, each copy with that person's RSVP;
  recurring series with moved, cancelled, declined and deleted (EXDATE) instances, some
  lapsed series and one-off catch-ups; K non-mentoring meetings per person per week
  (half weekly series, half one-off meetings with colleagues outside the roster);
- ``fixtures/<email>.json``: the same events as Google Calendar ``events.list`` items
  (``recurrence``, ``recurringEventId``/``originalStartTime`` for exceptions), for the
  provider fakes;
- ``manifest.json``: the spec and the counts planted, computed from the plan here and
  never by running mentorpulse, so a run can be checked against them.

The plan is a pure function of the spec (no wall clock, one seeded RNG), so the same
spec gives byte-identical files. :func:`mutate` changes a fraction of the events in place
(the "1 % changed" poll) and rewrites only the calendars they sit in.

The ICS text is written directly (not through ``icalendar``): a large organisation has a
million occurrences and the generator must not be the slow part of the benchmark.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Timezone

DOMAIN = "bench.example"
TODAY = date(2026, 11, 2)  # a Monday; "now" of every benchmark run is noon UTC that day
ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)
# Rates per occurrence of a mentoring series, roughly what calendars of real programs show.
MOVED, CANCELLED, DECLINED, DELETED = 0.04, 0.05, 0.04, 0.01
LAPSED = 0.08  # pairs whose series stopped early
CATCH_UP = 0.15  # pairs that also booked one-off sessions
FUTURE = timedelta(days=21)  # series run this far past today
PROGRAMS = (  # id, weeks between sessions (0: monthly), grace, title keywords
    ("weekly", 1, "2d", ()),
    ("biweekly", 2, "3d", ("mentoring", "1:1")),
    ("monthly", 0, "7d", ()),
)


@dataclass(frozen=True)
class Spec:
    pairs: int
    months: int
    noise: int
    seed: int = 1
    today: str = TODAY.isoformat()

    @property
    def day(self) -> date:
        return date.fromisoformat(self.today)

    @property
    def now(self) -> datetime:
        return datetime.combine(self.day, time(12), UTC)

    @property
    def history_start(self) -> date:
        return self.day - timedelta(days=30 * self.months)


SCALES: dict[str, Spec] = {
    "small": Spec(pairs=200, months=3, noise=2),
    "medium": Spec(pairs=2000, months=6, noise=2),
    "large": Spec(pairs=10000, months=12, noise=1),
}


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    zone: str


@dataclass
class Occurrence:
    start: datetime  # local, aware in the series' zone: the original start
    change: str | None = None  # moved, cancelled, declined_mentor, declined_mentee, deleted


@dataclass
class Meeting:
    """A series or a single event; ``people`` are organizer first, then the others."""

    uid: str
    title: str
    zone: str
    organizer: str
    attendees: tuple[str, ...]
    occurrences: list[Occurrence]
    minutes: int
    rrule: str | None = None  # None: a single event (one occurrence)
    pair: int | None = None  # index of the roster row, None for noise
    mentor: str = ""
    mentee: str = ""
    all_day: bool = False


@dataclass
class Org:
    spec: Spec
    pairs: list[tuple[str, Person, Person, date]]  # program, mentor, mentee, started_on
    people: dict[str, Person]
    calendars: dict[str, list[Meeting]] = field(default_factory=dict)  # email → meetings


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def plan(spec: Spec) -> Org:
    """Who mentors whom and every meeting in every calendar, from ``spec`` alone."""
    rng = random.Random(spec.seed)
    people: dict[str, Person] = {}
    pairs: list[tuple[str, Person, Person, date]] = []
    mentor: Person | None = None
    mentees_of_mentor = 0
    started = spec.history_start - timedelta(days=1)
    for i in range(spec.pairs):
        # Mentors have one to three mentees; every mentee has one mentor.
        if mentor is None or mentees_of_mentor >= 3 or rng.random() < 0.6:
            n = len([p for p in people if p.startswith("mentor")])
            mentor = Person(f"mentor{n:05d}@{DOMAIN}", f"Mentor {n}", rng.choice(ZONES))
            people[mentor.email] = mentor
            mentees_of_mentor = 0
        mentee = Person(f"mentee{i:05d}@{DOMAIN}", f"Mentee {i}", rng.choice(ZONES))
        people[mentee.email] = mentee
        mentees_of_mentor += 1
        program = PROGRAMS[0 if i % 10 < 3 else 1 if i % 10 < 8 else 2][0]
        pairs.append((program, mentor, mentee, started))

    org = Org(spec, pairs, people, {email: [] for email in people})
    for index, (program, mentor_p, mentee_p, _started) in enumerate(pairs):
        for meeting in _mentoring(spec, rng, index, program, mentor_p, mentee_p):
            org.calendars[mentor_p.email].append(meeting)
            org.calendars[mentee_p.email].append(meeting)
    for position, person in enumerate(people.values()):
        org.calendars[person.email].extend(_noise(spec, rng, position, person))
    return org


def _mentoring(
    spec: Spec, rng: random.Random, index: int, program: str, mentor: Person, mentee: Person
) -> list[Meeting]:
    weeks = next(w for p, w, _g, _k in PROGRAMS if p == program)
    by_mentee = rng.random() < 0.2
    organizer, other = (mentee, mentor) if by_mentee else (mentor, mentee)
    zone = organizer.zone
    tz = _zone(zone)
    first = spec.history_start + timedelta(days=rng.randrange(7))
    at = time(rng.randrange(8, 17), rng.choice((0, 30)))
    last = spec.day + FUTURE
    if rng.random() < LAPSED:  # stopped meeting somewhere in the second half of history
        last = spec.day - timedelta(days=rng.randrange(14, max(15, 15 * spec.months)))
    starts: list[datetime] = []
    if weeks:
        day = first
        while day <= last:
            starts.append(datetime.combine(day, at, tz))
            day += timedelta(weeks=weeks)
        rrule = f"FREQ=WEEKLY;INTERVAL={weeks};COUNT={len(starts)}"
    else:
        dom = min(first.day, 28)
        month = first.year * 12 + first.month - 1
        while (day := date(month // 12, month % 12 + 1, dom)) <= last:
            if day >= first:
                starts.append(datetime.combine(day, at, tz))
            month += 1
        rrule = f"FREQ=MONTHLY;COUNT={len(starts)}"
    meetings: list[Meeting] = []
    short = f"{index:05d}"
    if starts:
        occurrences = []
        for start in starts:
            roll = rng.random()
            change = None
            # Only past instances change: the future is still as booked.
            if start.date() < spec.day - timedelta(days=2):
                if roll < MOVED:
                    change = "moved"
                elif roll < MOVED + CANCELLED:
                    change = "cancelled"
                elif roll < MOVED + CANCELLED + DECLINED:
                    change = rng.choice(("declined_mentor", "declined_mentee"))
                elif roll < MOVED + CANCELLED + DECLINED + DELETED:
                    change = "deleted"
            occurrences.append(Occurrence(start, change))
        meetings.append(
            Meeting(
                uid=f"series-{short}@{DOMAIN}",
                title="Mentoring 1:1",
                zone=zone,
                organizer=organizer.email,
                attendees=(organizer.email, other.email),
                occurrences=occurrences,
                minutes=rng.choice((30, 45, 60)),
                rrule=rrule,
                pair=index,
                mentor=mentor.email,
                mentee=mentee.email,
            )
        )
    if rng.random() < CATCH_UP:
        for n in range(rng.randint(1, 2)):
            day = spec.history_start + timedelta(days=rng.randrange(7, 30 * spec.months))
            meetings.append(
                Meeting(
                    uid=f"catch-up-{short}-{n}@{DOMAIN}",
                    title="Mentoring catch-up",
                    zone=zone,
                    organizer=organizer.email,
                    attendees=(organizer.email, other.email),
                    occurrences=[Occurrence(datetime.combine(day, time(rng.randrange(9, 17)), tz))],
                    minutes=30,
                    pair=index,
                    mentor=mentor.email,
                    mentee=mentee.email,
                )
            )
    return meetings


def _noise(spec: Spec, rng: random.Random, position: int, person: Person) -> list[Meeting]:
    """K meetings a week with colleagues outside the roster, plus an all-day marker."""
    tz = _zone(person.zone)
    first = spec.history_start
    weeks = (spec.day + FUTURE - first).days // 7
    meetings: list[Meeting] = []
    local = person.email.split("@")[0]
    for slot in range(spec.noise):
        colleague = f"colleague{rng.randrange(500):03d}@{DOMAIN}"
        other = f"colleague{rng.randrange(500):03d}@{DOMAIN}"
        attendees = tuple(dict.fromkeys((colleague, person.email, other)))
        if (position + slot) % 2 == 0:  # a weekly series, organised by a colleague
            day = first + timedelta(days=rng.randrange(7))
            at = time(rng.randrange(8, 18), rng.choice((0, 15, 30)))
            starts = [datetime.combine(day + timedelta(weeks=w), at, tz) for w in range(weeks)]
            meetings.append(
                Meeting(
                    uid=f"team-{local}-{slot}@{DOMAIN}",
                    title=rng.choice(("Team sync", "Stand-up", "Design review")),
                    zone=person.zone,
                    organizer=colleague,
                    attendees=attendees,
                    occurrences=[Occurrence(s) for s in starts],
                    minutes=rng.choice((15, 30, 60)),
                    rrule=f"FREQ=WEEKLY;COUNT={len(starts)}",
                )
            )
        else:  # one-off meetings, one a week
            for w in range(weeks):
                day = first + timedelta(weeks=w, days=rng.randrange(7))
                at = time(rng.randrange(8, 18), rng.choice((0, 15, 30, 45)))
                meetings.append(
                    Meeting(
                        uid=f"meeting-{local}-{slot}-{w}@{DOMAIN}",
                        title=rng.choice(("Customer call", "Hiring debrief", "1:1 with manager")),
                        zone=person.zone,
                        organizer=colleague,
                        attendees=attendees,
                        occurrences=[Occurrence(datetime.combine(day, at, tz))],
                        minutes=rng.choice((30, 45, 60)),
                    )
                )
    if position % 3 == 0:  # out of office: all day, nobody else
        day = first + timedelta(days=rng.randrange(max(1, 30 * spec.months)))
        meetings.append(
            Meeting(
                uid=f"ooo-{local}@{DOMAIN}",
                title="Out of office",
                zone=person.zone,
                organizer=person.email,
                attendees=(),
                occurrences=[Occurrence(datetime.combine(day, time(), tz))],
                minutes=24 * 60,
                all_day=True,
            )
        )
    return meetings


# --------------------------------------------------------------------------------------
# Counting what was planted


def counts(org: Org) -> dict[str, int]:
    """What a correct ingest of ``org`` stores, computed from the plan alone."""
    seen: set[str] = set()
    session_copies = sessions = noise = 0
    for meetings in org.calendars.values():
        for meeting in meetings:
            live = sum(1 for o in meeting.occurrences if o.change != "deleted")
            if meeting.pair is None:
                noise += live
            else:
                session_copies += live
                if meeting.uid not in seen:
                    seen.add(meeting.uid)
                    sessions += live
    return {
        "pairings": len(org.pairs),
        "people": len(org.people),
        "calendars": len(org.calendars),
        "occurrences": session_copies + noise,
        "events_stored": session_copies,  # both copies of every session
        "events_dropped": noise,
        "sessions": sessions,
    }


# --------------------------------------------------------------------------------------
# Writing


_UTC_FMT = "%Y%m%dT%H%M%SZ"
_LOCAL_FMT = "%Y%m%dT%H%M%S"


def _partstat(meeting: Meeting, email: str, change: str | None) -> str:
    if change == "declined_mentor" and email == meeting.mentor:
        return "DECLINED"
    if change == "declined_mentee" and email == meeting.mentee:
        return "DECLINED"
    return "ACCEPTED"


def _vevent(
    meeting: Meeting,
    stamp: str,
    *,
    start: datetime,
    change: str | None = None,
    recurrence_id: datetime | None = None,
    rrule: str | None = None,
    exdates: list[datetime] | None = None,
) -> list[str]:
    zone = meeting.zone
    lines = ["BEGIN:VEVENT", f"UID:{meeting.uid}", f"DTSTAMP:{stamp}"]
    if meeting.all_day:
        lines += [
            f"DTSTART;VALUE=DATE:{start:%Y%m%d}",
            f"DTEND;VALUE=DATE:{start + timedelta(days=1):%Y%m%d}",
            "TRANSP:TRANSPARENT",
        ]
    else:
        end = start + timedelta(minutes=meeting.minutes)
        lines += [
            f"DTSTART;TZID={zone}:{start.strftime(_LOCAL_FMT)}",
            f"DTEND;TZID={zone}:{end.strftime(_LOCAL_FMT)}",
        ]
    if recurrence_id is not None:
        lines.append(f"RECURRENCE-ID;TZID={zone}:{recurrence_id.strftime(_LOCAL_FMT)}")
        lines.append("SEQUENCE:1")
    if rrule:
        lines.append(f"RRULE:{rrule}")
    for ex in exdates or ():
        lines.append(f"EXDATE;TZID={zone}:{ex.strftime(_LOCAL_FMT)}")
    lines.append(f"SUMMARY:{meeting.title}")
    lines.append("STATUS:CANCELLED" if change == "cancelled" else "STATUS:CONFIRMED")
    if meeting.attendees:
        lines.append(f"ORGANIZER:mailto:{meeting.organizer}")
        lines += [
            f"ATTENDEE;PARTSTAT={_partstat(meeting, a, change)}:mailto:{a}"
            for a in meeting.attendees
        ]
    lines.append("END:VEVENT")
    return lines


def _events(meeting: Meeting, stamp: str) -> list[str]:
    """A meeting as VEVENTs: the series master, then one override per changed instance."""
    if meeting.rrule is None:
        only = meeting.occurrences[0]
        start = only.start + timedelta(days=1) if only.change == "moved" else only.start
        return _vevent(meeting, stamp, start=start, change=only.change)
    deleted = [o.start for o in meeting.occurrences if o.change == "deleted"]
    lines = _vevent(
        meeting, stamp, start=meeting.occurrences[0].start, rrule=meeting.rrule, exdates=deleted
    )
    for o in meeting.occurrences:
        if o.change is None or o.change == "deleted":
            continue
        moved = o.start + timedelta(days=1) if o.change == "moved" else o.start
        lines += _vevent(meeting, stamp, start=moved, change=o.change, recurrence_id=o.start)
    return lines


_VTIMEZONES: dict[str, list[str]] = {}


def _vtimezone(zone: str, around: date) -> list[str]:
    if zone not in _VTIMEZONES:
        component = Timezone.from_tzid(
            zone,
            first_date=around - timedelta(days=800),
            last_date=around + timedelta(days=100),
        )
        _VTIMEZONES[zone] = component.to_ical().decode().replace("\r\n ", "").splitlines()
    return _VTIMEZONES[zone]


def ics_text(org: Org, person: Person) -> str:
    stamp = org.spec.now.strftime(_UTC_FMT)
    meetings = org.calendars[person.email]
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//mentorpulse//bench organisation//EN",
        "CALSCALE:GREGORIAN",
        f"X-WR-CALNAME:{person.name}",
        f"X-WR-TIMEZONE:{person.zone}",
    ]
    for zone in sorted({m.zone for m in meetings if not m.all_day}):
        lines += _vtimezone(zone, org.spec.day)
    for meeting in meetings:
        lines += _events(meeting, stamp)
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def _google_time(value: datetime, zone: str, all_day: bool) -> dict[str, str]:
    if all_day:
        return {"date": value.date().isoformat()}
    return {"dateTime": value.isoformat(), "timeZone": zone}


def google_items(org: Org, person: Person) -> list[dict[str, Any]]:
    """The calendar as Google Calendar ``events.list`` items (``singleEvents=false``)."""
    items: list[dict[str, Any]] = []
    for meeting in org.calendars[person.email]:
        span = timedelta(days=1) if meeting.all_day else timedelta(minutes=meeting.minutes)
        event_id = meeting.uid.split("@")[0].replace("-", "")

        def item(
            start: datetime,
            change: str | None,
            meeting: Meeting = meeting,
            span: timedelta = span,
            event_id: str = event_id,
        ) -> dict[str, Any]:
            body: dict[str, Any] = {
                "kind": "calendar#event",
                "id": event_id,
                "iCalUID": meeting.uid,
                "status": "cancelled" if change == "cancelled" else "confirmed",
                "summary": meeting.title,
                "start": _google_time(start, meeting.zone, meeting.all_day),
                "end": _google_time(start + span, meeting.zone, meeting.all_day),
                "updated": org.spec.now.isoformat().replace("+00:00", "Z"),
            }
            if meeting.attendees:
                body["organizer"] = {"email": meeting.organizer}
                body["attendees"] = [
                    {
                        "email": a,
                        "responseStatus": _partstat(meeting, a, change).lower(),
                        **({"self": True} if a == person.email else {}),
                    }
                    for a in meeting.attendees
                ]
            return body

        first = meeting.occurrences[0]
        if meeting.rrule is None:
            start = first.start + timedelta(days=1) if first.change == "moved" else first.start
            items.append(item(start, first.change))
            continue
        master = item(first.start, None)
        exdates = [
            f"EXDATE;TZID={meeting.zone}:{o.start.strftime(_LOCAL_FMT)}"
            for o in meeting.occurrences
            if o.change == "deleted"
        ]
        master["recurrence"] = [f"RRULE:{meeting.rrule}", *exdates]
        items.append(master)
        for o in meeting.occurrences:
            if o.change is None or o.change == "deleted":
                continue
            moved = o.start + timedelta(days=1) if o.change == "moved" else o.start
            instance = item(moved, o.change)
            instance["id"] = f"{event_id}_{o.start.astimezone(UTC).strftime(_UTC_FMT)}"
            instance["recurringEventId"] = event_id
            instance["originalStartTime"] = _google_time(o.start, meeting.zone, False)
            items.append(instance)
    return items


_CONFIG = """\
# A synthetic organisation for the benchmark: {pairs} pairings, {months} months of history,
# {noise} other meetings per person per week. Generated by `python -m bench.generate`.
database: sqlite:///mentorpulse.db
timezone: Europe/London
sources:
  - id: calendars
    kind: ics
    path: calendars          # one <email>.ics per person
    window_past: {past}d
    window_future: 35d
roster:
  path: roster.csv
programs:
{programs}contacts:
  hr:
    email: hr@{domain}
    name: People Team
notify:
  sender: mentorpulse@{domain}
  transport:
    kind: file
    path: outbox
"""

_PROGRAM = """\
  - id: {id}
    match:
      title_keywords: [{keywords}]
    cadence:
      every: {every}
      grace: {grace}
    rules:
      - id: {id}-lapsed
        kind: cadence_gap
        severity: warning
        for: 1d
    admins: [hr]
"""


def config_text(spec: Spec) -> str:
    programs = "".join(
        _PROGRAM.format(
            id=pid,
            keywords=", ".join(f'"{k}"' for k in keywords),
            every=f"{7 * weeks}d" if weeks else "30d",
            grace=grace,
        )
        for pid, weeks, grace, keywords in PROGRAMS
    )
    past = (spec.day - spec.history_start).days + 7
    return _CONFIG.format(
        pairs=spec.pairs,
        months=spec.months,
        noise=spec.noise,
        past=past,
        programs=programs,
        domain=DOMAIN,
    )


def roster_text(org: Org) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "program",
            "mentor_email",
            "mentee_email",
            "started_on",
            "mentor_name",
            "mentee_name",
            "mentor_timezone",
            "mentee_timezone",
        ]
    )
    for program, mentor, mentee, started in org.pairs:
        writer.writerow(
            [
                program,
                mentor.email,
                mentee.email,
                started.isoformat(),
                mentor.name,
                mentee.name,
                mentor.zone,
                mentee.zone,
            ]
        )
    return out.getvalue()


def _write_person(org: Org, person: Person, out: Path, fixtures: bool) -> None:
    (out / "calendars" / f"{person.email}.ics").write_text(
        ics_text(org, person), encoding="utf-8", newline=""
    )
    if fixtures:
        (out / "fixtures" / f"{person.email}.json").write_text(
            json.dumps({"items": google_items(org, person)}, separators=(",", ":")),
            encoding="utf-8",
        )


def write(spec: Spec, out: Path, *, fixtures: bool = True) -> dict[str, int]:
    """Write the organisation of ``spec`` into ``out``; returns the planted counts."""
    org = plan(spec)
    (out / "calendars").mkdir(parents=True, exist_ok=True)
    if fixtures:
        (out / "fixtures").mkdir(parents=True, exist_ok=True)
    for person in org.people.values():
        _write_person(org, person, out, fixtures)
    (out / "mentorpulse.yaml").write_text(config_text(spec), encoding="utf-8")
    (out / "roster.csv").write_text(roster_text(org), encoding="utf-8", newline="")
    planted = counts(org)
    manifest = {"spec": asdict(spec), "counts": planted, "fixtures": fixtures}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return planted


def read_manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return data


def mutate(out: Path, fraction: float, *, seed: int = 7) -> dict[str, int]:
    """Change ``fraction`` of all occurrences in place, as a day of real edits would.

    A changed mentoring instance is cancelled (both copies change: two stored rows); a
    changed one-off meeting with colleagues moves by half an hour (dropped at ingest: no
    row). Only the calendars that hold a change are rewritten. Returns what changed.
    """
    manifest = read_manifest(out)
    spec = Spec(**manifest["spec"])
    org = plan(spec)
    candidates: list[tuple[str, Meeting, Occurrence]] = []
    seen: set[str] = set()
    for email, meetings in org.calendars.items():
        for meeting in meetings:
            if meeting.uid in seen or meeting.all_day:
                continue
            seen.add(meeting.uid)
            if meeting.pair is not None:
                candidates += [(email, meeting, o) for o in meeting.occurrences if o.change is None]
            elif meeting.rrule is None:
                candidates.append((email, meeting, meeting.occurrences[0]))
    total = manifest["counts"]["occurrences"]
    wanted = min(len(candidates), max(1, math.ceil(total * fraction)))
    rng = random.Random(seed)
    touched: set[str] = set()
    sessions = noise = 0
    for email, meeting, occurrence in rng.sample(candidates, wanted):
        if meeting.pair is not None:
            occurrence.change = "cancelled"
            touched |= {meeting.mentor, meeting.mentee}
            sessions += 1
        else:
            occurrence.start += timedelta(minutes=30)
            touched.add(email)
            noise += 1
    for email in sorted(touched):
        _write_person(org, org.people[email], out, (out / "fixtures").is_dir())
    return {
        "changed_occurrences": wanted,
        "changed_sessions": sessions,
        "changed_session_copies": 2 * sessions,
        "changed_noise": noise,
        "calendars_rewritten": len(touched),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description="Write a deterministic synthetic organisation (roster, config, calendars).",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), help="Preset for the numbers below.")
    parser.add_argument("--pairs", type=int, help="Number of mentor/mentee pairings.")
    parser.add_argument("--months", type=int, help="Months of history before today.")
    parser.add_argument("--noise", type=int, help="Other meetings per person per week.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random plan.")
    parser.add_argument("--today", default=TODAY.isoformat(), help="The day the org is 'now'.")
    parser.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    parser.add_argument(
        "--no-fixtures", action="store_true", help="Skip the Google-shaped JSON fixtures."
    )
    args = parser.parse_args(argv)
    base = SCALES[args.scale] if args.scale else SCALES["small"]
    spec = Spec(
        pairs=args.pairs if args.pairs is not None else base.pairs,
        months=args.months if args.months is not None else base.months,
        noise=args.noise if args.noise is not None else base.noise,
        seed=args.seed,
        today=args.today,
    )
    planted = write(spec, args.out, fixtures=not args.no_fixtures)
    print(json.dumps({"out": str(args.out), **planted}, indent=2))


if __name__ == "__main__":
    main()

"""The demo's organisation: twelve hand-placed pairs, each with a planted story.

Moved, cancelled, late-cancelled, rebooked and declined instances, a series across a DST
change, a lapsed pair and one that never met, colleagues' meetings and an all-hands to be
ignored. Everything is anchored on ``today`` and a fixed seed (no wall clock anywhere).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mentorpulse.sample.org import (
    Attendee,
    Change,
    Meeting,
    Org,
    Pair,
    Person,
    Spec,
)
from mentorpulse.sample.template import ConfigTemplate, Contact, Program

SEED = 20240611
DOMAIN = "demo.example"
# Slots are planted within today ± SPAN; the config expands ±100 days, so it sees them all.
SPAN = timedelta(days=88)
SPEC = Spec(pairs=12, months=3, noise=3, seed=SEED, scale="demo")

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
_PEOPLE = (
    ("ana.alvarez", "Ana Álvarez", "Europe/Berlin"),
    ("ben.okafor", "Ben Okafor", "Europe/London"),
    ("carla.mendes", "Carla Mendes", "America/New_York"),
    ("dev.patel", "Dev Patel", "Asia/Kolkata"),
    ("elena.fischer", "Elena Fischer", ""),  # the zone with a DST change near today
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
)


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


# Both programs ask the pair after each session whether it took place (README,
# "Attendance checks"); `mentorpulse demo --answer` answers a few of the questions.
_ASK_BOTH = (
    "ask: [mentor, mentee]       # each gets one email per finished session, ever",
    "after: 2h",
    "answer_within: 7d",
)


def config(spec: Spec) -> ConfigTemplate:
    """Sessions are found by who takes part, whatever their title; HR gets a monthly report."""
    return ConfigTemplate(
        header=(
            f"The mentorpulse demo organisation, generated for {spec.today}.",
            "Sessions are found by who takes part, whatever their title: no keywords needed.",
        ),
        source_id="demo-calendars",
        source_comment="one <email>.ics per person; the file name is the owner",
        window_past=100,
        window_future=100,
        programs=(
            Program(
                "engineering",
                "14d",
                "3d",
                ("eng-admin",),
                name="Engineering mentoring",
                match=(
                    "# No title keywords: any meeting of the pair counts, however it was booked, "
                    "but",
                    "# only up to 4 people (rooms not counted). The monthly all-hands that every",
                    "# mentor and mentee attends is a group meeting, not a session of each pair.",
                    "max_participants: 4",
                ),
                attendance_check=_ASK_BOTH,
            ),
            Program(
                "leadership",
                "28d",
                "7d",
                ("leadership-admin",),
                name="Leadership mentoring",
                attendance_check=_ASK_BOTH,
            ),
        ),
        contacts=(
            Contact("hr", "hr", "People Team", "Europe/London"),
            Contact("eng-admin", "eng-mentoring", "Engineering mentoring admins", "Europe/Berlin"),
            Contact(
                "leadership-admin",
                "leadership-mentoring",
                "Leadership mentoring admins",
                "America/New_York",
            ),
        ),
        monthly_report_to_hr=True,
    )


def _person(local: str, name: str, zone: str = "UTC") -> Person:
    return Person(f"{local}@{DOMAIN}", name, zone)


def _people(dst_zone: str) -> dict[str, Person]:
    """By first name: the plan below names them so."""
    return {
        local.split(".")[0]: _person(local, name, zone or dst_zone) for local, name, zone in _PEOPLE
    }


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


def _past(meeting: Meeting, today: date) -> list[int]:
    """Indices of occurrences safely in the past: the ones that get moved or cancelled."""
    return [i for i, s in enumerate(meeting.starts) if s.date() <= today - timedelta(days=6)]


def _future(meeting: Meeting, today: date) -> list[int]:
    return [i for i, s in enumerate(meeting.starts) if s.date() >= today + timedelta(days=5)]


def _short(pair: Pair) -> str:
    return f"{pair.mentor.local.split('.')[0]}-{pair.mentee.local.split('.')[0]}"


def _mentoring(pair: Pair, uid: str, starts: list[datetime], **fields: Any) -> Meeting:
    """A meeting of ``pair`` organised by the mentor, as the demo books them."""
    first, second = pair.mentor.name.split()[0], pair.mentee.name.split()[0]
    return Meeting.of(
        uid,
        f"Mentoring: {first} / {second}",
        starts,
        minutes=fields.pop("minutes", 45),
        organizer=pair.mentor,
        attendees=(Attendee(pair.mentor), Attendee(pair.mentee)),
        pair=pair,
        booked=timedelta(days=10),
        **fields,
    )


def _series(
    pair: Pair, starts: list[datetime], *, weeks: int | None, until: bool = False
) -> Meeting:
    """A series organised by the mentor; ``weeks=None`` repeats monthly."""
    rrule: dict[str, Any] = {"freq": "monthly"} if weeks is None else {"freq": "weekly"}
    if weeks and weeks > 1:
        rrule["interval"] = weeks
    if until:
        rrule["until"] = starts[-1].astimezone(UTC)
    else:
        rrule["count"] = len(starts)
    return _mentoring(pair, f"series-{_short(pair)}", starts, rrule=rrule)


def _singles(
    pair: Pair, zone: str, slots: list[tuple[int, time]], today: date, minutes: int = 45
) -> list[Meeting]:
    """One-off bookings by the mentor, ``slots`` as (days from today, local time)."""
    tz = ZoneInfo(zone)
    return [
        _mentoring(
            pair,
            f"single-{_short(pair)}-{i}",
            [datetime.combine(today + timedelta(days=days), at, tz)],
            minutes=minutes,
        )
        for i, (days, at) in enumerate(slots)
    ]


def _change(meeting: Meeting, index: int, change: Change) -> None:
    meeting.occurrences[index].change = change


def plan(spec: Spec) -> Org:
    """The organisation: who mentors whom, every meeting they booked, and the noise."""
    today = spec.day
    dst_zone, _ = dst_transition(today)
    p = _people(dst_zone)
    # Just before the first planted sessions and inside the sync window, so no rule sees
    # a gap at the start that the calendars cannot explain.
    long_ago = today - timedelta(days=90)
    pairs = [
        Pair("engineering", p[mentor], p[mentee], started)
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
        Pair("leadership", p[mentor], p[mentee], long_ago)
        for mentor, mentee in (
            ("omar", "priya"),
            ("quinn", "ravi"),
            ("sofia", "tom"),
            ("ana", "uma"),
        )
    ]
    people = {person.email: person for person in p.values()}
    org = Org(spec, DOMAIN, pairs, people, {email: [] for email in people})
    by = {_short(x): x for x in pairs}
    for meeting in _engineering(today, by, dst_zone) + _leadership(today, by):
        assert meeting.pair is not None
        org.add(meeting, meeting.pair.mentor.email, meeting.pair.mentee.email)
    _add_noise(org)
    return org


def _engineering(today: date, by: dict[str, Pair], dst_zone: str) -> list[Meeting]:
    meetings = []

    # Biweekly, Berlin: a moved instance, an early cancellation, a mentee decline,
    # and an upcoming instance moved by a day.
    m = _series(
        by["ana-ben"], _weekly(today, "Europe/Berlin", offset=-3, weeks=2, at=time(10)), weeks=2
    )
    past, future = _past(m, today), _future(m, today)
    _change(m, past[-2], Change("moved", shift=timedelta(days=1, hours=4)))
    _change(m, past[-3], Change("cancelled"))
    _change(m, past[-4], Change("declined", by="mentee"))
    _change(m, future[1], Change("moved", shift=timedelta(days=1)))
    meetings.append(m)

    # Weekly, organised by the mentee in Kolkata (no DST) for a New York mentor: a late
    # cancellation by the organizer and a mentor decline.
    starts = _weekly(today, "Asia/Kolkata", offset=2, weeks=1, at=time(19, 30))
    m = _series(by["carla-dev"], starts, weeks=1)
    m.organizer = by["carla-dev"].mentee
    past = _past(m, today)
    _change(m, past[-2], Change("late_cancelled"))
    _change(m, past[-5], Change("declined", by="mentor"))
    meetings.append(m)

    # Weekly at constant local wall-clock time across a DST change in the mentor's zone.
    starts = _weekly(today, dst_zone, offset=4, weeks=1, at=time(9, 30))
    meetings.append(_series(by["elena-farid"], starts, weeks=1))

    # Biweekly, London: cancelled and rebooked two days later, plus an early cancellation.
    starts = _weekly(today, "Europe/London", offset=-5, weeks=2, at=time(15))
    m = _series(by["emma-felix"], starts, weeks=2)
    past = _past(m, today)
    _change(m, past[-2], Change("rebooked"))
    _change(m, past[-4], Change("cancelled"))
    meetings.append(m)

    # Biweekly, New York: the mentor's copy never got the mentee's replies (NEEDS-ACTION);
    # only the mentee's own copy shows the one decline.
    starts = _weekly(today, "America/New_York", offset=4, weeks=2, at=time(11))
    m = _series(by["grace-hugo"], starts, weeks=2)
    m.organizer_sees = "NEEDS-ACTION"
    _change(m, _past(m, today)[-3], Change("declined", by="mentee", propagated=False))
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
    singles[3].organizer = by["marcus-nisha"].mentee
    _change(singles[3], 0, Change("cancelled"))
    return meetings + singles


def _leadership(today: date, by: dict[str, Pair]) -> list[Meeting]:
    meetings = []

    # Monthly, New York, with the latest past instance moved two days later.
    m = _series(by["omar-priya"], _monthly(today, "America/New_York", at=time(14)), weeks=None)
    m.duration = timedelta(hours=1)
    _change(m, _past(m, today)[-1], Change("moved", shift=timedelta(days=2)))
    meetings.append(m)

    # Every four weeks, Berlin morning for a Kolkata mentee, who declines one.
    starts = _weekly(today, "Europe/Berlin", offset=-2, weeks=4, at=time(8, 30))
    m = _series(by["quinn-ravi"], starts, weeks=4)
    _change(m, _past(m, today)[-2], Change("declined", by="mentee"))
    meetings.append(m)

    # Monthly one-off bookings in London; one cancelled three hours before it started.
    slots = [(days, time(16)) for days in (-85, -58, -30, -3, 25, 53, 81)]
    singles = _singles(by["sofia-tom"], "Europe/London", slots, today)
    _change(singles[2], 0, Change("late_cancelled"))
    meetings.extend(singles)

    # Monthly, Berlin evening / New York morning, for a mentor who has two mentees.
    m = _series(by["ana-uma"], _monthly(today, "Europe/Berlin", at=time(17)), weeks=None)
    _change(m, _past(m, today)[-2], Change("cancelled"))
    meetings.append(m)
    return meetings


def _add_noise(org: Org) -> None:
    """Colleagues' meetings and an all-hands in every file: what the matcher must ignore."""
    today = org.spec.day
    all_hands = _all_hands(org, today)
    rng = random.Random(SEED + 1)  # noqa: S311 - reproducible demo data, not a secret
    for index, person in enumerate(org.people.values()):
        org.add_all(person.email, _noise(person, index, today, rng))
        org.add(all_hands, person.email)


def _all_hands(org: Org, today: date) -> Meeting:
    """Every four weeks the whole company meets, every mentor and mentee included.

    Each pair both attend it, and the programs match by who takes part, not by title: it
    is the participant cap (``match.max_participants``) that keeps it from counting as a
    session of every pair. A booked room is on the invitation too.
    """
    starts = _weekly(today, "Europe/London", offset=3, weeks=4, at=time(13))
    organizer = _person(*_COLLEAGUES[4], "Europe/London")
    room = Attendee(Person(f"auditorium@rooms.{DOMAIN}", "Auditorium", "UTC"), cutype="ROOM")
    everybody = (Attendee(organizer), *(Attendee(p) for p in org.people.values()), room)
    rrule = {"freq": "weekly", "interval": 4, "count": len(starts)}
    return Meeting.of(
        "all-hands",
        "All hands",
        starts,
        minutes=60,
        organizer=organizer,
        attendees=everybody,
        rrule=rrule,
        booked=timedelta(days=14),
    )


def _noise(person: Person, index: int, today: date, rng: random.Random) -> list[Meeting]:
    """Meetings with colleagues outside the roster, which the matcher must ignore."""
    tz = ZoneInfo(person.zone)
    meetings = []
    for n in range(3):
        colleague = _person(*_COLLEAGUES[rng.randrange(len(_COLLEAGUES))])
        other = _person(*_COLLEAGUES[rng.randrange(len(_COLLEAGUES))])
        day = today + timedelta(days=rng.randint(-85, 85))
        start = datetime.combine(day, time(rng.randint(8, 16), rng.choice((0, 15, 30))), tz)
        title = _NOISE_TITLES[rng.randrange(len(_NOISE_TITLES))]
        minutes = rng.choice((30, 45, 60))
        others = () if other == colleague else (Attendee(other, "TENTATIVE"),)
        attendees = (Attendee(colleague), Attendee(person), *others)
        meetings.append(
            Meeting.of(
                f"noise-{person.local}-{n}",
                title,
                [start],
                minutes=minutes,
                organizer=colleague,
                attendees=attendees,
            )
        )
    if index % 3 == 0:  # a weekly stand-up, organised by the person, with colleagues
        start = datetime.combine(today - timedelta(days=84), time(9, 15), tz)
        team = (Attendee(person), *(Attendee(_person(*c)) for c in _COLLEAGUES[:3]))
        starts = [start + timedelta(weeks=w) for w in range(24)]
        meetings.append(
            Meeting.of(
                f"standup-{person.local}",
                "Team stand-up",
                starts,
                minutes=15,
                organizer=person,
                attendees=team,
                rrule={"freq": "weekly", "count": 24},
                status=None,
            )
        )
    if index % 5 == 0:  # an all-day event, no attendees
        day = today + timedelta(days=rng.randint(-60, 60))
        uid = f"offsite-{person.local}"
        meetings.append(Meeting.all_day_marker(uid, "Company offsite", day, person.zone))
    return meetings

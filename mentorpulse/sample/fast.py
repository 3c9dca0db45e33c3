"""Calendars written as plain text, and as Google Calendar ``events.list`` items.

A large organisation has a million occurrences and the generator must not be the slow
part of the benchmark, so the ICS text is written directly (not through ``icalendar``).
The JSON fixtures hold the same calendars for the Google and Graph provider fakes.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from icalendar import Timezone

from mentorpulse.sample.org import Change, Meeting, Occurrence, Org, Person

_UTC_FMT = "%Y%m%dT%H%M%SZ"
_LOCAL_FMT = "%Y%m%dT%H%M%S"
_VTIMEZONES: dict[tuple[str, date], list[str]] = {}


def rrule_text(rrule: dict[str, Any]) -> str:
    """``{"freq": "weekly", "count": 3}`` as ``FREQ=WEEKLY;COUNT=3``."""
    parts = []
    for key, value in rrule.items():
        text = value.astimezone(UTC).strftime(_UTC_FMT) if isinstance(value, datetime) else value
        parts.append(f"{key.upper()}={str(text).upper()}")
    return ";".join(parts)


def _partstat(meeting: Meeting, email: str, change: Change | None) -> str:
    if change is not None and change.kind == "declined" and meeting.pair is not None:
        assert change.by is not None
        if meeting.pair.person(change.by).email == email:
            return "DECLINED"
    return next((a.partstat for a in meeting.attendees if a.person.email == email), "ACCEPTED")


def _vevent(
    meeting: Meeting,
    uid: str,
    stamp: str,
    occurrence: Occurrence,
    *,
    master: bool = False,
) -> list[str]:
    """One VEVENT: the master of a series (``master``), an override, or a single event."""
    zone, change = meeting.zone, (None if master else occurrence.change)
    start = occurrence.start if master else occurrence.actual
    lines = ["BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{stamp}", *_when(meeting, start)]
    if meeting.rrule is not None and not master:
        lines.append(f"RECURRENCE-ID;TZID={zone}:{occurrence.start.strftime(_LOCAL_FMT)}")
        lines.append("SEQUENCE:1")
    if meeting.rrule is not None and master:
        lines.append(f"RRULE:{rrule_text(meeting.rrule)}")
        lines += [
            f"EXDATE;TZID={zone}:{o.start.strftime(_LOCAL_FMT)}"
            for o in meeting.occurrences
            if o.deleted
        ]
    lines.append(f"SUMMARY:{meeting.title}")
    cancelled = change is not None and change.kind == "cancelled"
    lines.append("STATUS:CANCELLED" if cancelled else "STATUS:CONFIRMED")
    if meeting.attendees and meeting.organizer is not None:
        lines.append(f"ORGANIZER:mailto:{meeting.organizer.email}")
        for email in (a.person.email for a in meeting.attendees):
            lines.append(f"ATTENDEE;PARTSTAT={_partstat(meeting, email, change)}:mailto:{email}")
    lines.append("END:VEVENT")
    return lines


def _when(meeting: Meeting, start: datetime) -> list[str]:
    """DTSTART and DTEND (an all-day marker: dates, and free time)."""
    if meeting.all_day:
        return [
            f"DTSTART;VALUE=DATE:{start:%Y%m%d}",
            f"DTEND;VALUE=DATE:{start + timedelta(days=1):%Y%m%d}",
            "TRANSP:TRANSPARENT",
        ]
    end = start + meeting.duration
    return [
        f"DTSTART;TZID={meeting.zone}:{start.strftime(_LOCAL_FMT)}",
        f"DTEND;TZID={meeting.zone}:{end.strftime(_LOCAL_FMT)}",
    ]


def _events(meeting: Meeting, uid: str, stamp: str) -> list[str]:
    """A meeting as VEVENTs: the series master, then one override per changed instance."""
    if meeting.rrule is None:
        return _vevent(meeting, uid, stamp, meeting.occurrences[0])
    lines = _vevent(meeting, uid, stamp, meeting.occurrences[0], master=True)
    for occurrence in meeting.occurrences:
        if occurrence.change is not None and not occurrence.deleted:
            lines += _vevent(meeting, uid, stamp, occurrence)
    return lines


def _vtimezone(zone: str, around: date) -> list[str]:
    if (zone, around) not in _VTIMEZONES:
        component = Timezone.from_tzid(
            zone,
            first_date=around - timedelta(days=800),
            last_date=around + timedelta(days=100),
        )
        text = component.to_ical().decode().replace("\r\n ", "")
        _VTIMEZONES[zone, around] = text.splitlines()
    return _VTIMEZONES[zone, around]


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
        lines += _events(meeting, f"{meeting.uid}@{org.domain}", stamp)
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def _google_time(value: datetime, zone: str, all_day: bool) -> dict[str, str]:
    if all_day:
        return {"date": value.date().isoformat()}
    return {"dateTime": value.isoformat(), "timeZone": zone}


def _item(
    org: Org, owner: Person, meeting: Meeting, start: datetime, change: Change | None
) -> dict[str, Any]:
    """One ``events.list`` item of ``meeting`` as ``owner``'s calendar shows it."""
    cancelled = change is not None and change.kind == "cancelled"
    body: dict[str, Any] = {
        "kind": "calendar#event",
        "id": meeting.uid.replace("-", ""),
        "iCalUID": f"{meeting.uid}@{org.domain}",
        "status": "cancelled" if cancelled else "confirmed",
        "summary": meeting.title,
        "start": _google_time(start, meeting.zone, meeting.all_day),
        "end": _google_time(start + meeting.duration, meeting.zone, meeting.all_day),
        "updated": org.spec.now.isoformat().replace("+00:00", "Z"),
    }
    if meeting.attendees and meeting.organizer is not None:
        body["organizer"] = {"email": meeting.organizer.email}
        body["attendees"] = [
            {
                "email": a.person.email,
                "responseStatus": _partstat(meeting, a.person.email, change).lower(),
                **({"self": True} if a.person.email == owner.email else {}),
            }
            for a in meeting.attendees
        ]
    return body


def google_items(org: Org, person: Person) -> list[dict[str, Any]]:
    """The calendar as Google Calendar ``events.list`` items (``singleEvents=false``)."""
    items: list[dict[str, Any]] = []
    for meeting in org.calendars[person.email]:
        first = meeting.occurrences[0]
        if meeting.rrule is None:
            items.append(_item(org, person, meeting, first.actual, first.change))
            continue
        master = _item(org, person, meeting, first.start, None)
        exdates = [
            f"EXDATE;TZID={meeting.zone}:{o.start.strftime(_LOCAL_FMT)}"
            for o in meeting.occurrences
            if o.deleted
        ]
        master["recurrence"] = [f"RRULE:{rrule_text(meeting.rrule)}", *exdates]
        items.append(master)
        for o in meeting.occurrences:
            if o.change is None or o.deleted:
                continue
            instance = _item(org, person, meeting, o.actual, o.change)
            instance["id"] = f"{master['id']}_{o.start.astimezone(UTC).strftime(_UTC_FMT)}"
            instance["recurringEventId"] = master["id"]
            instance["originalStartTime"] = _google_time(o.start, meeting.zone, False)
            items.append(instance)
    return items


def write_person(org: Org, person: Person, out: Path, fixtures: bool) -> None:
    """``calendars/<email>.ics`` and, with ``fixtures``, ``fixtures/<email>.json``."""
    (out / "calendars" / f"{person.email}.ics").write_text(
        ics_text(org, person), encoding="utf-8", newline=""
    )
    if fixtures:
        (out / "fixtures" / f"{person.email}.json").write_text(
            json.dumps({"items": google_items(org, person)}, separators=(",", ":")),
            encoding="utf-8",
        )


def write_calendars(org: Org, out: Path, *, fixtures: bool) -> None:
    (out / "calendars").mkdir(parents=True, exist_ok=True)
    if fixtures:
        (out / "fixtures").mkdir(parents=True, exist_ok=True)
    for person in org.people.values():
        write_person(org, person, out, fixtures)

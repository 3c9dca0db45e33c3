"""Calendars written through ``icalendar``: what real servers export, byte-reproducible.

Every mentoring meeting sits in both people's files under one UID, each copy with that
person's own RSVP; changed instances are overrides (RECURRENCE-ID) with the times a real
change would have stamped on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from icalendar import Calendar, Event, Timezone, vCalAddress

from mentorpulse.sample.manifest import REBOOKED_AFTER
from mentorpulse.sample.org import Attendee, Change, Meeting, Org, Person, Role

# How long before an occurrence each kind of change was made (a decline: 2 days).
_NOTICE = {
    "cancelled": timedelta(days=4),
    "late_cancelled": timedelta(hours=5),
    "rebooked": timedelta(hours=30),
    "declined": timedelta(days=2),
}


def stamp(today: date) -> datetime:
    """The export time of every file: the start of ``today`` in UTC, never the clock."""
    return datetime.combine(today, time(0), UTC)


def _address(person: Person, attendee: Attendee | None = None, partstat: str = "") -> vCalAddress:
    address = vCalAddress(f"mailto:{person.email}")
    address.params["CN"] = person.name
    if attendee is not None:
        address.params["CUTYPE"] = attendee.cutype
        if attendee.cutype == "INDIVIDUAL":
            address.params["ROLE"] = "REQ-PARTICIPANT"
        address.params["PARTSTAT"] = partstat or attendee.partstat
    return address


@dataclass(frozen=True)
class _Writer:
    org: Org

    @property
    def stamp(self) -> datetime:
        return stamp(self.org.spec.day)

    def uid(self, uid: str) -> str:
        return f"{uid}@{self.org.domain}"

    def plain(self, meeting: Meeting) -> Event:
        """A meeting every owner's file shows alike (colleagues', all-day markers)."""
        start = meeting.occurrences[0].start
        event = Event()
        event.add("uid", self.uid(meeting.uid))
        event.add("dtstamp", self.stamp)
        if not meeting.all_day:
            booked = min(start.astimezone(UTC) - meeting.booked, self.stamp)
            event.add("created", booked)
            event.add("last-modified", booked)
        event.add("summary", meeting.title)
        if meeting.all_day:
            event.add("dtstart", start.date())
            event.add("dtend", start.date() + timedelta(days=1))
            event.add("transp", "TRANSPARENT")
        else:
            event.add("dtstart", start)
            event.add("dtend", start + meeting.duration)
        if meeting.rrule is not None:
            event.add("rrule", meeting.rrule)
        if meeting.status is not None:
            event.add("status", meeting.status)
        if meeting.organizer is not None:
            event.add("organizer", _address(meeting.organizer))
        for attendee in meeting.attendees:
            event.add("attendee", _address(attendee.person, attendee))
        return event

    def mentoring(
        self,
        meeting: Meeting,
        *,
        uid: str,
        start: datetime,
        partstats: dict[Role, str],
        modified: datetime,
        created: datetime,
        sequence: int = 0,
        status: str = "CONFIRMED",
        recurrence_id: datetime | None = None,
        rrule: dict[str, Any] | None = None,
    ) -> Event:
        pair = meeting.pair
        assert pair is not None
        assert meeting.organizer is not None
        event = Event()
        event.add("uid", self.uid(uid))
        event.add("dtstamp", self.stamp)
        event.add("created", created)
        event.add("last-modified", modified)
        event.add("sequence", sequence)
        event.add("summary", meeting.title)
        event.add("dtstart", start)
        event.add("dtend", start + meeting.duration)
        if recurrence_id is not None:
            event.add("recurrence-id", recurrence_id)
        if rrule is not None:
            event.add("rrule", rrule)
        event.add("status", status)
        event.add("organizer", _address(meeting.organizer))
        for role in ("mentor", "mentee"):
            event.add(
                "attendee",
                _address(pair.person(role), Attendee(pair.person(role)), partstats[role]),
            )
        return event


def _change_fields(original: datetime, change: Change, base: dict[Role, str]) -> dict[str, Any]:
    """The fields of the override that ``change`` made to the occurrence at ``original``."""
    fields: dict[str, Any] = {"partstats": dict(base), "sequence": 1}
    if change.kind == "moved":
        fields["start"] = original + change.shift
        fields["modified"] = min(original, original + change.shift) - timedelta(days=3)
        return fields
    fields["modified"] = original - _NOTICE[change.kind]
    if change.kind == "declined":
        assert change.by is not None
        fields["partstats"][change.by] = "DECLINED"
    else:
        fields["status"] = "CANCELLED"
    return fields


def _copy(writer: _Writer, meeting: Meeting, owner: Role) -> list[Event]:
    """The events of ``meeting`` as they appear in the file of its ``owner``."""
    stamp_ = writer.stamp
    created = min(min(meeting.starts).astimezone(UTC) - meeting.booked, stamp_)
    organizer = meeting.organizer_role
    attendee: Role = "mentee" if organizer == "mentor" else "mentor"
    base: dict[Role, str] = {organizer: "ACCEPTED", attendee: "ACCEPTED"}
    if owner == organizer:
        base[attendee] = meeting.organizer_sees
    master: dict[str, Any] = {
        "uid": meeting.uid,
        "start": meeting.starts[0],
        "created": created,
        "modified": created,
        "rrule": meeting.rrule,
    }
    overrides: list[Event] = []
    for occurrence in meeting.occurrences:
        change, original = occurrence.change, occurrence.start
        if change is None:
            continue
        if change.kind == "declined" and owner != change.by and not change.propagated:
            continue  # the reply never reached this copy
        fields = _change_fields(original, change, base)
        fields["modified"] = min(fields["modified"].astimezone(UTC), stamp_)
        if meeting.rrule is None:
            master.update(fields)
        else:
            event_fields = {**master, "rrule": None, "start": original, **fields}
            overrides.append(writer.mentoring(meeting, recurrence_id=original, **event_fields))
        if change.kind == "rebooked":
            overrides.append(_rebooking(writer, meeting, original, base))
    master.setdefault("partstats", base)
    return [writer.mentoring(meeting, **master), *overrides]


def _rebooking(
    writer: _Writer, meeting: Meeting, original: datetime, base: dict[Role, str]
) -> Event:
    """The new one-off booking made when the occurrence at ``original`` was cancelled."""
    cancelled_at = (original - _NOTICE["rebooked"]).astimezone(UTC)
    index = meeting.starts.index(original)
    single = Meeting(
        uid="",
        title=meeting.title,
        zone=meeting.zone,
        organizer=meeting.organizer,
        attendees=meeting.attendees,
        occurrences=[],
        duration=meeting.duration,
        pair=meeting.pair,
    )
    return writer.mentoring(
        single,
        uid=f"{meeting.uid}-rebooked-{index}",
        start=original + REBOOKED_AFTER,
        partstats=dict(base),
        created=cancelled_at,
        modified=cancelled_at,
    )


def write_calendars(org: Org, folder: Path) -> None:
    """One ``<email>.ics`` per person of ``org`` in ``folder``."""
    writer = _Writer(org)
    folder.mkdir(parents=True, exist_ok=True)
    today = org.spec.day
    zones: dict[str, Timezone] = {}
    for person in org.people.values():
        calendar = Calendar()
        calendar.add("prodid", "-//mentorpulse//demo organisation//EN")
        calendar.add("version", "2.0")
        calendar.add("calscale", "GREGORIAN")
        calendar.add("x-wr-calname", person.name)
        calendar.add("x-wr-timezone", person.zone)
        for meeting in org.calendars[person.email]:
            if meeting.pair is None:
                calendar.add_component(writer.plain(meeting))
                continue
            role = meeting.pair.role_of(person.email)
            assert role is not None
            for event in _copy(writer, meeting, role):
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
        (folder / f"{person.email}.ics").write_bytes(calendar.to_ical())

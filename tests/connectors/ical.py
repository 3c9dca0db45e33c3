"""The pair's meetings as iCalendar, the way a client writes them: for the sources that
read iCalendar (CalDAV objects, .ics files and feeds).

A CalDAV driver writes each meeting as one calendar object (:meth:`Meetings.object`); a
file or feed holds them all (:meth:`Meetings.calendar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mentorpulse.model import Response
from tests.connectors.contract import MENTEE, MENTOR

PARTSTAT = {Response.ACCEPTED: "ACCEPTED", Response.DECLINED: "DECLINED"}
# A zone no library knows: a reader skips that event, and a CalDAV server stores it.
UNKNOWN_ZONE = "Mars/Olympus_Mons"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Meeting:
    """A single meeting (one start) or a weekly series with its changed occurrences."""

    starts: list[datetime]
    response: Response = Response.ACCEPTED
    sequence: int = 0
    moved: dict[datetime, datetime] = field(default_factory=dict)  # original → new start
    cancelled: set[datetime] = field(default_factory=set)
    bad: bool = False

    def vevents(self, uid: str) -> str:
        if self.bad:
            return _vevent(
                uid, f"DTSTART;TZID={UNKNOWN_ZONE}:{self.starts[0]:%Y%m%dT%H%M%S}", self.response
            )
        lines = [f"DTSTART:{stamp(self.starts[0])}", f"SEQUENCE:{self.sequence}"]
        if len(self.starts) > 1:
            lines.append(f"RRULE:FREQ=WEEKLY;COUNT={len(self.starts)}")
        text = _vevent(uid, "\n".join(lines), self.response, self.starts[0])
        for original, start in sorted(self.moved.items()):
            text += _vevent(uid, _override(original, start), self.response, start)
        for original in sorted(self.cancelled):
            cancelled = f"{_override(original, original)}\nSTATUS:CANCELLED"
            text += _vevent(uid, cancelled, self.response, original)
        return text


def _override(original: datetime, start: datetime) -> str:
    return f"RECURRENCE-ID:{stamp(original)}\nDTSTART:{stamp(start)}\nSEQUENCE:1"


def _vevent(uid: str, when: str, response: Response, start: datetime | None = None) -> str:
    end = f"DTEND:{stamp(start + timedelta(hours=1))}\n" if start is not None else ""
    return (
        f"BEGIN:VEVENT\nUID:{uid}\nDTSTAMP:20261101T000000Z\n{when}\n{end}"
        f"SUMMARY:Mentoring\nORGANIZER:mailto:{MENTOR}\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTOR}\n"
        f"ATTENDEE;PARTSTAT={PARTSTAT[response]}:mailto:{MENTEE}\nEND:VEVENT\n"
    )


def _wrap(body: str) -> bytes:
    text = (
        f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//mentorpulse contract//EN\n{body}END:VCALENDAR\n"
    )
    return text.replace("\n", "\r\n").encode()


class Meetings:
    """The pair's meetings by name (the name is the UID), changed as people change them."""

    def __init__(self) -> None:
        self.by_name: dict[str, Meeting] = {}

    def add(self, name: str, starts: list[datetime], response: Response) -> None:
        self.by_name[name] = Meeting(starts, response)

    def add_bad(self, name: str, start: datetime) -> None:
        self.by_name[name] = Meeting([start], bad=True)

    def respond(self, name: str, response: Response) -> None:
        meeting = self.by_name[name]
        meeting.response, meeting.sequence = response, meeting.sequence + 1

    def move(self, name: str, original: datetime, start: datetime) -> None:
        self.by_name[name].moved[original] = start

    def cancel(self, name: str, original: datetime) -> None:
        self.by_name[name].cancelled.add(original)

    def delete(self, name: str) -> None:
        del self.by_name[name]

    def object(self, name: str) -> bytes:
        """One calendar object: the meeting ``name``."""
        return _wrap(self.by_name[name].vevents(name))

    def calendar(self) -> bytes:
        """A whole calendar: every meeting."""
        return _wrap("".join(m.vevents(name) for name, m in sorted(self.by_name.items())))

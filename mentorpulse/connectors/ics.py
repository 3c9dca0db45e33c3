"""The iCalendar connector (``kind: ics``): a .ics file, a folder of them, or an http(s) feed.

Each file (or the feed) is one *scope*: its records replace everything stored under it, so
a re-read file needs no per-event diff; a folder's files are grouped into pages sized by
work (connectors/base.PageGroup), each carrying the cursor of what it and those before
it hold. The cursor remembers a sha256 per file and the
window it was expanded over, so an unchanged folder costs one hash per file and yields
nothing. Files are third-party data: a broken file or event becomes an :class:`ItemError`,
never a crashed sync, and a file that cannot be parsed never wipes what it held before.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import sys
import time as clock
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, available_timezones

import structlog

from mentorpulse.config.schema import IcsSource, format_duration
from mentorpulse.connectors import zones
from mentorpulse.connectors.base import (
    PageGroup,
    TransientError,
    Window,
    cursor_entries,
    describe,
    retry_after_seconds,
    short_text,
    status_error,
)
from mentorpulse.errors import code_trace, unexpected_summary
from mentorpulse.model import (
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
    known_zone,
)

if TYPE_CHECKING:
    import icalendar

    from mentorpulse.connectors.http import Fetched

# icalendar, recurring-ical-events and dateutil's rrule (~0.03 s of imports) are loaded by
# the functions that parse: an unchanged folder is hashed, never parsed, and needs none.

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

CURSOR_VERSION = 1
# RRULEs this dense are not meetings; expanding them over months would only burn memory.
_REJECTED_FREQS = frozenset({"SECONDLY", "MINUTELY"})
# Bounds on what one event may cost (see ``_Expander._bound``). A series recurring more
# often than this a day is no meeting between two people (FREQ=HOURLY is 24).
MAX_PER_DAY = 4
MAX_PER_SERIES = 3000  # occurrences of one RRULE kept inside the window; the rest is cut
MAX_RDATES = 3000
MAX_INTERVAL = 1000
# A COUNT must be counted from DTSTART: no more recurrence steps than this before the window.
MAX_COUNT_STEPS = 200_000
# Thread CPU time per UID: bounding its rules (dateutil alone, milliseconds for any real
# rule; a rule that almost never matches is walked towards the year 9999 and stopped
# here), then expanding and reading the occurrences (3,000 of them take about 0.5 s).
RULE_CPU_SECONDS = 0.25
ITEM_CPU_SECONDS = 2.0
FILE_CPU_SECONDS = 10.0  # per file, plus FILE_CPU_SECONDS_PER_MB of its size
FILE_CPU_SECONDS_PER_MB = 4.0  # real calendars parse at well over 0.5 MB/s
MAX_ERRORS_PER_FILE = 100  # item errors kept (and logged) per file; the rest are counted
UID_IN_MESSAGES = 80  # characters of a UID quoted in an item error or a log line
FRAGMENT = 120  # characters of a parser's complaint (which may quote the file) kept
_RULE_PARTS = frozenset(
    {"FREQ", "INTERVAL", "COUNT", "UNTIL", "WKST", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY"}
    | {"BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS"}
)
_RULE_RANGES = {
    "BYSECOND": (0, 60),
    "BYMINUTE": (0, 59),
    "BYHOUR": (0, 23),
    "BYMONTHDAY": (-31, 31),
    "BYYEARDAY": (-366, 366),
    "BYWEEKNO": (-53, 53),
    "BYMONTH": (1, 12),
    "BYSETPOS": (-366, 366),
}
_WEEKDAY = re.compile(r"^([+-]?)(\d{0,2})(MO|TU|WE|TH|FR|SA|SU)$")
_FREQ_DAYS = {"HOURLY": 1 / 24, "DAILY": 1, "WEEKLY": 7, "MONTHLY": 28, "YEARLY": 365}
_EMAIL_STEM = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")
_MAILTO = re.compile(r"^\s*mailto:", re.IGNORECASE)
_RESPONSES = {
    "ACCEPTED": Response.ACCEPTED,
    "DECLINED": Response.DECLINED,
    "TENTATIVE": Response.TENTATIVE,
    "NEEDS-ACTION": Response.NEEDS_ACTION,
}
_STATUSES = {"CANCELLED": EventStatus.CANCELLED, "TENTATIVE": EventStatus.TENTATIVE}


class IcsParseError(ValueError):
    """The data is not iCalendar at all: the caller must keep what it stored before."""


# --------------------------------------------------------------------------------------
# Parsing and expansion: bytes in, records and per-item errors out. No I/O here, so the
# CalDAV connector can reuse it for the iCalendar bodies its server returns.


def records_from_ical(
    data: bytes,
    *,
    source_id: str,
    scope: str,
    window: Window,
    calendar_owner: str | None = None,
    default_zone: str = "UTC",
) -> tuple[list[EventRecord], list[ItemError]]:
    """Every occurrence of every VEVENT in ``data`` within ``window``.

    Raises :class:`IcsParseError` when ``data`` is not iCalendar at all; a bad event only
    costs that event (an :class:`ItemError` naming ``scope`` and its UID).
    """
    if not data.strip():
        # An empty file is more likely half-written than a calendar wiped on purpose.
        raise IcsParseError("the file is empty")
    data = _LONG_TZID.sub(b";TZID=X-INVALID-TZID", data)
    parsed = _Parsed.of(data)
    # Floating and all-day times belong to the calendar's zone, else the owner's.
    calendar_zone = next(
        (z for z in (known_zone(n) for n in parsed.zone_names if n) if z is not None), None
    ) or ZoneInfo(default_zone)
    expander = _Expander(
        source_id=source_id,
        scope=scope,
        window=window,
        owner=calendar_owner,
        zone=calendar_zone,
    )
    groups: dict[str, list[icalendar.Component]] = {}
    for event in parsed.events:
        groups.setdefault(_uid_of(event), []).append(event)
    budget = FILE_CPU_SECONDS + FILE_CPU_SECONDS_PER_MB * len(data) / 1_000_000
    deadline = clock.thread_time() + budget
    unread = 0
    for uid, group in groups.items():
        if clock.thread_time() > deadline:
            unread += 1
            continue
        expander.expand(uid, group, parsed.timezones, deadline=deadline)
    if unread:
        expander.note_file(f"{unread} events not read: the file used up its {budget:.0f} s of CPU")
    return list(expander.records.values()), expander.finish()


@dataclass(slots=True)
class _Parsed:
    """The parts of an iCalendar file the expander needs, from every VCALENDAR in it."""

    timezones: list[icalendar.Component] = field(default_factory=list)
    events: list[icalendar.Component] = field(default_factory=list)
    zone_names: list[str] = field(default_factory=list)  # each calendar's X-WR-TIMEZONE

    @classmethod
    def of(cls, data: bytes) -> _Parsed:
        import icalendar

        try:
            components = icalendar.Component.from_ical(data, multiple=True)
        except Exception as exc:  # third-party data: any parser failure means unparseable
            raise IcsParseError(f"cannot parse iCalendar data ({_complaint(exc)})") from exc
        parsed = cls()
        for top in components:
            if top.name == "VEVENT":  # a bare VEVENT file, as some tools export single events
                parsed.events.append(top)
            elif top.name == "VCALENDAR":
                parsed.zone_names.append(str(top.get("X-WR-TIMEZONE", "")).strip())
                for sub in top.subcomponents:
                    if sub.name == "VTIMEZONE":
                        parsed.timezones.append(sub)
                    elif sub.name == "VEVENT":
                        parsed.events.append(sub)
        if not any(c.name in ("VCALENDAR", "VEVENT") for c in components):
            raise IcsParseError("no VCALENDAR or VEVENT found")
        return parsed


class _Rejected(ValueError):
    """This event cannot be used; the message says why, for its item error."""


class _OverBudget(BaseException):
    """The event used up its CPU budget (raised from inside whatever was running).

    A BaseException, so that no ``except Exception`` on the way (ours, icalendar's)
    swallows it: CPython drops a trace hook that raised, so a swallowed one would leave
    the rest of the event without a budget."""


@contextmanager
def _cpu_budget(deadline: float) -> Iterator[None]:
    """Raise :class:`_OverBudget` in the code that runs past ``deadline`` (thread CPU time).

    dateutil can loop for seconds without yielding (a rule that no day satisfies is tried
    day by day up to the year 9999), so the check rides on the interpreter's call hook,
    not on our loop; it is this thread's only, and the previous hook comes back after.
    """
    previous = sys.gettrace()
    calls = 0

    def check(_frame: FrameType, _event: str, _arg: object) -> None:
        nonlocal calls
        calls += 1
        if calls % 64 == 0 and clock.thread_time() > deadline:
            raise _OverBudget

    sys.settrace(check)
    try:
        yield
    finally:
        sys.settrace(previous)


@contextmanager
def _unguarded(_deadline: float) -> Iterator[None]:
    """No CPU budget: for events without RRULE or RDATE, whose expansion costs less than
    their parsing did (unbudgeted too); the call hook of :func:`_cpu_budget` would cost
    more than that expansion (40 % of the CPU of a folder of single events)."""
    yield


def _complaint(exc: BaseException) -> str:
    """A parser's complaint, short and cleaned: it may quote the line it choked on."""
    return short_text(describe(exc, FRAGMENT), FRAGMENT)


# A TZID no zone has: zoneinfo answers a 10,000-character name with an OSError, which
# the parser does not catch (the whole file would be lost for one event's parameter).
_LONG_TZID = re.compile(rb';TZID=("[^"]{100,}"|[^:;"]{100,})', re.IGNORECASE)


def _uid_of(event: icalendar.Component) -> str:
    uid = str(event.get("UID", "")).strip()
    if uid:
        return uid
    # No UID (RFC 5545 requires one): derive a stable one so the event still counts.
    try:
        raw = event.to_ical()
    except Exception:  # a component too broken to serialise still needs an id
        raw = repr(sorted(event.keys())).encode()
    return "no-uid-" + hashlib.sha256(raw).hexdigest()[:16]


class _Expander:
    """Expands one UID at a time, so one bad series cannot take the file down."""

    def __init__(
        self,
        *,
        source_id: str,
        scope: str,
        window: Window,
        owner: str | None,
        zone: ZoneInfo,
    ) -> None:
        self.source_id = source_id
        self.scope = scope
        self.window = window
        self.owner = owner
        self.zone = zone
        self.records: dict[str, EventRecord] = {}
        self.errors: list[ItemError] = []
        self.unreported = 0
        self._shared: dict[int, tuple[object, object]] = {}

    def reject(self, uid: str, message: str) -> None:
        """An item error naming the file and (a short, cleaned fragment of) the UID."""
        self._error(f"{self.scope}: UID {short_text(uid, UID_IN_MESSAGES)}", message)

    def note_file(self, message: str) -> None:
        self._error(self.scope, message)

    def _error(self, item: str, message: str) -> None:
        if len(self.errors) >= MAX_ERRORS_PER_FILE:
            self.unreported += 1  # a file of a million bad events is one line, not a million
            return
        message = short_text(message, 300)
        log.warning("ics_item_rejected", source=self.source_id, item=item, error=message)
        self.errors.append(ItemError(item=item, message=message))

    def finish(self) -> list[ItemError]:
        if self.unreported:
            message = f"{self.unreported} more events rejected (only the first are listed)"
            log.warning("ics_item_rejected", source=self.source_id, item=self.scope, error=message)
            self.errors.append(ItemError(item=self.scope, message=message))
            self.unreported = 0
        return self.errors

    def expand(
        self,
        uid: str,
        group: list[icalendar.Component],
        timezones: list[icalendar.Component],
        *,
        deadline: float = float("inf"),
    ) -> None:
        """Every occurrence of one UID in the window, within ``ITEM_CPU_SECONDS``."""
        if len(group) > MAX_PER_SERIES:  # overrides (RECURRENCE-ID) count like occurrences
            self.reject(uid, f"{len(group)} VEVENTs share this UID (at most {MAX_PER_SERIES})")
            return
        usable = [event for event in group if self._usable(uid, event)]
        if not usable:
            return
        for component in (*timezones, *usable):
            if "UID" not in component:
                component["UID"] = uid
        expanded = self._expanded(uid, usable, (*timezones, *usable), deadline)
        if expanded is None:
            return
        records, cuts = expanded
        for cut in cuts:
            self.reject(uid, cut)
        for record in records:
            self._keep(record)

    def _usable(self, uid: str, event: icalendar.Component) -> bool:
        """Whether ``event`` can be expanded; rejected with its reason when not."""
        try:
            problem = self._problem(event)
        except Exception as exc:  # icalendar raises on access to broken properties
            problem = f"unreadable event ({_complaint(exc)})"
        if problem:
            self.reject(uid, problem)
        return not problem

    def _expanded(
        self,
        uid: str,
        usable: list[icalendar.Component],
        calendar: tuple[icalendar.Component, ...],
        deadline: float,
    ) -> tuple[list[EventRecord], list[str]] | None:
        """The records of one UID and the notes on rules cut short; None once rejected."""
        is_series = any("RRULE" in e or "RDATE" in e or "RECURRENCE-ID" in e for e in usable)
        cuts: list[str] = []
        self._shared = {}
        events = [c for top in calendar for c in top.walk("VEVENT")]
        # Only rules can run away; without one, expanding costs less than parsing did.
        guard = _cpu_budget if any("RRULE" in e or "RDATE" in e for e in events) else _unguarded
        budget = RULE_CPU_SECONDS
        try:
            with guard(min(deadline, clock.thread_time() + budget)):
                for event in usable:
                    cuts += self._bound(event)
            budget = ITEM_CPU_SECONDS
            with guard(min(deadline, clock.thread_time() + budget)):
                occurrences = _occurrences(events, self.window)
                records = [self._record(uid, o, is_series=is_series) for o in occurrences]
        except _Rejected as exc:
            self.reject(uid, str(exc))
            return None
        except _OverBudget:
            self.reject(uid, f"expanding it took more than {budget} s of CPU; skipped")
            return None
        except Exception as exc:  # expansion of third-party rules: reject this UID only
            self.reject(uid, f"cannot expand the event ({_complaint(exc)})")
            return None
        finally:
            self._shared = {}
        return records, cuts

    # -- recurrence bounds ----------------------------------------------------------------

    def _bound(self, event: icalendar.Component) -> list[str]:
        """Rewrite ``event``'s RRULEs so expanding them costs what the window holds.

        dateutil walks a rule from DTSTART, one period at a time, and the library collects
        every occurrence before we see one. So: a COUNT becomes the UNTIL of its last
        occurrence, UNTIL is capped just past the window, DTSTART moves forward by whole
        periods to just before the window (the same occurrences, without the walk from
        the year 1), and a series is cut after ``MAX_PER_SERIES`` occurrences (returned
        as a note for an item error). The occurrences inside the window do not change.
        """
        rules = _listed(event.get("RRULE"))
        if not rules:
            return []
        start, _tzid = _date_property(event, "DTSTART")
        duration = self._duration(event, start)
        # Bounds in the terms DTSTART is in (date, floating or aware), with a margin for
        # zones and for occurrences that start before the window and reach into it.
        lowest = self._like(start, self.window.start - duration - timedelta(days=2))
        highest = self._like(start, self.window.end + timedelta(days=2))
        parsed = [_RuleParts.of(rule, start) for rule in rules]
        for parts in parsed:
            if parts.count is not None:
                parts.until = parts.count_end(start, highest)
            parts.until = highest if parts.until is None else min(parts.until, highest)
        if len(parsed) == 1:  # several RRULEs (deprecated) could not share one new DTSTART
            moved = _rebased(start, parsed[0].freq, parsed[0].interval, lowest)
            if moved != start:
                self._move(event, start, moved)
                start = moved
        cuts: list[str] = []
        for parts in parsed:
            cut = parts.cap(start, lowest, MAX_PER_SERIES)
            if cut is not None:
                parts.until = cut
                cuts.append(
                    f"RRULE has more than {MAX_PER_SERIES} occurrences in the sync window; "
                    "only the first are kept"
                )
        rewritten = [parts.recur() for parts in parsed]
        event["RRULE"] = rewritten[0] if len(rewritten) == 1 else rewritten
        return cuts

    def _duration(self, event: icalendar.Component, start: date) -> timedelta:
        try:
            end = self._end(event, start, self._instant(start, None), all_day=False)
            return max(end - self._instant(start, None), timedelta(0))
        except Exception:  # a broken end fails later, with its own message
            return timedelta(0)

    def _like(self, start: date, moment: datetime) -> date:
        """``moment`` (aware) as the kind of value ``start`` is: a date, floating or aware."""
        if not isinstance(start, datetime):
            return moment.astimezone(self.zone).date()
        if start.tzinfo is None:
            return moment.astimezone(self.zone).replace(tzinfo=None)
        return moment.astimezone(UTC)

    @staticmethod
    def _move(event: icalendar.Component, start: date, moved: date) -> None:
        """DTSTART (and DTEND with it) moved by whole periods of the rule."""
        shift = moved - start
        start_prop: Any = event["DTSTART"]
        start_prop.dt = moved
        if "DTEND" in event:
            prop: Any = event["DTEND"]
            for end_prop in prop if isinstance(prop, list) else [prop]:
                end_prop.dt = end_prop.dt + shift

    def _problem(self, event: icalendar.Component) -> str | None:
        """Why this VEVENT cannot be used, checked before expansion to name the cause."""
        problem = _start_problem(event) or _recurrence_problem(event)
        if problem is None and "SEQUENCE" in event and not isinstance(event["SEQUENCE"], int):
            del event["SEQUENCE"]  # out of range or not a number: it only orders revisions
        return problem

    def _keep(self, record: EventRecord) -> None:
        """Duplicate UIDs in one file: the newest revision wins, as a client would show."""
        held = self.records.get(record.provider_id)
        if held is None or (record.sequence, record.updated or _EPOCH) >= (
            held.sequence,
            held.updated or _EPOCH,
        ):
            self.records[record.provider_id] = record

    def _instant(self, value: date, tzid: object) -> datetime:
        """An iCalendar DATE or DATE-TIME as aware UTC; dates and floating times in our zone."""
        if not isinstance(value, datetime):
            return datetime.combine(value, time(), self.zone).astimezone(UTC)
        if value.tzinfo is None:
            zone = known_zone(str(tzid)) if tzid else None
            if tzid and zone is None:
                raise ValueError(f"unknown time zone {tzid!r}")
            return value.replace(tzinfo=zone or self.zone).astimezone(UTC)
        return value.astimezone(UTC)

    def _zone_name(self, start: date, tzid: object) -> str | None:
        if not isinstance(start, datetime) or start.tzinfo is None:
            if tzid and known_zone(str(tzid)) is not None:
                return str(tzid)
            return self.zone.key  # floating and all-day: the zone we read them in
        return _iana_name(start.tzinfo, tzid, start)

    def _record(self, uid: str, event: icalendar.Component, *, is_series: bool) -> EventRecord:
        start_value, tzid = _date_property(event, "DTSTART")
        all_day = not isinstance(start_value, datetime)
        start = self._instant(start_value, tzid)
        end = self._end(event, start_value, start, all_day=all_day)

        original: datetime | None = None
        key = ""
        if is_series:
            rid = event.get("RECURRENCE-ID")
            original = self._instant(rid.dt, rid.params.get("TZID")) if rid is not None else start
            key = original.isoformat()
        return EventRecord(
            source_id=self.source_id,
            provider_id=f"{self.scope}#{uid}#{key}",
            ical_uid=uid,
            start=start,
            end=end,
            series_id=uid if is_series else None,
            original_start=original,
            all_day=all_day,
            zone=self._zone_name(start_value, tzid),
            status=_STATUSES.get(str(event.get("STATUS", "")).strip().upper(), _CONFIRMED),
            organizer=_email(event.get("ORGANIZER")),
            attendees=self._once(event.get("ATTENDEE"), _attendees),
            calendar_owner=self.owner,
            categories=self._once(event.get("CATEGORIES"), _categories),
            conference_id=_conference(event),
            title=str(event["SUMMARY"]) if "SUMMARY" in event else None,
            updated=_updated(event),
            sequence=_sequence(event.get("SEQUENCE")),
        )

    def _once(self, value: object, read: Callable[[object], _T]) -> _T:
        """``read(value)`` once per series: occurrences are shallow copies sharing ``value``,
        and a thousand attendees times three thousand occurrences must not be 3M objects."""
        if value is None:
            return read(value)
        held = self._shared.get(id(value))
        if held is not None and held[0] is value:
            return held[1]  # type: ignore[return-value]  # stored by this very call
        result = read(value)
        self._shared[id(value)] = (value, result)
        return result

    def _end(
        self, event: icalendar.Component, start_value: date, start: datetime, *, all_day: bool
    ) -> datetime:
        """DTEND, else DTSTART + DURATION, else RFC 5545's default (a day, or nothing)."""
        if "DTEND" in event:
            end = self._instant(*_date_property(event, "DTEND"))
        elif "DURATION" in event:
            duration_prop: Any = event["DURATION"]
            duration = duration_prop.dt
            if not isinstance(duration, timedelta):
                raise TypeError(f"DURATION is not a duration: {duration!r}")
            end = self._instant(start_value + duration, None) if all_day else start + duration
        else:
            end = self._instant(start_value + timedelta(days=1), None) if all_day else start
        return max(end, start)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _date_property(event: icalendar.Component, name: str) -> tuple[date, object]:
    """A DATE or DATE-TIME property's value and its TZID parameter."""
    prop: Any = event[name]
    if isinstance(prop, list):  # a repeated property: RFC 5545 allows one, take the first
        prop = prop[0]
    value = prop.dt
    if not isinstance(value, date):
        raise TypeError(f"{name} is not a date or date-time: {value!r}")
    return value, prop.params.get("TZID")


_CONFIRMED = EventStatus.CONFIRMED


def _start_problem(event: icalendar.Component) -> str | None:
    """A DTSTART that is missing, repeated, unreadable, or in a zone nobody knows."""
    if "DTSTART" not in event:
        return "no DTSTART"
    if isinstance(event["DTSTART"], list):
        return f"DTSTART given {len(event['DTSTART'])} times"
    try:
        start = event.decoded("DTSTART")
    except Exception as exc:  # icalendar raises various types on bad values
        return f"bad DTSTART ({_complaint(exc)})"
    if not isinstance(start, date):
        return f"bad DTSTART value {str(event.get('DTSTART'))[:40]!r}"
    if isinstance(start, datetime) and start.tzinfo is None:
        tzid = event["DTSTART"].params.get("TZID")
        if tzid and known_zone(str(tzid)) is None:
            return f"unknown time zone {tzid!r} in DTSTART"
    return None


def _recurrence_problem(event: icalendar.Component) -> str | None:
    """RRULEs and RDATEs no meeting series has: too dense, too many, nonsense parts."""
    per_day = 0
    for rule in _listed(event.get("RRULE")):
        freqs = {str(f).upper() for f in rule.get("FREQ", [])}
        if freqs & _REJECTED_FREQS:
            return f"RRULE frequency {', '.join(sorted(freqs))} is too dense for a meeting"
        problem, daily = _rule_problem(rule)
        if problem:
            return problem
        per_day += daily
    if per_day > MAX_PER_DAY:
        return (
            f"RRULE recurs up to {per_day} times a day; a meeting series does not "
            f"(at most {MAX_PER_DAY})"
        )
    rdates = [d.dt for p in _listed(event.get("RDATE")) for d in getattr(p, "dts", ())]
    if len(rdates) > MAX_RDATES:
        return f"RDATE lists {len(rdates)} dates (at most {MAX_RDATES})"
    days = Counter(d[0] if isinstance(d, tuple) else d for d in rdates)
    busiest = max(Counter(_day_of(d) for d in days).values(), default=0)
    if busiest > MAX_PER_DAY:
        return f"RDATE lists {busiest} times on one day; a meeting series does not"
    return None


def _rule_problem(rule: Any) -> tuple[str | None, int]:
    """Why an RRULE is nonsense (``INTERVAL=0``, ``BYHOUR=99``…), and its most occurrences
    on one day; nothing is expanded for that."""
    freqs = [str(f).upper() for f in rule.get("FREQ", [])]
    if not freqs:
        return "RRULE without FREQ", 0
    problem = _scale_problem(rule, freqs[0]) or _count_problem(rule)
    if problem:
        return problem, 0
    problem, sizes = _part_sizes(rule)
    if problem or (problem := _weekday_problem(rule)):
        return problem, 0
    per_hour = max(sizes["BYMINUTE"], 1) * max(sizes["BYSECOND"], 1)
    hours = sizes["BYHOUR"] or 1
    if freqs[0] == "HOURLY":
        hours = min(-(-24 // rule.get("INTERVAL", [1])[0]), sizes["BYHOUR"] or 24)
    return None, hours * per_hour


def _scale_problem(rule: Any, freq: str) -> str | None:
    if freq not in _FREQ_DAYS:
        return f"RRULE frequency {short_text(freq, 20)!r} is not supported"
    for scale in rule.get("RSCALE", []):
        if str(scale).upper() != "GREGORIAN":
            return f"RRULE calendar scale {short_text(str(scale), 20)} is not supported"
    return None


def _count_problem(rule: Any) -> str | None:
    """INTERVAL and COUNT: one number each, an interval in range, a count above zero."""
    for key in ("INTERVAL", "COUNT"):
        numbers = rule.get(key, [])
        if len(numbers) > 1 or any(not isinstance(v, int) for v in numbers):
            return f"RRULE {key} is not one number"
    interval = rule.get("INTERVAL", [1])[0]
    if not 1 <= interval <= MAX_INTERVAL:
        return f"RRULE INTERVAL={interval} is not between 1 and {MAX_INTERVAL}"
    if rule.get("COUNT", [1])[0] == 0:
        return "RRULE COUNT=0 has no occurrence"
    return None


def _part_sizes(rule: Any) -> tuple[str | None, dict[str, int]]:
    """How many distinct values each BY… number part holds, or why one is out of range."""
    sizes: dict[str, int] = {}
    for key, (low, high) in _RULE_RANGES.items():
        values: set[int] = set()
        for value in rule.get(key, []):
            try:
                number = int(str(value))
            except ValueError:
                return f"RRULE {key} value {short_text(str(value), 20)!r} is not a number", {}
            if not low <= number <= high or (number == 0 and low < 0):
                return f"RRULE {key}={number} is out of range", {}
            values.add(number)
        sizes[key] = len(values)
    return None, sizes


def _weekday_problem(rule: Any) -> str | None:
    for day in rule.get("BYDAY", []):
        match = _WEEKDAY.match(str(day).upper())
        if match is None or (match[2] and not 1 <= int(match[2]) <= 53):
            return f"RRULE BYDAY value {short_text(str(day), 20)!r} is not a weekday"
    return None


class _RuleParts:
    """One RRULE as its parts, rewritten by :meth:`_Expander._bound`."""

    def __init__(self, parts: dict[str, list[Any]], until: date | None, count: int | None):
        self.parts = parts
        self.until = until
        self.count = count

    @classmethod
    def of(cls, rule: Any, start: date) -> _RuleParts:
        # Parts dateutil does not know are dropped: RSCALE=GREGORIAN and SKIP (its
        # default, OMIT, is dateutil's), X- extensions; a negative COUNT means none, as
        # recurring-ical-events reads it.
        parts = {k: list(v) for k, v in rule.items() if k in _RULE_PARTS}
        counts = [c for c in parts.pop("COUNT", []) if c > 0]
        untils = parts.pop("UNTIL", [])
        until = _until_like(start, untils[0]) if untils else None
        return cls(parts, until, counts[0] if counts else None)

    @property
    def freq(self) -> str:
        return str(self.parts["FREQ"][0]).upper()

    @property
    def interval(self) -> int:
        return int(self.parts.get("INTERVAL", [1])[0])

    def recur_text(self) -> str:
        import icalendar

        recur: Any = icalendar.vRecur(self.parts)  # untyped to_ical
        return str(recur.to_ical().decode())

    def recur(self) -> icalendar.vRecur:
        import icalendar

        recur = icalendar.vRecur(self.parts)
        if self.until is not None:
            recur["UNTIL"] = [self.until]
        return recur

    def _dateutil(self, start: date, until: date, count: int | None = None) -> Iterator[datetime]:
        from dateutil.rrule import rrule, rrulestr

        text = self.recur_text()
        parsed = rrulestr(text, dtstart=_as_datetime(start))
        if not isinstance(parsed, rrule):  # one RRULE's parts never make a set
            raise _Rejected("RRULE is not one rule")
        with warnings.catch_warnings():  # COUNT with UNTIL: dateutil frowns but obeys both
            warnings.simplefilter("ignore", DeprecationWarning)
            return iter(parsed.replace(until=_as_datetime(until), count=count))

    def count_end(self, start: date, highest: date) -> date:
        """The last occurrence the COUNT allows, or ``highest`` if that is later."""
        assert self.count is not None
        steps = (_as_datetime(highest) - _as_datetime(start)).days / _FREQ_DAYS[self.freq]
        if steps / self.interval > MAX_COUNT_STEPS:
            raise _Rejected(
                f"RRULE with COUNT starts {int(steps / self.interval)} {self.freq.lower()} "
                f"steps before the sync window; counting them is refused (at most "
                f"{MAX_COUNT_STEPS})"
            )
        last: datetime | None = None
        seen = 0  # the occurrences up to ``last``: all the rule has when fewer than COUNT
        until = highest if self.until is None else min(self.until, highest)
        for seen, last in enumerate(self._dateutil(start, until, self.count), 1):  # noqa: B007
            pass
        if last is None or seen < self.count:
            return until
        return _until_like(start, last)

    def cap(self, start: date, lowest: date, limit: int) -> date | None:
        """The occurrence after which the series is cut, or None if it stays whole."""
        assert self.until is not None
        seen = 0
        floor = _as_datetime(lowest)
        moments = self._dateutil(start, self.until)
        for moment in moments:
            if moment >= floor:
                seen += 1
                if seen == limit:  # cut only when another one follows
                    return None if next(moments, None) is None else _until_like(start, moment)
        return None


def _day_of(value: object) -> object:
    return value.date() if isinstance(value, datetime) else value


def _as_datetime(value: date) -> datetime:
    """A date as its midnight (how dateutil and recurring-ical-events compute them)."""
    return value if isinstance(value, datetime) else datetime.combine(value, time())


def _until_like(start: date, until: date) -> date:
    """UNTIL in the terms of DTSTART, as recurring-ical-events reads a mismatched one."""
    if not isinstance(start, datetime):
        return until.date() if isinstance(until, datetime) else until
    until = _as_datetime(until)
    if start.tzinfo is None:
        return until.astimezone(UTC).replace(tzinfo=None) if until.tzinfo else until
    return until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)


def _rebased(start: date, freq: str, interval: int, target: date) -> date:
    """The latest DTSTART not after ``target`` that ``start`` reaches in whole periods.

    Moving by whole periods (days for HOURLY, DAILY and WEEKLY, months for MONTHLY and
    YEARLY) keeps the phase of INTERVAL, the weekday, the day of the month and the time
    of day, so the rule yields the same occurrences from there on.
    """
    if _as_datetime(start) >= _as_datetime(target):
        return start
    if freq in ("HOURLY", "DAILY", "WEEKLY"):
        step = interval * (7 if freq == "WEEKLY" else 1)  # days; HOURLY: interval·24 hours
        days = (
            _as_datetime(target).replace(tzinfo=None) - _as_datetime(start).replace(tzinfo=None)
        ).days
        return start + timedelta(days=days // step * step)
    step = interval * (12 if freq == "YEARLY" else 1)  # months
    periods = ((target.year - start.year) * 12 + target.month - start.month) // step
    for _ in range(48):  # the 31st or the 29th of February: find a month that has it
        months = start.month - 1 + periods * step
        try:
            moved = start.replace(year=start.year + months // 12, month=months % 12 + 1)
        except ValueError:
            periods -= 1
            continue
        if _as_datetime(moved) <= _as_datetime(target):
            return moved
        periods -= 1
    return start


def _iana_name(zone: tzinfo, tzid: object, at: datetime) -> str | None:
    """The IANA name of an aware DTSTART's zone; None for a custom VTIMEZONE we cannot place.

    Exporters name zones their own way: Windows names (``Pacific Standard Time``, or
    Outlook's display names, mapped by :mod:`~mentorpulse.connectors.zones`) and prefixed
    IANA names (``custom_America/New_York``, ``/citadel.org/.../Europe/Berlin``).
    Such a guess is used only when its UTC offset at ``at`` agrees with the VTIMEZONE's.
    """
    key = getattr(zone, "key", None)
    if isinstance(key, str) and known_zone(key) is not None:
        return _canonical(key)
    if zone is UTC:
        return "UTC"
    if not tzid:
        return None
    name = str(tzid)
    if known_zone(name) is not None:
        return _canonical(name)
    guess = zones.lookup(name) or next(
        (
            candidate
            for candidate in _iana_names()
            if name.endswith(candidate) and not name[: -len(candidate)][-1:].isalnum()
        ),
        None,
    )
    if guess is None or known_zone(guess) is None:
        return None
    wall = at.replace(tzinfo=None)
    return guess if ZoneInfo(guess).utcoffset(wall) == zone.utcoffset(wall) else None


def _canonical(name: str) -> str:
    """``posix/Europe/Vaduz`` (a tzdata file path, not a zone name) → ``Europe/Vaduz``."""
    for prefix in ("posix/", "right/"):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


@functools.cache
def _iana_names() -> tuple[str, ...]:
    """Region/City IANA names, longest first, so the most specific suffix wins."""
    return tuple(sorted((n for n in available_timezones() if "/" in n), key=len, reverse=True))


def _listed(value: object) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _email(value: object) -> str | None:
    if value is None:
        return None
    email = _MAILTO.sub("", str(value)).strip().lower()
    return email or None


# RFC 5545 CUTYPE values that are things, not people: a booked room is no participant.
_RESOURCE_TYPES = frozenset({"ROOM", "RESOURCE"})


def _attendees(value: object) -> tuple[Attendee, ...]:
    found: dict[str, Attendee] = {}
    for item in _listed(value):
        email = _email(item)
        if not email or email in found:
            continue
        params = getattr(item, "params", {})
        response = _RESPONSES.get(str(params.get("PARTSTAT", "")).upper(), Response.NEEDS_ACTION)
        optional = str(params.get("ROLE", "")).upper() == "OPT-PARTICIPANT"
        resource = str(params.get("CUTYPE", "")).upper() in _RESOURCE_TYPES
        found[email] = Attendee(
            email=email, response=response, optional=optional, is_resource=resource
        )
    return tuple(found.values())


def _categories(value: object) -> tuple[str, ...]:
    names: list[str] = []
    for item in _listed(value):
        parts = getattr(item, "cats", None)
        for part in parts if parts is not None else str(item).split(","):
            name = str(part).strip()
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _conference(event: icalendar.Component) -> str | None:
    for name in ("X-GOOGLE-CONFERENCE", "CONFERENCE"):
        for item in _listed(event.get(name)):
            text = str(item).strip()
            if text:
                return text
    return None


def _updated(event: icalendar.Component) -> datetime | None:
    for name in ("LAST-MODIFIED", "DTSTAMP"):
        try:
            value = event.decoded(name) if name in event else None
        except Exception as exc:  # unreadable: try the next, it is only a hint
            log.debug("ics_bad_timestamp", property=name, error=describe(exc))
            value = None
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(), UTC)
    return None


def _sequence(value: object) -> int:
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0


def _occurrences(events: Iterable[icalendar.Component], window: Window) -> list[Any]:
    """``recurring_ical_events.of(cal).between(window)`` for a calendar whose walk gives
    these VEVENTs, without building that calendar: the same series, occurrences and order
    (the calendar has no X-WR-TIMEZONE, which is all ``of`` would correct).

    Building a Calendar and walking it cost a third of the expansion of a single event.
    """
    import recurring_ical_events

    series_of: dict[str, list[Any]] = {}
    for component in events:
        adapter = recurring_ical_events.EventAdapter(component)
        series_of.setdefault(adapter.uid, []).append(adapter)
    series = [recurring_ical_events.Series(adapters) for adapters in series_of.values()]
    found = [o for one in series for o in one.between(window.start, window.end)]
    return [occurrence.as_component(False) for occurrence in found]


# A folder's cursor is stored with a group once this many files were read since the last
# stored one, and at least an eighth of the files it names (a crash re-reads at most that).
CHECKPOINT_FILES = 50
CHECKPOINT_SHARE = 8

# --------------------------------------------------------------------------------------
# The connector: files and feeds, hashes and cursors.


def _owner_from_name(path: Path) -> str | None:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return stem.lower() if _EMAIL_STEM.match(stem) else None


class IcsConnector:
    """Reads an :class:`IcsSource`; see the module docstring for the cursor's contract."""

    def __init__(
        self,
        source: IcsSource,
        *,
        base_dir: Path,
        now: datetime,
        default_zone: str = "UTC",
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if known_zone(default_zone) is None:
            raise ValueError(f"unknown time zone {default_zone!r}")
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.now = now.astimezone(UTC)
        self.default_zone = default_zone
        self.window = Window.around(now, source.window_past, source.window_future)
        # One copy of the stamp's texts for every file's entry (16,000 files: 2 MB less).
        self._stamp = self.window.stamp()

    # -- cursor -------------------------------------------------------------------------

    def _entries(self, cursor: Mapping[str, object] | None) -> dict[str, dict[str, object]]:
        return cursor_entries(cursor, CURSOR_VERSION, "files")

    def _cursor(self, entries: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
        """A JSON-serialisable snapshot: the caller stores it with the page.

        The entries themselves are shared, not copied: a file's entry is replaced when
        the file is read again, never changed in place (a copy of each was 3 MB of a
        large folder's checkpoint)."""
        return {
            "version": CURSOR_VERSION,
            **self._stamp,
            "files": dict(sorted(entries.items())),
        }

    def _entry(self, digest: str, **extra: object) -> dict[str, object]:
        return {
            "sha256": digest,
            **self._stamp,
            **{k: v for k, v in extra.items() if v is not None},
        }

    def _unchanged(self, entry: Mapping[str, object] | None, digest: str) -> bool:
        return entry is not None and entry.get("sha256") == digest and self.window.matches(entry)

    # -- sync ---------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """Pages of new, changed or vanished files, grouped; nothing when nothing changed."""
        entries = self._entries(cursor)
        if self.source.url is not None:
            yield from self._sync_url(self.source.url, entries)
        else:
            assert self.source.path is not None  # the schema demands path or url
            yield from self._grouped(self._sync_path(Path(self.source.path), entries), entries)

    def _grouped(
        self, files: Iterator[_FilePage], entries: dict[str, dict[str, object]]
    ) -> Iterator[SyncPage]:
        """Files' pages grouped into pages sized by work (see :class:`PageGroup`), each
        with the cursor of the files it holds and those before it.

        A file's entry enters the cursor only when its page joins a group, so the cursor
        of a group never names a file of the next one: a crash between groups resumes
        after the last stored cursor, and a file read again replaces its scope. The cursor
        names every file, so a group carries it only once the files read since the last
        one are at least :data:`CHECKPOINT_FILES` and an eighth of the cursor: the bytes
        written grow with the folder, not with its square (the last group always has it).
        """
        group, since_cursor = PageGroup(), 0
        for file in files:
            if not group.fits(file.page):
                due = since_cursor >= max(CHECKPOINT_FILES, len(entries) // CHECKPOINT_SHARE)
                yield group.page(cursor=self._cursor(entries) if due else None)
                since_cursor = 0 if due else since_cursor
            group.add(file.page)
            since_cursor += 1
            if file.gone:
                entries.pop(file.scope, None)
            elif file.entry is not None:
                entries[file.scope] = file.entry
        if group:
            yield group.page(cursor=self._cursor(entries))

    def _sync_path(self, configured: Path, entries: Mapping[str, object]) -> Iterator[_FilePage]:
        root = configured if configured.is_absolute() else self.base_dir / configured
        inside: Path | None = None  # files of a folder must stay in it, links or not
        if root.is_dir():
            inside = root.resolve()
            files = {path.relative_to(root).as_posix(): path for path in self._ics_files(root)}
        elif root.is_file():
            files = {root.name: root}
        else:
            # A missing root is an unmounted share more often than a deleted calendar.
            raise TransientError(self.source_id, f"{root} does not exist")

        for scope in sorted(set(files) | set(entries)):
            path = files.get(scope)
            if path is None:
                log.info("ics_file_gone", source=self.source_id, scope=scope)
                yield _FilePage(SyncPage(replaces_scopes=(scope,)), scope=scope, gone=True)
                continue
            try:
                data = self._read(path, inside)
            except _Unread as unread:
                yield _FilePage(self._unreadable(scope, str(unread)), scope=scope)
                continue
            owner = _owner_from_name(path) or self.source.owner
            found = self._page(scope, data, owner, entries.get(scope))
            if found is not None:
                yield _FilePage(*found, scope=scope)

    def _read(self, path: Path, inside: Path | None) -> bytes:
        """The bytes of a regular file of at most ``max_bytes``, and, for a folder, one
        that really lies in it: a link out of the folder is refused, not read."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise _Unread(f"cannot read the file ({type(exc).__name__})") from None
        if inside is not None and not real.is_relative_to(inside):
            raise _Unread("the file is a link to outside the folder; it is not read")
        limit = self.source.max_bytes
        try:
            # O_NONBLOCK: a FIFO named *.ics must not block the sync; O_NOFOLLOW: the
            # resolved path is what was checked.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise _Unread("not a regular file; it is not read")
                # read(n) allocates n bytes before reading: ask for the file's size (one
                # more, to see it grew), not for max_bytes (50 MB per file by default).
                wanted = min(limit, info.st_size) + 1
                data = file.read(wanted)
                if len(data) == wanted <= limit:  # it grew since fstat: read on, to the limit
                    data += file.read(limit + 1 - wanted)
        except OSError as exc:
            raise _Unread(f"cannot read the file ({type(exc).__name__})") from None
        if len(data) > limit:
            raise _Unread(
                f"the file is larger than the limit of {limit:,} bytes (max_bytes); "
                "raise max_bytes for this source if the calendar is really that large"
            )
        return data

    @staticmethod
    def _ics_files(root: Path) -> Iterable[Path]:
        """Every ``*.ics`` below ``root``; hidden names are editors' and sync tools' temp files.

        Linked folders are not descended into; links, pipes and devices are listed, so
        that :meth:`_read` reports them: read only when they lead to a regular file
        inside ``root``.
        """
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if path.suffix.lower() != ".ics" or any(p.startswith(".") for p in relative.parts):
                continue
            if path.is_symlink() or not path.is_dir():
                yield path

    def _page(
        self,
        scope: str,
        data: bytes,
        owner: str | None,
        entry: object,
        **validators: object,
    ) -> tuple[SyncPage, dict[str, object] | None] | None:
        """The file's page and its new cursor entry (``None``: unreadable, the old entry
        stays); ``None`` when the file is unchanged since ``entry``."""
        digest = hashlib.sha256(data).hexdigest()
        if isinstance(entry, Mapping) and self._unchanged(entry, digest):
            return None
        try:
            records, errors = records_from_ical(
                data,
                source_id=self.source_id,
                scope=scope,
                window=self.window,
                calendar_owner=owner,
                default_zone=self.default_zone,
            )
        except IcsParseError as exc:
            return self._unreadable(scope, str(exc)), None
        except Exception as exc:  # a bug of ours or the library's: one file, not the sync
            log.error(
                "ics_file_failed",
                source=self.source_id,
                item=scope,
                error=unexpected_summary(exc, "reading a file"),
                trace=code_trace(exc),
            )
            return self._unreadable(scope, f"unexpected error ({describe(exc)})"), None
        log.info(
            "ics_file_read",
            source=self.source_id,
            scope=scope,
            records=len(records),
            errors=len(errors),
        )
        page = SyncPage(records=tuple(records), replaces_scopes=(scope,), errors=tuple(errors))
        return page, self._entry(digest, **validators)

    def _unreadable(self, scope: str, message: str) -> SyncPage:
        """A page that reports ``scope`` but neither replaces it nor advances its entry.

        Pages come without a cursor: the caller adds one where it is stored."""
        log.warning("ics_item_rejected", source=self.source_id, item=scope, error=message)
        return SyncPage(errors=(ItemError(item=scope, message=message),))

    # -- http feeds ---------------------------------------------------------------------

    def _sync_url(self, url: str, entries: dict[str, dict[str, object]]) -> Iterator[SyncPage]:
        from mentorpulse.connectors.http import safe_url  # httpx only for feeds

        scope = safe_url(url)
        entry = entries.get(scope)
        headers: dict[str, str] = {"Accept": "text/calendar, */*;q=0.5"}
        # A 304 is only useful when the window is the one the stored records were cut to.
        if entry is not None and self.window.matches(entry):
            if isinstance(etag := entry.get("etag"), str):
                headers["If-None-Match"] = etag
            if isinstance(modified := entry.get("last_modified"), str):
                headers["If-Modified-Since"] = modified
        response = self._fetch(url, scope, headers)

        # The feed's URL changed in the config: what the old one gave is gone.
        for stale in sorted(set(entries) - {scope}):
            del entries[stale]
            yield SyncPage(cursor=self._cursor(entries), replaces_scopes=(stale,))
        if response.status == 304:
            log.info("ics_feed_not_modified", source=self.source_id, url=scope)
            return
        if not _looks_like_icalendar(response.content):
            # A login page, an error document, or whatever answers at that address: the
            # message describes it and never quotes it (it may hold anything).
            yield self._unreadable(
                scope,
                f"the feed did not send iCalendar data ({_content_type(response)}, "
                f"{len(response.content):,} bytes); check the feed URL",
            )
            return
        found = self._page(
            scope,
            response.content,
            self.source.owner,
            entry,
            etag=_header_value(response.headers.get("ETag")),
            last_modified=_header_value(response.headers.get("Last-Modified")),
        )
        if found is not None:
            page, new_entry = found
            if new_entry is not None:
                entries[scope] = new_entry
            yield replace(page, cursor=self._cursor(entries))

    def _fetch(self, url: str, scope: str, headers: dict[str, str]) -> Fetched:
        """GET the feed within the source's deadline and size cap, every hop's address
        checked; every failure becomes the typed error the scheduler acts on."""
        from mentorpulse.connectors.http import (
            BoundedClient,
            FetchError,
            FetchTimeout,
            Refused,
            TooLarge,
        )

        client = BoundedClient(
            url,
            timeout=self.source.timeout.total_seconds(),
            max_bytes=self.source.max_bytes,
        )
        try:
            with client:
                response = client.get(url, headers=headers)
        except FetchTimeout as exc:
            raise TransientError(
                self.source_id,
                f"{exc}; raise timeout (now {format_duration(self.source.timeout)}) for this "
                "source if the server is only slow",
            ) from None
        except TooLarge as exc:
            raise TransientError(
                self.source_id,
                f"{exc}; raise max_bytes for this source if the calendar is really that large",
            ) from None
        except Refused as exc:
            raise TransientError(self.source_id, f"{exc}; check the feed URL") from None
        except FetchError as exc:
            raise TransientError(self.source_id, str(exc)) from None

        status = response.status
        error = status_error(
            self.source_id,
            status,
            f"{scope} answered HTTP {status}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After"), self.now),
            refused=f"{scope} refused the credentials (HTTP {status}); check the feed URL",
        )
        if error is not None:
            raise error
        return response


@dataclass(frozen=True, slots=True)
class _FilePage:
    """A file's page and what it does to the file's cursor entry once stored."""

    page: SyncPage
    entry: dict[str, object] | None = None  # the file's new entry; None: unchanged
    scope: str = ""
    gone: bool = False  # the file vanished: its entry goes


class _Unread(Exception):
    """A file of a folder that is not read; the message names why, never its content."""


_ICAL_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*BEGIN:(?:VCALENDAR|VEVENT)\b", re.IGNORECASE)
_MEDIA_TYPE = re.compile(r"^[\w.+-]{1,40}/[\w.+-]{1,60}$")
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,254})$")


def _looks_like_icalendar(data: bytes) -> bool:
    """Whether a feed's body starts as iCalendar does (an empty one is the parser's to
    report: it is more likely half-written than hostile)."""
    return not data.strip() or _ICAL_START.match(data[:1024]) is not None


def _content_type(response: Fetched) -> str:
    """The answer's media type when it is one, for a message; never free text."""
    media = response.headers.get("Content-Type", "").split(";")[0].strip()
    if not media:
        return "no Content-Type"
    return f"Content-Type {media}" if _MEDIA_TYPE.match(media) else "an invalid Content-Type"


def _header_value(value: str | None) -> str | None:
    """A validator header worth storing in the cursor and sending back: short and printable."""
    return value if value is not None and _HEADER_VALUE.match(value) else None

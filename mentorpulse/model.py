"""Provider-neutral value types every layer shares.

A connector yields :class:`SyncPage` objects of :class:`EventRecord`; the sync stage stores
them; tracking judges each session's :class:`Outcome`. This module imports nothing of ours,
so every layer may use it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class EventStatus(enum.StrEnum):
    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


class Response(enum.StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TENTATIVE = "tentative"
    NEEDS_ACTION = "needs_action"


class Outcome(enum.StrEnum):
    UPCOMING = "upcoming"
    HELD = "held"
    PRESUMED_HELD = "presumed_held"
    MISSED = "missed"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"
    UNKNOWN = "unknown"


ATTENDED = frozenset({Outcome.HELD, Outcome.PRESUMED_HELD})

# A finding's states: one episode of a rule holding for a pairing. The rules write them;
# storage keeps them; notify and the reports read them.
PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
SUPPRESSED = "suppressed"  # would be pending/firing, but the pairing's data is stale
ERROR = "error"  # the rule raised on this pairing
OPEN = frozenset({PENDING, FIRING, SUPPRESSED, ERROR})

# The one fact naming the day of a pairing's last attended session (ISO date, or
# NEVER_ATTENDED): the rules write it, the notifier reads it for "not met since …".
LAST_ATTENDED_FACT = "last_attended"
NEVER_ATTENDED = "never"


@dataclass(frozen=True, slots=True)
class FindingState:
    """A finding as stored: one episode of a rule holding for a pairing."""

    fingerprint: str
    rule_id: str
    pairing_key: str
    severity: str
    state: str  # one of the finding states above
    since: datetime
    firing_since: datetime | None
    until: datetime | None
    facts: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # why it is suppressed, or the error of a failing rule


def known_zone(name: str | None) -> ZoneInfo | None:
    """The IANA zone of that name, or None for a name Python does not know.

    The one test of whether a zone name is usable: the config, the roster, ``--tz``, the
    recipients' zones and the connectors all ask it, so they all agree on what a zone is.
    """
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        return None


def unknown_zone(name: str) -> str:
    """What the config and ``--tz`` say about a zone name :func:`known_zone` refuses."""
    return f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"


def zone_or_utc(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``, or UTC when it is empty or unknown (display, never storage)."""
    return known_zone(name) or ZoneInfo("UTC")


def attended_day(start: datetime, zone: tzinfo | str | None) -> date:
    """The day a session counts on: its start's date in the zone of the view showing it.

    The one rule for ``last_attended`` in reports, ``explain`` and the rules' facts: the
    view's zone (a report's is the one whose days it counts sessions in), and the start,
    not the end, so a session a March report counts never shows as last attended in
    February.
    """
    if isinstance(zone, str):
        zone = zone_or_utc(zone)
    return start.astimezone(zone or UTC).date()


def last_attended_day(
    sessions: Iterable[tuple[datetime, str]], zone: tzinfo | str | None
) -> date | None:
    """:func:`attended_day` of the latest held or presumed held of ``(start, outcome)``."""
    starts = [start for start, outcome in sessions if outcome in ATTENDED]
    return attended_day(max(starts), zone) if starts else None


@dataclass(frozen=True, slots=True)
class Attendee:
    email: str  # always lower-cased
    response: Response = Response.NEEDS_ACTION
    optional: bool = False
    # A room or equipment (iCal CUTYPE=ROOM/RESOURCE, Graph type "resource"; Google's
    # connector drops them): not a person, so not counted against a participant cap.
    is_resource: bool = False


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One occurrence of a calendar event, provider-neutral.

    Recurring series are expanded by the connector; each occurrence keeps ``series_id``
    and ``original_start`` so a moved or cancelled instance is recognised as the same
    slot. ``start``/``end`` are timezone-aware UTC; ``zone`` is the event's own IANA zone.
    ``title`` is held in memory only, so the ingest stage can match keywords; it is
    stored only when ``privacy.store_titles`` is on.
    """

    source_id: str
    provider_id: str  # unique within the source, one per occurrence
    ical_uid: str
    start: datetime
    end: datetime
    series_id: str | None = None
    original_start: datetime | None = None
    all_day: bool = False
    zone: str | None = None
    status: EventStatus = EventStatus.CONFIRMED
    organizer: str | None = None
    attendees: tuple[Attendee, ...] = ()
    calendar_owner: str | None = None  # whose calendar this copy came from
    categories: tuple[str, ...] = ()
    conference_id: str | None = None
    title: str | None = field(default=None, compare=False, repr=False)
    updated: datetime | None = None
    sequence: int = 0
    etag: str | None = None

    def participants(self) -> frozenset[str]:
        """Organizer and attendees, lower-cased: the people the meeting involves."""
        people = {a.email for a in self.attendees}
        if self.organizer:
            people.add(self.organizer)
        return frozenset(people)

    def response_of(self, email: str) -> Response | None:
        """The RSVP of ``email`` in this copy; an organizer without an entry accepted."""
        for attendee in self.attendees:
            if attendee.email == email:
                return attendee.response
        if self.organizer == email:
            return Response.ACCEPTED
        return None


@dataclass(frozen=True, slots=True)
class ItemError:
    """One item a connector skipped during a sync, kept for the operator.

    The one way a connector reports a bad item: it goes on with the rest and puts this in
    the page's ``errors``; the sync stage stores it with the page.
    """

    item: str  # file name, UID or provider id: whatever lets a human find it
    message: str


@dataclass(frozen=True, slots=True)
class SyncPage:
    """A unit of sync that is stored atomically together with ``cursor``.

    ``replaces_scopes`` says: the records of this page are the whole content of these
    scopes (files of a folder, objects of a CalDAV calendar); anything stored earlier
    under one of them and not in this page is gone. A page groups many scopes so that a
    transaction carries a useful amount of work: ``scope_sizes`` then says how many of
    ``records``, in order, each scope holds (empty: every record is the content of the
    page's one scope). ``deleted`` lists provider ids removed by an incremental sync.
    """

    records: tuple[EventRecord, ...] = ()
    deleted: tuple[str, ...] = ()
    cursor: Mapping[str, object] | None = None
    replaces_scopes: tuple[str, ...] = ()
    errors: tuple[ItemError, ...] = ()
    scope_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.scope_sizes:
            if len(self.scope_sizes) != len(self.replaces_scopes):
                raise ValueError("scope_sizes needs one size per scope")
            if sum(self.scope_sizes) != len(self.records):
                raise ValueError("scope_sizes must add up to the page's records")
        elif len(self.replaces_scopes) > 1 and self.records:
            raise ValueError("records of several scopes need scope_sizes")

    def record_scopes(self) -> list[str | None]:
        """The scope each record (same order) is stored under; ``None``: no scope."""
        if not self.replaces_scopes:
            return [None] * len(self.records)
        if not self.scope_sizes:
            return [self.replaces_scopes[0]] * len(self.records)
        scopes: list[str | None] = []
        for scope, size in zip(self.replaces_scopes, self.scope_sizes, strict=True):
            scopes += [scope] * size
        return scopes


# Evidence kinds of attendance checks (tracking.attendance writes them; rules, reports and
# the dashboard read them): a party's own answer, and the proof leading a session whose
# two parties answered differently.
CONFIRMATION_EVIDENCE = "participant_confirmation"
DISPUTED_EVIDENCE = "attendance_disputed"


@dataclass(frozen=True, slots=True)
class ParticipantAnswer:
    """A party's own answer to an attendance check: did the session take place?"""

    email: str  # lower-cased
    happened: bool
    answered_at: datetime


@dataclass(frozen=True, slots=True)
class AttendanceEvidence:
    """What a conference system logged about one person in one occurrence.

    The strongest evidence there is that a session took place (or that someone did not
    show up). ``provider_id`` names the occurrence (the EventRecord) it belongs to.
    """

    provider_id: str
    email: str  # lower-cased
    seconds_present: int
    joined_at: datetime | None = None
    left_at: datetime | None = None
    system: str = ""  # "google_meet", "teams"

"""The iCalendar connector (``kind: ics``): a .ics file, a folder of them, or an http(s) feed.

Each file (or the feed) is one *scope*: its page replaces everything stored under it, so
a re-read file needs no per-event diff. The cursor remembers a sha256 per file and the
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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import icalendar
import recurring_ical_events
import structlog
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from mentorpulse.config.schema import IcsSource, format_duration
from mentorpulse.connectors.base import (
    Attendee,
    AuthError,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
    TransientError,
    Window,
    cursor_entries,
    describe,
    known_zone,
    retry_after_seconds,
)
from mentorpulse.connectors.http import (
    BoundedClient,
    Fetched,
    FetchError,
    FetchTimeout,
    Refused,
    TooLarge,
    safe_url,
)

log = structlog.get_logger(__name__)

CURSOR_VERSION = 1
CHECKPOINT_EVERY = 50  # pages (files) between stored cursors of a folder source
# RRULEs this dense are not meetings; expanding them over months would only burn memory.
_REJECTED_FREQS = frozenset({"SECONDLY", "MINUTELY"})
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
    try:
        components = icalendar.Component.from_ical(data, multiple=True)
    except Exception as exc:  # third-party data: any parser failure means unparseable
        raise IcsParseError(f"cannot parse iCalendar data ({describe(exc)})") from exc

    timezones: list[icalendar.Component] = []
    events: list[icalendar.Component] = []
    zone_names: list[str] = []
    for top in components:
        if top.name == "VEVENT":  # a bare VEVENT file, as some tools export single events
            events.append(top)
        elif top.name == "VCALENDAR":
            zone_names.append(str(top.get("X-WR-TIMEZONE", "")).strip())
            for sub in top.subcomponents:
                if sub.name == "VTIMEZONE":
                    timezones.append(sub)
                elif sub.name == "VEVENT":
                    events.append(sub)
    if not any(c.name in ("VCALENDAR", "VEVENT") for c in components):
        raise IcsParseError("no VCALENDAR or VEVENT found")

    # Floating and all-day times belong to the calendar's zone, else the owner's.
    calendar_zone = next(
        (z for z in (known_zone(n) for n in zone_names if n) if z is not None), None
    ) or ZoneInfo(default_zone)

    expander = _Expander(
        source_id=source_id,
        scope=scope,
        window=window,
        owner=calendar_owner,
        zone=calendar_zone,
    )
    groups: dict[str, list[icalendar.Component]] = {}
    for event in events:
        groups.setdefault(_uid_of(event), []).append(event)
    for uid, group in groups.items():
        expander.expand(uid, group, timezones)
    return list(expander.records.values()), expander.errors


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

    def reject(self, uid: str, message: str) -> None:
        item = f"{self.scope}: UID {uid}"
        log.warning("ics_item_rejected", source=self.source_id, item=item, error=message)
        self.errors.append(ItemError(item=item, message=message))

    def expand(
        self, uid: str, group: list[icalendar.Component], timezones: list[icalendar.Component]
    ) -> None:
        usable: list[icalendar.Component] = []
        for event in group:
            try:
                problem = self._problem(event)
            except Exception as exc:  # icalendar raises on access to broken properties
                problem = f"unreadable event ({describe(exc)})"
            if problem:
                self.reject(uid, problem)
            else:
                usable.append(event)
        if not usable:
            return
        is_series = any("RRULE" in e or "RDATE" in e or "RECURRENCE-ID" in e for e in usable)
        calendar = icalendar.Calendar()
        for component in (*timezones, *usable):
            if "UID" not in component:
                component["UID"] = uid
            calendar.add_component(component)
        try:
            occurrences = recurring_ical_events.of(calendar).between(
                self.window.start, self.window.end
            )
            records = [self._record(uid, o, is_series=is_series) for o in occurrences]
        except Exception as exc:  # expansion of third-party rules: reject this UID only
            self.reject(uid, f"cannot expand the event ({describe(exc)})")
            return
        for record in records:
            self._keep(record)

    def _problem(self, event: icalendar.Component) -> str | None:
        """Why this VEVENT cannot be used, checked before expansion to name the cause."""
        if "DTSTART" not in event:
            return "no DTSTART"
        if isinstance(event["DTSTART"], list):
            return f"DTSTART given {len(event['DTSTART'])} times"
        try:
            start = event.decoded("DTSTART")
        except Exception as exc:  # icalendar raises various types on bad values
            return f"bad DTSTART ({describe(exc)})"
        if not isinstance(start, date):
            return f"bad DTSTART value {str(event.get('DTSTART'))[:40]!r}"
        if isinstance(start, datetime) and start.tzinfo is None:
            tzid = event["DTSTART"].params.get("TZID")
            if tzid and known_zone(str(tzid)) is None:
                return f"unknown time zone {tzid!r} in DTSTART"
        rules = event.get("RRULE")
        for rule in rules if isinstance(rules, list) else [rules] if rules else []:
            freqs = {str(f).upper() for f in rule.get("FREQ", [])}
            if freqs & _REJECTED_FREQS:
                return f"RRULE frequency {', '.join(sorted(freqs))} is too dense for a meeting"
        return None

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
            attendees=_attendees(event.get("ATTENDEE")),
            calendar_owner=self.owner,
            categories=_categories(event.get("CATEGORIES")),
            conference_id=_conference(event),
            title=str(event["SUMMARY"]) if "SUMMARY" in event else None,
            updated=_updated(event),
            sequence=_sequence(event.get("SEQUENCE")),
        )

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


def _iana_name(zone: tzinfo, tzid: object, at: datetime) -> str | None:
    """The IANA name of an aware DTSTART's zone; None for a custom VTIMEZONE we cannot place.

    Exporters name zones their own way: Windows names (``Pacific Standard Time``) and
    prefixed IANA names (``custom_America/New_York``, ``/citadel.org/.../Europe/Berlin``).
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
    guess = WINDOWS_TO_OLSON.get(name) or next(
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


def _attendees(value: object) -> tuple[Attendee, ...]:
    found: dict[str, Attendee] = {}
    for item in _listed(value):
        email = _email(item)
        if not email or email in found:
            continue
        params = getattr(item, "params", {})
        response = _RESPONSES.get(str(params.get("PARTSTAT", "")).upper(), Response.NEEDS_ACTION)
        optional = str(params.get("ROLE", "")).upper() == "OPT-PARTICIPANT"
        found[email] = Attendee(email=email, response=response, optional=optional)
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

    # -- cursor -------------------------------------------------------------------------

    def _entries(self, cursor: Mapping[str, object] | None) -> dict[str, dict[str, object]]:
        return cursor_entries(cursor, CURSOR_VERSION, "files")

    def _cursor(self, entries: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
        """A JSON-serialisable snapshot: the caller stores it with the page."""
        return {
            "version": CURSOR_VERSION,
            **self.window.stamp(),
            "files": {scope: dict(entry) for scope, entry in sorted(entries.items())},
        }

    def _entry(self, digest: str, **extra: object) -> dict[str, object]:
        return {
            "sha256": digest,
            **self.window.stamp(),
            **{k: v for k, v in extra.items() if v is not None},
        }

    def _unchanged(self, entry: Mapping[str, object] | None, digest: str) -> bool:
        return entry is not None and entry.get("sha256") == digest and self.window.matches(entry)

    # -- sync ---------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """One page per new, changed or vanished file; nothing when nothing changed."""
        entries = self._entries(cursor)
        if self.source.url is not None:
            yield from self._sync_url(self.source.url, entries)
        else:
            assert self.source.path is not None  # the schema demands path or url
            pages = self._sync_path(Path(self.source.path), entries)
            yield from self._checkpointed(pages, entries)

    def _checkpointed(
        self, pages: Iterator[SyncPage], entries: Mapping[str, Mapping[str, object]]
    ) -> Iterator[SyncPage]:
        """Give every ``CHECKPOINT_EVERY``-th page and the last one the cursor, no other.

        The cursor names every file of the folder, so building and storing it with each
        page made a full read quadratic; a crash now re-reads at most that many files
        (their pages replace their scopes, so re-reading changes nothing). The cursor is
        taken as each page arrives (``entries`` then include it and nothing after it);
        the last page's is the final one: files after it were unchanged.
        """
        held: SyncPage | None = None
        for number, page in enumerate(pages, start=1):
            if held is not None:
                yield held
            held = page
            if number % CHECKPOINT_EVERY == 0:
                held = replace(page, cursor=self._cursor(entries))
        if held is not None:
            yield replace(held, cursor=self._cursor(entries))

    def _sync_path(
        self, configured: Path, entries: dict[str, dict[str, object]]
    ) -> Iterator[SyncPage]:
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
                del entries[scope]
                log.info("ics_file_gone", source=self.source_id, scope=scope)
                yield SyncPage(replaces_scope=scope)
                continue
            try:
                data = self._read(path, inside)
            except _Unread as unread:
                yield self._unreadable(scope, str(unread))
                continue
            owner = _owner_from_name(path) or self.source.owner
            page = self._page(scope, data, owner, entries)
            if page is not None:
                yield page

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
                data = file.read(limit + 1)
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
        entries: dict[str, dict[str, object]],
        **validators: object,
    ) -> SyncPage | None:
        digest = hashlib.sha256(data).hexdigest()
        if self._unchanged(entries.get(scope), digest):
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
            return self._unreadable(scope, str(exc))
        except Exception as exc:  # a bug of ours or the library's: one file, not the sync
            log.exception("ics_file_failed", source=self.source_id, item=scope)
            return self._unreadable(scope, f"unexpected error ({describe(exc)})")
        entries[scope] = self._entry(digest, **validators)
        log.info(
            "ics_file_read",
            source=self.source_id,
            scope=scope,
            records=len(records),
            errors=len(errors),
        )
        return SyncPage(records=tuple(records), replaces_scope=scope, errors=tuple(errors))

    def _unreadable(self, scope: str, message: str) -> SyncPage:
        """A page that reports ``scope`` but neither replaces it nor advances its entry.

        Pages come without a cursor: the caller adds one where it is stored."""
        log.warning("ics_item_rejected", source=self.source_id, item=scope, error=message)
        return SyncPage(replaces_scope=None, errors=(ItemError(item=scope, message=message),))

    # -- http feeds ---------------------------------------------------------------------

    def _sync_url(self, url: str, entries: dict[str, dict[str, object]]) -> Iterator[SyncPage]:
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
            yield SyncPage(cursor=self._cursor(entries), replaces_scope=stale)
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
        page = self._page(
            scope,
            response.content,
            self.source.owner,
            entries,
            etag=_header_value(response.headers.get("ETag")),
            last_modified=_header_value(response.headers.get("Last-Modified")),
        )
        if page is not None:
            yield replace(page, cursor=self._cursor(entries))

    def _fetch(self, url: str, scope: str, headers: dict[str, str]) -> Fetched:
        """GET the feed within the source's deadline and size cap, every hop's address
        checked; every failure becomes the typed error the scheduler acts on."""
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
        if status in (401, 403):
            raise AuthError(
                self.source_id,
                f"{scope} refused the credentials (HTTP {status}); check the feed URL",
            )
        if status == 304 or 200 <= status < 300:
            return response
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), self.now)
        raise TransientError(
            self.source_id, f"{scope} answered HTTP {status}", retry_after=retry_after
        )


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

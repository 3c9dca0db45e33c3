"""The connector contract: what every calendar provider yields, and how it fails.

Connectors never touch storage: they yield :class:`SyncPage` objects and the caller
stores each page together with its cursor in one transaction, so a crash resumes at the
last stored page. Everything provider-specific stays inside the provider's module.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar, runtime_checkable

import structlog

from mentorpulse.errors import UserError
from mentorpulse.model import AttendanceEvidence, Attendee, EventRecord, ItemError, SyncPage
from mentorpulse.text import clean_text

if TYPE_CHECKING:
    import tenacity

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ConnectorError(Exception):
    """Base of the typed errors a connector raises; messages never carry secrets."""

    def __init__(self, source_id: str, message: str) -> None:
        super().__init__(f"source {source_id}: {message}")
        self.source_id = source_id
        self.message = message


class TransientError(ConnectorError):
    """Retry later with backoff; ``retry_after`` seconds when the provider said so."""

    def __init__(self, source_id: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source_id, message)
        self.retry_after = retry_after


class TryAgain(TransientError):
    """Worth trying again within this run, after ``retry_after`` when the provider said
    so: it asked to slow down (429, 503, 504, a rate-limit reason), or its documentation
    says a retry now will likely succeed (Google's 5xx, a dropped connection)."""


class CursorExpired(ConnectorError):
    """The provider rejected the cursor: drop it and resync fully, without duplicates.

    ``calendars`` names the calendars (the keys of their cursor entries: Google users,
    mailboxes) whose tokens were rejected, when the connector knows: only those are then
    read again; empty: the whole cursor. ``others_complete``: the connector read every
    other calendar to the end before raising, so only those need reading again now."""

    def __init__(
        self,
        source_id: str,
        message: str,
        calendar: str | None = None,
        *,
        calendars: tuple[str, ...] = (),
        others_complete: bool = False,
    ) -> None:
        super().__init__(source_id, message)
        self.calendars = calendars or ((calendar,) if calendar is not None else ())
        self.others_complete = others_complete

    @property
    def calendar(self) -> str | None:
        """The (first) calendar whose token was rejected; None: the whole cursor."""
        return self.calendars[0] if self.calendars else None


class AuthError(ConnectorError):
    """Credentials were refused: stop this source and tell the operator."""


class BadItem(ConnectorError):
    """An HTTP refusal that concerns one item among many (one user's calendar), as
    :func:`status_error` types it: the connector skips that item and reports it as an
    :class:`~mentorpulse.model.ItemError` in the page, the one way a skipped item is told."""


class _Secrets(Protocol):
    def load(self, name: str) -> str | None: ...


def signed_in_token(store: _Secrets, name: str, source_id: str, provider: str) -> str:
    """The refresh token a person stored with ``mentorpulse auth <provider>``: an unreadable
    store or nobody signed in yet refuses the source, with the command that mends it."""
    try:
        refresh = store.load(name)
    except UserError as exc:
        raise AuthError(source_id, exc.message) from None
    if refresh is None:
        raise AuthError(
            source_id,
            f"nobody signed in yet: run `mentorpulse auth {provider} --source {source_id}`",
        )
    return refresh


@runtime_checkable
class AttendanceSource(Protocol):
    """Optional connector capability: conference logs as attendance evidence."""

    def attendance_evidence(self, record: EventRecord) -> list[AttendanceEvidence]:
        """Evidence for one past occurrence; empty when the meeting has no log."""
        ...


@runtime_checkable
class Connector(Protocol):
    """What the sync stage needs from a provider."""

    source_id: str

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """Yield pages from ``cursor`` (``None``: from scratch) to the present."""
        ...


@dataclass(frozen=True, slots=True)
class Window:
    """The expansion window, in whole UTC days so that it changes at most once a day."""

    first_day: date
    last_day: date

    @classmethod
    def around(cls, now: datetime, past: timedelta, future: timedelta) -> Window:
        now = now.astimezone(UTC)
        return cls((now - past).date(), (now + future).date())

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last_day + timedelta(days=1), time(), UTC)

    def stamp(self) -> dict[str, str]:
        """The window as cursor entries record it, so :meth:`matches` can tell it moved."""
        return {"window_start": self.first_day.isoformat(), "window_end": self.last_day.isoformat()}

    def matches(self, entry: Mapping[str, object]) -> bool:
        return all(entry.get(key) == value for key, value in self.stamp().items())


def cursor_entries(
    cursor: Mapping[str, object] | None, version: int, key: str
) -> dict[str, dict[str, object]]:
    """The per-scope entries under ``key`` of a connector's cursor; a cursor of another
    version or shape means starting over, so it gives none."""
    if not cursor or cursor.get("version") != version:
        return {}
    entries = cursor.get(key)
    if not isinstance(entries, Mapping):
        return {}
    return {str(k): dict(v) for k, v in entries.items() if isinstance(v, Mapping)}


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_NAME_LIKE = re.compile(r"[\w ./+-]{0,40}")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")


def _fragment(quoted: re.Match[str]) -> str:
    """A quoted literal of a message cut to the name it starts with: parsers quote the
    whole offending line, and a line of a hostile answer may be a secret's."""
    literal = quoted.group()
    inner = literal[1:-1].lstrip("\"'{[( ")
    name = _NAME_LIKE.match(inner)
    kept = name.group() if name else ""
    return f"{literal[0]}{kept}{'…' if len(kept) < len(inner) else ''}{literal[0]}"


def _token(found: re.Match[str]) -> str:
    """A long run of upper, lower case and digits together looks like a key or token."""
    text = found.group()
    mixed = any(c.isupper() for c in text) and any(c.islower() for c in text)
    return "…" if mixed and any(c.isdigit() for c in text) else text


def describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an error, fit for an item error and a log line: quoted text
    cut to the name it starts with, key-like tokens elided, at most ``limit`` characters.

    Library messages quote the data they failed on, and the data is untrusted."""
    text = clean_text(f"{type(exc).__name__}: {exc}")  # one line: quotes cannot span lines
    text = _TOKEN.sub(_token, _QUOTED.sub(_fragment, text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def utc_from_iso(text: str) -> datetime:
    """A provider's ISO 8601 / RFC 3339 timestamp in UTC (Graph sends up to 7 fractional
    digits, which Python 3.11 truncates); one without an offset is UTC."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """An HTTP ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


# --------------------------------------------------------------------------------------
# HTTP answers and retries: what a status means is decided here, for every connector.

THROTTLING = frozenset({429, 503, 504})  # "slow down": retried after Retry-After


def status_error(
    source_id: str,
    status: int,
    said: str,
    *,
    retry_after: float | None = None,
    refused: str | None = None,
    expired: str | None = None,
    cursor_gone: bool = False,
    throttled: bool = False,
    item: bool = False,
) -> ConnectorError | None:
    """The typed error an HTTP ``status`` means, or None for a 2xx or 304 answer.

    ``said`` describes the failure; ``refused`` and ``expired`` replace it for refused
    credentials and an expired cursor, whose next steps differ. The provider's own
    words, where it has them, arrive as flags: ``cursor_gone`` (Graph's
    syncStateNotFound, CalDAV's valid-sync-token), ``throttled`` (Google's 403
    rateLimitExceeded). ``item``: the refusal concerns one item among many (one user's
    calendar, not the credentials), so a 403, a 404 or another 4xx skips that item
    (:class:`BadItem`) instead of failing the source.
    """
    if 200 <= status < 300 or status == 304:
        return None
    if status == 410 or cursor_gone:
        return CursorExpired(source_id, expired or said)
    if status in THROTTLING or throttled:
        return TryAgain(source_id, said, retry_after=retry_after)
    if status == 401 or (status == 403 and not item):
        return AuthError(source_id, refused or said)
    if item and 400 <= status < 500:
        return BadItem(source_id, said)
    return TransientError(source_id, said, retry_after=retry_after)


@dataclass(frozen=True)
class RetryPolicy:
    """In-process retries of one request (or one batch request) while a sync waits.

    Waits double from ``first`` (at most ``cap``), times ``0.5 + jitter()`` so clients
    do not retry in step, and are never shorter than the provider's Retry-After. At most
    ``attempts`` tries and ``budget`` seconds of waiting in all; a wait longer than
    ``longest`` is not waited at all. Giving up raises the last error with the wait it
    would have needed as ``retry_after``: the scheduler's persisted backoff
    (:mod:`mentorpulse.backoff`) takes over from there.
    """

    attempts: int
    first: float = 1.0
    cap: float = 60.0
    longest: float = 60.0
    budget: float = 300.0
    retry_on: tuple[type[TransientError], ...] = (TransientError,)
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (0 for the first)."""
        backoff = min(self.cap, self.first * 2**retry * (0.5 + self.jitter()))
        return float(max(backoff, retry_after or 0.0))

    def run(self, attempt: Callable[[], T], *, sleep: Callable[[float], None], event: str) -> T:
        """``attempt()`` until it returns or raises something not in ``retry_on``; each
        retry is logged as ``event``."""
        import tenacity  # only a source that retries pays for it

        def wait(state: tenacity.RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            after = failure.retry_after if isinstance(failure, TransientError) else None
            return self.wait(state.attempt_number - 1, after)

        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                state.attempt_number >= self.attempts
                or state.upcoming_sleep > self.longest
                or state.idle_for + state.upcoming_sleep > self.budget
            )

        def logged(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            log.info(event, seconds=round(state.upcoming_sleep, 2), error=str(failure))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(self.retry_on),
            wait=wait,
            stop=stop,
            sleep=sleep,
            before_sleep=logged,
            retry_error_callback=_gave_up,
        )
        return retrying(attempt)


def _gave_up(state: tenacity.RetryCallState) -> NoReturn:
    """The last error of a retried call, with how long the provider wants us away."""
    assert state.outcome is not None
    failure = state.outcome.exception()
    if isinstance(failure, TransientError):
        raise TransientError(
            failure.source_id,
            failure.message,
            retry_after=max(state.upcoming_sleep, failure.retry_after or 0.0),
        ) from None
    raise failure if failure else AssertionError("gave up without an error")


# --------------------------------------------------------------------------------------
# Values at the connector boundary. Calendars are written by anyone who can send an
# invitation: whatever a connector read passes through :func:`sanitise_page` before it is
# stored, so a NUL byte or a 5,000-character UID costs that value its tail, never a sync.
# The limits mirror the ``events`` columns (tests/unit/test_sanitise.py keeps them equal).

ID_MAX = 1000  # provider_id, scope, ical_uid, series_id, conference_id
UID_MAX = 255  # longer UIDs are hashed: no client writes one, a session key embeds it
EMAIL_MAX = 320
ZONE_MAX = 64
ETAG_MAX = 200
TITLE_MAX = 500
CATEGORY_MAX = 100
CATEGORIES_MAX = 50
ATTENDEES_MAX = 1000
SEQUENCE_MAX = 2**31 - 1  # a 32-bit INTEGER column
ITEM_MAX = 200  # an item error's name and message, as stored and logged
MESSAGE_MAX = 400


def _clean(text: str) -> str:
    """:func:`clean_text`, skipped for text that has nothing to clean (nearly all of it):
    a printable string holds no control character, separator or surrogate, and checking
    that in C costs a tenth of the regular expressions (a sixth of storing a page)."""
    return text if text.isprintable() else clean_text(text)


def short_text(text: str, limit: int) -> str:
    """A cleaned fragment of ``text`` of at most ``limit`` characters, for messages and logs."""
    text = _clean(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stable_id(text: str, limit: int) -> str:
    """``text`` cleaned; when still longer than ``limit``, a readable prefix and a hash.

    The same input always gives the same id, so copies of one event in several calendars
    and the pages of later syncs still find each other.
    """
    cleaned = _clean(text)
    if len(cleaned) <= limit and (cleaned or not text):
        return cleaned
    # Too long, or nothing but control characters: the hash of what was there.
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{cleaned[: min(limit, 64) - 42]}~{digest}"


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    email = _clean(value).strip().lower()
    return email if email and len(email) <= EMAIL_MAX else None  # longer is no address


def _optional(value: str | None, limit: int, *, hashed: bool = True) -> str | None:
    if value is None:
        return None
    if hashed:
        return stable_id(value, limit)
    text = _clean(value)
    return text if len(text) <= limit else None


def _attendees(attendees: tuple[Attendee, ...]) -> tuple[Attendee, ...]:
    found: dict[str, Attendee] = {}
    for attendee in attendees:
        email = _email(attendee.email)
        if email is not None and email not in found:
            found[email] = attendee if email == attendee.email else replace(attendee, email=email)
        if len(found) >= ATTENDEES_MAX:  # a group this size is no mentoring session
            break
    cleaned = tuple(found.values())
    return attendees if cleaned == attendees else cleaned


def _categories(categories: tuple[str, ...]) -> tuple[str, ...]:
    cleaned: list[str] = []
    for category in categories[: CATEGORIES_MAX * 2]:
        name = short_text(category, CATEGORY_MAX).strip()
        if name and name not in cleaned:
            cleaned.append(name)
    cleaned = cleaned[:CATEGORIES_MAX]
    return categories if tuple(cleaned) == categories else tuple(cleaned)


def sanitise_record(
    record: EventRecord, _people: dict[int, tuple[Attendee, ...]] | None = None
) -> EventRecord:
    """``record`` with every string fit for its column: controls stripped, long ids hashed,
    titles and categories cut, addresses that are no address dropped; unchanged records
    are returned as they are (no copy for the common case)."""
    people = record.attendees
    if _people is not None:  # the occurrences of a series share one attendee tuple
        cached = _people.get(id(people))
        attendees = cached if cached is not None else _attendees(people)
        _people[id(people)] = attendees
    else:
        attendees = _attendees(people)
    title = record.title
    cleaned = {
        "provider_id": stable_id(record.provider_id, ID_MAX),
        "ical_uid": stable_id(record.ical_uid, UID_MAX),
        "series_id": _optional(record.series_id, UID_MAX),
        "zone": _optional(record.zone, ZONE_MAX, hashed=False),
        "organizer": _email(record.organizer),
        "attendees": attendees,
        "calendar_owner": _email(record.calendar_owner),
        "categories": _categories(record.categories),
        "conference_id": _optional(record.conference_id, ID_MAX),
        "title": None if title is None else short_text(title, TITLE_MAX),
        "etag": _optional(record.etag, ETAG_MAX),
        "sequence": min(max(record.sequence, 0), SEQUENCE_MAX),
    }
    changed = {k: v for k, v in cleaned.items() if getattr(record, k) != v}
    return replace(record, **changed) if changed else record  # type: ignore[arg-type]


def sanitise_page(page: SyncPage) -> SyncPage:
    """Every value of ``page`` fit to store: see :func:`sanitise_record`.

    Deleted ids and the scopes go through the same :func:`stable_id`, so they still name
    what the records of earlier pages were stored under.
    """
    people: dict[int, tuple[Attendee, ...]] = {}  # by id(): ``page`` keeps them alive
    records = tuple(sanitise_record(r, people) for r in page.records)
    return replace(
        page,
        records=records,
        deleted=tuple(stable_id(p, ID_MAX) for p in page.deleted),
        replaces_scopes=tuple(stable_id(s, ID_MAX) for s in page.replaces_scopes),
        errors=tuple(
            ItemError(item=short_text(e.item, ITEM_MAX), message=short_text(e.message, MESSAGE_MAX))
            for e in page.errors
        ),
    )


# --------------------------------------------------------------------------------------
# Pages sized by work: a file or a CalDAV object is often one record, and a transaction
# per object spent more on committing and bookkeeping than on storing. The one home of
# the bound: connectors that read object by object group their pages with these.

PAGE_RECORDS = 500  # records per grouped page (a page is one transaction)
PAGE_SCOPES = 250  # objects (scopes) per grouped page, however few records they hold


class PageGroup:
    """Object pages (one scope each, or an item error) gathered into one page.

    A connector :meth:`add` s each object's page and asks :meth:`full` before adding the
    next; :meth:`page` then gives the grouped page, with the cursor the connector holds at
    that moment (so a crash resumes after the last stored group, never inside one).
    """

    def __init__(self) -> None:
        self._pages: list[SyncPage] = []
        self._records = 0
        self._scopes: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._pages)

    def fits(self, page: SyncPage) -> bool:
        """Whether ``page`` may join: within the bounds, and no scope named twice."""
        if not self._pages:
            return True
        return (
            self._records + len(page.records) <= PAGE_RECORDS
            and len(self._scopes) + len(page.replaces_scopes) <= PAGE_SCOPES
            and self._scopes.isdisjoint(page.replaces_scopes)
        )

    def add(self, page: SyncPage) -> None:
        if page.deleted or page.cursor is not None or len(page.replaces_scopes) > 1:
            raise ValueError("only single-object pages without a cursor are grouped")
        if page.records and not page.replaces_scopes:
            raise ValueError("grouped records need the scope they replace")
        self._pages.append(page)
        self._records += len(page.records)
        self._scopes.update(page.replaces_scopes)

    def page(self, cursor: Mapping[str, object] | None = None) -> SyncPage:
        """The grouped page (emptying the group)."""
        pages, self._pages, self._records, self._scopes = self._pages, [], 0, set()
        scoped = [p for p in pages if p.replaces_scopes]
        return SyncPage(
            records=tuple(r for p in scoped for r in p.records),
            cursor=cursor,
            replaces_scopes=tuple(p.replaces_scopes[0] for p in scoped),
            scope_sizes=tuple(len(p.records) for p in scoped),
            errors=tuple(e for p in pages for e in p.errors),
        )


# --------------------------------------------------------------------------------------
# Series a provider expanded (Google ``singleEvents``, Graph ``calendarView``) arrive as
# thousands of instances, page by page. A series recurring more often than this a day is
# no meeting of two people: the bound connectors/ics.py puts on an RRULE (MAX_PER_DAY).

SERIES_PER_DAY_MAX = 4
DENSE_SERIES_KEPT = 500  # rejected series remembered in a cursor


class SeriesBound:
    """Rejects, for one sync, every series with more than ``SERIES_PER_DAY_MAX`` instances
    on one day: one item error names it, its instances yielded earlier in the sync are
    deleted again, and the rejection is kept in the cursor (:meth:`stamp`) so that later
    incremental syncs leave its changed instances out too."""

    def __init__(self, cursor: Mapping[str, object] | None) -> None:
        stored = cursor.get("dense_series") if cursor else None
        self.rejected: set[str] = (
            {str(s) for s in stored} if isinstance(stored, list | tuple) else set()
        )
        self._per_day: dict[tuple[str, date], int] = {}
        self._kept: dict[str, list[str]] = {}

    def apply(
        self, records: list[EventRecord]
    ) -> tuple[list[EventRecord], list[str], list[ItemError]]:
        """``records`` without the instances of rejected series; the ids to delete; the
        item errors of series rejected now."""
        errors: list[ItemError] = []
        deleted: list[str] = []
        for record in records:
            if record.series_id is None:
                continue
            key = f"{record.calendar_owner or ''}/{record.series_id}"
            if key in self.rejected:
                continue
            day = (key, record.start.date())
            self._per_day[day] = self._per_day.get(day, 0) + 1
            if self._per_day[day] > SERIES_PER_DAY_MAX:
                self.rejected.add(key)
                deleted += self._kept.pop(key, [])
                errors.append(
                    ItemError(
                        item=key,
                        message=f"series recurs more than {SERIES_PER_DAY_MAX} times a day; "
                        "a meeting series does not, so none of it is read",
                    )
                )
            else:
                self._kept.setdefault(key, []).append(record.provider_id)
        kept: list[EventRecord] = []
        for record in records:
            key = f"{record.calendar_owner or ''}/{record.series_id}"
            if record.series_id is not None and key in self.rejected:
                deleted.append(record.provider_id)
            else:
                kept.append(record)
        return kept, deleted, errors

    def stamp(self) -> dict[str, object]:
        """The cursor entry that keeps the rejections (at most ``DENSE_SERIES_KEPT``)."""
        if not self.rejected:
            return {}
        return {"dense_series": sorted(self.rejected)[-DENSE_SERIES_KEPT:]}

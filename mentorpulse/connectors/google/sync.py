"""The Google Calendar sync: one sync-token cursor per configured user's primary calendar.

A first sync lists the configured window (``singleEvents=true``, ``eventTypes=default``,
2,500 a page) and keeps ``nextPageToken`` in the cursor between pages, so a crash resumes
mid-calendar; the last page's ``nextSyncToken`` is kept, and later polls send only it.
When the window's end moves on (once a day), the new slice is listed once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc

from mentorpulse.config.schema import GoogleSource
from mentorpulse.connectors.base import (
    AuthError,
    BadItem,
    CursorExpired,
    SeriesBound,
    Window,
    cursor_entries,
    describe,
    utc_from_iso,
)
from mentorpulse.connectors.google.auth import GoogleAuth, NoCalendar
from mentorpulse.connectors.google.calls import Call, GoogleCalls, Outcome
from mentorpulse.connectors.google.http import BoundedHttp
from mentorpulse.connectors.google.meet import MeetReader
from mentorpulse.connectors.google.quota import gate_for
from mentorpulse.connectors.http import BoundedClient
from mentorpulse.model import (
    AttendanceEvidence,
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
    known_zone,
)
from mentorpulse.text import rfc3339_utc

log = structlog.get_logger(__name__)

CALENDAR_ROOT = "https://www.googleapis.com"
MEET_ROOT = "https://meet.googleapis.com"
CURSOR_VERSION = 1
PAGE_SIZE = 2500
_RESPONSES = {
    "accepted": Response.ACCEPTED,
    "declined": Response.DECLINED,
    "tentative": Response.TENTATIVE,
    "needsAction": Response.NEEDS_ACTION,
}
_STATUSES = {"tentative": EventStatus.TENTATIVE, "cancelled": EventStatus.CANCELLED}


@dataclass
class _Calendar:
    """Where one calendar's sync stands; stored in the cursor under the user's email."""

    sync_token: str | None = None
    page_token: str | None = None
    phase: str = "full"  # of page_token: "full", "extend" (new window slice), "changes"
    covered_to: str | None = None  # last day the stored events were listed up to
    extend_from: str | None = None

    @classmethod
    def load(cls, entry: object) -> _Calendar:
        if not isinstance(entry, Mapping):
            return cls()
        known = {k: entry[k] for k in cls.__dataclass_fields__ if isinstance(entry.get(k), str)}
        return cls(**known)

    def dump(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class GoogleConnector:
    """Reads a :class:`GoogleSource`; see the package docstring for costs and errors."""

    def __init__(
        self,
        source: GoogleSource,
        *,
        base_dir: Path,
        now: datetime,
        default_zone: str = "UTC",
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        token_key: str | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.default_zone = default_zone
        self.window = Window.around(now, source.window_past, source.window_future)
        root = (source.api_root or CALENDAR_ROOT).rstrip("/")
        api_root = f"{root}/"  # its host sets which addresses requests may reach
        self.auth = GoogleAuth(source, base_dir=base_dir, api_root=api_root, token_key=token_key)
        self.scopes = self.auth.scopes
        # httplib2's timeout applies per read: requests go through the bounded client.
        self._http = BoundedHttp(BoundedClient(api_root, timeout=source.timeout.total_seconds()))
        calendar_api = build_from_document(
            get_static_doc("calendar", "v3"),
            http=self._http,
            client_options={"api_endpoint": f"{root}/calendar/v3/"},
        )
        self._events = calendar_api.events()
        self.calls = GoogleCalls(
            self.source_id,
            auth=self.auth,
            gate=gate_for(self.auth.key_id, source, sleep),
            http=self._http,
            batch_uri=f"{root}/batch/calendar/v3",
            sleep=sleep,
            jitter=jitter,
        )
        meet_root = (source.api_root or MEET_ROOT).rstrip("/")
        self._meet = MeetReader(self.calls, events=self._events, meet_root=meet_root)
        self._bound = SeriesBound(None)
        self._expired: dict[str, str] = {}  # calendars whose token was rejected: why

    @property
    def http_requests(self) -> int:
        """Batch and single requests sent by this connector."""
        return self.calls.http_requests

    def close(self) -> None:
        """Let go of the pooled connections (the sync stage calls this when it is done)."""
        self._http.close()

    # -- cursor -------------------------------------------------------------------------

    def _states(self, cursor: Mapping[str, object] | None) -> dict[str, _Calendar]:
        stored = cursor_entries(cursor, CURSOR_VERSION, "calendars")
        return {user.lower(): _Calendar.load(stored.get(user.lower())) for user in self._users()}

    def _users(self) -> list[str]:
        return list(dict.fromkeys(u.strip().lower() for u in self.source.users))

    def _cursor(self, states: Mapping[str, _Calendar]) -> dict[str, object]:
        return {
            "version": CURSOR_VERSION,
            "calendars": {user: state.dump() for user, state in sorted(states.items())},
            **self._bound.stamp(),
        }

    # -- sync ---------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """One page per batch response that changed anything; see the package docstring."""
        states = self._states(cursor)
        self._bound = SeriesBound(
            cursor if cursor and cursor.get("version") == CURSOR_VERSION else None
        )
        done: set[str] = set()
        self._expired = {}
        self.auth.warm(list(states))
        while True:
            calls, skipped = self._due_calls(states, done)
            if skipped:
                yield SyncPage(cursor=self._cursor(states), errors=tuple(skipped))
            if not calls:
                break
            for start in range(0, len(calls), self.source.batch_size):
                chunk = calls[start : start + self.source.batch_size]
                page = self._apply(self.calls.execute(chunk), states, done)
                if page is not None:
                    yield page
        if self._expired:  # told once every other calendar is read: only these again
            message = next(iter(self._expired.values()))
            raise CursorExpired(
                self.source_id,
                message
                if len(self._expired) == 1
                else f"{message} (and {len(self._expired) - 1} more)",
                calendars=tuple(self._expired),
                others_complete=True,
            )

    def _due_calls(
        self, states: dict[str, _Calendar], done: set[str]
    ) -> tuple[list[Call], list[ItemError]]:
        """The next call of every calendar not done yet; the calendars of users gone."""
        calls: list[Call] = []
        skipped: list[ItemError] = []
        for user, state in states.items():
            if user in done:
                continue
            missing = self.auth.gone.pop(user, None)
            try:
                if missing is not None:
                    raise missing
                calls.append(self._next_call(user, state))
            except NoCalendar as gone:
                skipped.append(self._skip(user, gone.reason))
                done.add(user)
        return calls, skipped

    def _next_call(self, user: str, state: _Calendar) -> Call:
        common: dict[str, Any] = {
            "calendarId": user,
            "singleEvents": True,
            "eventTypes": "default",
            "maxResults": PAGE_SIZE,
        }
        last_day = self.window.last_day.isoformat()
        if state.sync_token is None or (state.phase == "full" and state.page_token):
            phase = "full"
            kwargs = {**common, "timeMin": rfc3339_utc(self.window.start)}
            kwargs["timeMax"] = rfc3339_utc(self.window.end)
            if state.page_token is None:
                state.covered_to = last_day
        elif state.phase == "extend" or (state.covered_to or "") < last_day:
            phase = "extend"
            if state.extend_from is None:  # set until the slice is listed to its end
                state.extend_from = state.covered_to or self.window.first_day.isoformat()
                state.covered_to = last_day
            first = date.fromisoformat(state.extend_from or last_day) + timedelta(days=1)
            kwargs = {
                **common,
                "timeMin": rfc3339_utc(max(self.window.start, _midnight(first))),
                "timeMax": rfc3339_utc(self.window.end),
            }
        else:
            phase = "changes"
            # Only the sync token: the query restrictions may not accompany it.
            # (the token advances only on the last page, so later pages resend the same).
            kwargs = {**common, "syncToken": state.sync_token}
        if state.page_token and state.phase == phase:
            kwargs["pageToken"] = state.page_token
        state.phase = phase
        request = self._events.list(**kwargs)
        self.calls.authorise(user, request)
        return Call(user=user, request=request, phase=phase)

    def _apply(
        self, outcomes: list[Outcome], states: dict[str, _Calendar], done: set[str]
    ) -> SyncPage | None:
        """Turn one batch's answers into one page (records, deletions, the new cursor)."""
        records: list[EventRecord] = []
        deleted: list[str] = []
        errors: list[ItemError] = []
        changed = False
        for outcome in outcomes:
            state = states[outcome.user]
            if isinstance(outcome.error, CursorExpired):  # this calendar's token only
                self._expired[outcome.user] = outcome.error.message
                done.add(outcome.user)
                continue
            if outcome.error is not None:
                errors.append(self._failed(outcome, state))
                done.add(outcome.user)
                changed = True
                continue
            answer = outcome.response or {}
            before = state.dump()
            items = answer.get("items") or []
            got, gone, bad = self._read_items(outcome.user, items, answer.get("timeZone"))
            records += got
            deleted += gone
            errors += bad
            self._advance(outcome, state, answer, done)
            changed = changed or bool(items) or state.dump() != before
        if not changed:
            return None
        return self._page(records, deleted, errors, states, calendars=len(outcomes))

    @staticmethod
    def _advance(
        outcome: Outcome, state: _Calendar, answer: Mapping[str, Any], done: set[str]
    ) -> None:
        """Move one calendar's cursor past the page it answered."""
        next_page = answer.get("nextPageToken")
        state.page_token = next_page if isinstance(next_page, str) else None
        if state.page_token is not None:
            return
        if outcome.phase != "extend" and isinstance(answer.get("nextSyncToken"), str):
            state.sync_token = answer["nextSyncToken"]
        state.extend_from = None
        state.phase = "changes"
        if outcome.phase != "extend":
            done.add(outcome.user)

    def _page(
        self,
        records: list[EventRecord],
        deleted: list[str],
        errors: list[ItemError],
        states: dict[str, _Calendar],
        *,
        calendars: int,
    ) -> SyncPage:
        records, gone, bad = self._bound.apply(records)
        deleted += gone
        errors += bad
        log.info(
            "google_page",
            source=self.source_id,
            calendars=calendars,
            records=len(records),
            deleted=len(deleted),
            errors=len(errors),
        )
        return SyncPage(
            records=tuple(records),
            deleted=tuple(deleted),
            cursor=self._cursor(states),
            errors=tuple(errors),
        )

    def _failed(self, outcome: Outcome, state: _Calendar) -> ItemError:
        """One call's final error: raised for the source, or this calendar skipped."""
        error = outcome.error
        if isinstance(error, AuthError):
            raise error
        if isinstance(error, NoCalendar):
            return self._skip(outcome.user, error.reason)
        if outcome.status == 404:
            return self._skip(outcome.user, "no calendar (suspended, deleted, or not shared)")
        if isinstance(error, BadItem):
            state.page_token = None  # a rejected page token: start that listing again
        return self._skip(outcome.user, error.message if error is not None else "no answer")

    def _skip(self, user: str, reason: str) -> ItemError:
        log.warning("google_calendar_skipped", source=self.source_id, user=user, reason=reason)
        return ItemError(item=user, message=f"calendar of {user} skipped: {reason}")

    # -- records --------------------------------------------------------------------------

    def _read_items(
        self, owner: str, items: list[dict[str, Any]], zone: object
    ) -> tuple[list[EventRecord], list[str], list[ItemError]]:
        records: list[EventRecord] = []
        deleted: list[str] = []
        errors: list[ItemError] = []
        calendar_zone = zone if isinstance(zone, str) and known_zone(zone) else self.default_zone
        for item in items:
            try:
                key = f"{owner}/{occurrence_key(item)}"
                if item.get("status") == "cancelled":
                    deleted.append(key)
                    continue
                record = self._record(owner, key, item, calendar_zone)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a bad shape too
                errors.append(
                    ItemError(
                        item=f"{owner}/{item.get('id', '?') if isinstance(item, dict) else '?'}",
                        message=f"unreadable event ({describe(exc)})",
                    )
                )
                continue
            if record.start >= self.window.end:
                deleted.append(key)  # an edited series reaching years ahead: outside
            elif record.end > self.window.start:
                records.append(record)
        return records, deleted, errors

    def _record(self, owner: str, key: str, item: dict[str, Any], zone: str) -> EventRecord:
        start_field, end_field = item["start"], item["end"]
        event_zone = start_field.get("timeZone") or zone
        if known_zone(event_zone) is None:
            event_zone = zone
        start = _when(start_field, event_zone)
        organizer, attendees = _people(item)
        original = item.get("originalStartTime")
        conference = item.get("conferenceData") or {}
        return EventRecord(
            source_id=self.source_id,
            provider_id=key,
            ical_uid=str(item.get("iCalUID") or item["id"]),
            start=start,
            end=max(start, _when(end_field, event_zone)),
            series_id=item.get("recurringEventId"),
            original_start=_when(original, event_zone) if original else None,
            all_day="date" in start_field and "dateTime" not in start_field,
            zone=event_zone,
            status=_STATUSES.get(item.get("status", ""), EventStatus.CONFIRMED),
            organizer=organizer,
            attendees=attendees,
            calendar_owner=owner,
            conference_id=conference.get("conferenceId"),
            title=item.get("summary"),
            updated=utc_from_iso(item["updated"]) if item.get("updated") else None,
            sequence=int(item.get("sequence") or 0),
            etag=item.get("etag"),
        )

    # -- attendance -----------------------------------------------------------------------

    def attendance_evidence(self, record: EventRecord) -> list[AttendanceEvidence]:
        """Meet conference logs of ``record``'s meeting (see :mod:`.meet`), asked as the
        organiser when we may act as them, else as the calendar's owner."""
        if not self.source.attendance or not record.conference_id:
            return []
        asker = (
            record.organizer
            if record.organizer in self._users() and self.auth.delegated
            else record.calendar_owner or record.organizer or ""
        )
        return self._meet.evidence(record, asker)


def _people(item: Mapping[str, Any]) -> tuple[str | None, tuple[Attendee, ...]]:
    """The organiser and the attendees of an event (meeting rooms are not people)."""
    organizer = _lower((item.get("organizer") or {}).get("email"))  # null: none known
    attendees: dict[str, Attendee] = {}
    for person in item.get("attendees") or []:
        email = _lower(person.get("email"))
        if not email or person.get("resource") or email in attendees:
            continue
        if person.get("organizer") and organizer is None:
            organizer = email
        attendees[email] = Attendee(
            email=email,
            response=_RESPONSES.get(person.get("responseStatus", ""), Response.NEEDS_ACTION),
            optional=bool(person.get("optional")),
        )
    return organizer, tuple(attendees.values())


def occurrence_key(item: Mapping[str, Any]) -> str:
    """Series id + original start for an instance (also when cancelled), else the id."""
    series = item.get("recurringEventId")
    original = item.get("originalStartTime")
    if series and isinstance(original, Mapping):
        if "dateTime" in original:
            stamp = utc_from_iso(original["dateTime"]).strftime("%Y%m%dT%H%M%SZ")
        else:
            stamp = str(original["date"]).replace("-", "")
        return f"{series}_{stamp}"
    return str(item["id"])


def _lower(value: object) -> str | None:
    return value.strip().lower() or None if isinstance(value, str) else None


def _when(value: Mapping[str, Any], zone: str) -> datetime:
    """A Calendar ``EventDateTime`` in UTC; an all-day date starts at midnight in ``zone``."""
    if "dateTime" in value:
        return utc_from_iso(str(value["dateTime"]))
    day = date.fromisoformat(str(value["date"]))
    return datetime.combine(day, dtime(), ZoneInfo(zone)).astimezone(UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, dtime(), UTC)

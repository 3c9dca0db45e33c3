"""The EWS sync: per mailbox, a SyncFolderItems probe, then CalendarView when it changed.

The cursor holds, per mailbox, the calendar's sync state and the window its content was
read over. A poll asks each mailbox's calendar what changed since its state (one request
when nothing did); a mailbox that changed, is new, or whose window moved has the
occurrences of the window read afresh (CalendarView for their ids, window halves until
no view reaches the server's item limit; GetItem for their properties) and stored as the
whole content of that mailbox's days in the window (``replaces_scopes``: one scope per
mailbox and UTC day), which tells deleted occurrences and deleted meetings without a
tombstone, and leaves alone the days that fell out of the back of the window (history).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from mentorpulse.config.schema import ExchangeSource
from mentorpulse.connectors.base import (
    AuthError,
    SeriesBound,
    Window,
    cursor_entries,
    describe,
)
from mentorpulse.connectors.exchange.ews import Ews, MailboxRefused, as_utc
from mentorpulse.connectors.zones import to_iana
from mentorpulse.model import (
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
)

log = structlog.get_logger(__name__)

CURSOR_VERSION = 1
QUIET_MAILBOXES = 500  # unchanged mailboxes between cursor writes (a crash re-probes these)
SMALLEST_VIEW = timedelta(hours=1)  # a fuller hour than view_limit is not split further
_RESPONSES = {
    "accept": Response.ACCEPTED,
    "organizer": Response.ACCEPTED,
    "decline": Response.DECLINED,
    "tentative": Response.TENTATIVE,
    "noresponsereceived": Response.NEEDS_ACTION,
    "unknown": Response.NEEDS_ACTION,
}
_SERIES_TYPES = frozenset({"Occurrence", "Exception"})


class ExchangeConnector:
    """Reads an :class:`ExchangeSource`; see the module docstring for the cursor."""

    def __init__(
        self,
        source: ExchangeSource,
        *,
        base_dir: Path,
        now: datetime,
        default_zone: str = "UTC",
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.default_zone = default_zone
        self.window = Window.around(now, source.window_past, source.window_future)
        self._ews: Ews | None = None
        self._bound = SeriesBound(None)
        self._server_version: str | None = None

    @property
    def requests(self) -> int:
        """HTTP requests sent to EWS by the last sync (for the bench and the logs)."""
        return self._ews.requests if self._ews is not None else 0

    # -- cursor -------------------------------------------------------------------------

    def _cursor(self, boxes: Mapping[str, dict[str, object]]) -> dict[str, object]:
        version = self._ews.server_version() if self._ews else None
        return {
            "version": CURSOR_VERSION,
            **({"server_version": version} if version else {}),
            "mailboxes": {m: dict(e) for m, e in sorted(boxes.items())},
            **self._bound.stamp(),
        }

    # -- sync ---------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """Every mailbox probed; changed ones read and yielded one page each."""
        current = cursor if cursor and cursor.get("version") == CURSOR_VERSION else None
        boxes = {
            m: e
            for m, e in cursor_entries(current, CURSOR_VERSION, "mailboxes").items()
            if m in self.source.mailboxes
        }
        self._bound = SeriesBound(current)
        stored_version = current.get("server_version") if current else None
        self._ews = Ews(
            self.source,
            base_dir=self.base_dir,
            server_version=str(stored_version) if stored_version else None,
        )
        quiet = 0
        refused: list[str] = []
        try:
            for mailbox in self.source.mailboxes:
                try:
                    page = self._mailbox(mailbox, boxes)
                except MailboxRefused as error:
                    log.warning(
                        "ews_mailbox_refused",
                        source=self.source_id,
                        mailbox=mailbox,
                        error=error.message,
                    )
                    if error.denied:
                        refused.append(mailbox)
                    yield SyncPage(
                        errors=(ItemError(item=mailbox, message=error.message),),
                        cursor=self._cursor(boxes),
                    )
                    quiet = 0
                    continue
                if page is not None:
                    yield page
                    quiet = 0
                    continue
                quiet += 1
                if quiet >= QUIET_MAILBOXES:
                    yield SyncPage(cursor=self._cursor(boxes))
                    quiet = 0
            if quiet:
                yield SyncPage(cursor=self._cursor(boxes))
            if refused and len(refused) == len(self.source.mailboxes):
                raise AuthError(
                    self.source_id,
                    f"the service account may read none of the {len(refused)} mailboxes "
                    f"(first: {refused[0]}); grant {self.source.access} access",
                )
        finally:
            self._ews.close()
            log.info("ews_sync_done", source=self.source_id, requests=self.requests)

    def _mailbox(self, mailbox: str, boxes: dict[str, dict[str, object]]) -> SyncPage | None:
        """The page of one mailbox, or None when its calendar did not change."""
        assert self._ews is not None
        entry = boxes.get(mailbox)
        state = entry.get("state") if entry else None
        probe = self._ews.probe(mailbox, str(state) if isinstance(state, str) else None)
        settled = entry is not None and self.window.matches(entry)
        if settled and probe.changes == 0:
            if entry is not None:
                entry["state"] = probe.state  # the old one stays valid: stored lazily
            return None
        records, errors = self._read(mailbox)
        kept, _, bad = self._bound.apply(records)
        boxes[mailbox] = {"state": probe.state, **self.window.stamp()}
        log.info(
            "ews_mailbox_read",
            source=self.source_id,
            mailbox=mailbox,
            changes=probe.changes,
            records=len(kept),
        )
        by_day = self._by_day(mailbox, kept)
        return SyncPage(
            records=tuple(r for day in by_day.values() for r in day),
            cursor=self._cursor(boxes),
            replaces_scopes=tuple(by_day),
            scope_sizes=tuple(len(day) for day in by_day.values()),
            errors=(*errors, *bad),
        )

    def _by_day(self, mailbox: str, records: list[EventRecord]) -> dict[str, list[EventRecord]]:
        """The mailbox's records under one scope per UTC day of the window, every day of
        it present: a view of the window is the whole content of those days, so what
        they held before and no longer do is gone, while the days that fell out of the
        back of the window are left alone (history). An occurrence that began before the
        window is filed under its first day."""
        first, last = self.window.first_day, self.window.last_day
        days: dict[str, list[EventRecord]] = {
            scope_of(mailbox, first + timedelta(days=n)): [] for n in range((last - first).days + 1)
        }
        for record in records:
            day = min(max(record.start.date(), first), last)
            days[scope_of(mailbox, day)].append(record)
        return days

    # -- reading a mailbox ----------------------------------------------------------------

    def _read(self, mailbox: str) -> tuple[list[EventRecord], list[ItemError]]:
        assert self._ews is not None
        ids, errors = self._occurrence_ids(mailbox, self.window.start, self.window.end)
        records: list[EventRecord] = []
        for fetched in self._ews.items(mailbox, ids):
            provider_id = f"{mailbox}/{fetched.item_id}"
            if isinstance(fetched.item, Exception):
                errors.append(ItemError(item=provider_id, message=describe(fetched.item)))
                continue
            try:
                record, warning = self._record(mailbox, fetched.item, fetched.unread_zone)
            except (AttributeError, KeyError, TypeError, ValueError) as error:
                message = f"unreadable calendar item ({describe(error)})"
                log.warning(
                    "ews_item_rejected", source=self.source_id, item=provider_id, error=message
                )
                errors.append(ItemError(item=provider_id, message=message))
                continue
            if warning is not None:
                log.warning(
                    "ews_zone_fallback", source=self.source_id, item=provider_id, warning=warning
                )
                errors.append(ItemError(item=provider_id, message=warning))
            if record.end > self.window.start and record.start < self.window.end:
                records.append(record)
        return records, errors

    def _occurrence_ids(
        self, mailbox: str, start: datetime, end: datetime
    ) -> tuple[list[str], list[ItemError]]:
        """The ids in ``[start, end)``: a view that reaches the limit may be missing some,
        so its window is halved until none does (an item across a cut is in both halves)."""
        assert self._ews is not None
        limit = self.source.view_limit
        ids = self._ews.view(mailbox, start, end, limit)
        if len(ids) < limit:
            return ids, []
        if end - start <= SMALLEST_VIEW:
            return ids, [
                ItemError(
                    item=f"{mailbox}/{start.isoformat()}",
                    message=f"more than {limit} calendar items within an hour; "
                    "only the first were read",
                )
            ]
        middle = start + (end - start) / 2
        first, first_errors = self._occurrence_ids(mailbox, start, middle)
        second, second_errors = self._occurrence_ids(mailbox, middle, end)
        return list(dict.fromkeys([*first, *second])), [*first_errors, *second_errors]

    def _record(
        self, mailbox: str, item: Any, unread_zone: str | None
    ) -> tuple[EventRecord, str | None]:
        """The record of one occurrence; a warning when its zone had to be guessed (the
        config's ``timezone`` stands in for the mailbox's, which EWS does not give)."""
        timezone = getattr(item, "_start_timezone", None)
        name = getattr(timezone, "ms_id", None) or unread_zone
        mapping = to_iana(name, fallback=self.default_zone)
        organizer = _email(item.organizer)
        start, end = as_utc(item.start), as_utc(item.end)
        if start is None or end is None:
            raise ValueError("no start or end")
        kind = str(item.type or "Single")
        updated = as_utc(item.last_modified_time)
        record = EventRecord(
            source_id=self.source_id,
            provider_id=f"{mailbox}/{item.id}",
            ical_uid=str(item.uid or item.id),
            start=start,
            end=end,
            series_id=str(item.uid) if kind in _SERIES_TYPES and item.uid else None,
            original_start=as_utc(item.original_start) if kind in _SERIES_TYPES else None,
            all_day=bool(item.is_all_day),
            zone=mapping.zone,
            status=EventStatus.CANCELLED if item.is_cancelled else EventStatus.CONFIRMED,
            organizer=organizer,
            attendees=_attendees(mailbox, organizer, item),
            calendar_owner=mailbox,
            categories=tuple(str(c) for c in item.categories or ()),
            title=item.subject,
            updated=updated,
            sequence=int(item.appointment_sequence_number or 0),
            etag=item.changekey,
        )
        return record, mapping.warning


def scope_of(mailbox: str, day: date) -> str:
    """The scope of a mailbox's occurrences that start on ``day`` (UTC)."""
    return f"{mailbox}/{day.isoformat()}"


def _email(mailbox: object) -> str | None:
    address = getattr(mailbox, "email_address", None)
    return str(address).strip().lower() if address else None


def _response(value: object) -> Response | None:
    if value is None:
        return None
    return _RESPONSES.get(str(value).lower(), Response.NEEDS_ACTION)


def _attendees(mailbox: str, organizer: str | None, item: Any) -> tuple[Attendee, ...]:
    """Each attendee's ResponseType (as the organizer's copy records it); the mailbox
    owner's own MyResponseType wins for the owner, as the other connectors do."""
    found: dict[str, Attendee] = {}
    groups: Sequence[tuple[Any, bool, bool]] = (
        (item.required_attendees, False, False),
        (item.optional_attendees, True, False),
        (item.resources, False, True),
    )
    for attendees, optional, resource in groups:
        for attendee in attendees or ():
            email = _email(attendee.mailbox)
            if email and email not in found:
                found[email] = Attendee(
                    email=email,
                    response=_response(attendee.response_type) or Response.NEEDS_ACTION,
                    optional=optional,
                    is_resource=resource,
                )
    own = _response(item.my_response_type)
    if mailbox != organizer and own is not None and own is not Response.NEEDS_ACTION:
        previous = found.get(mailbox)
        found[mailbox] = Attendee(
            email=mailbox, response=own, optional=previous.optional if previous else False
        )
    return tuple(found.values())

"""The Graph sync: ``calendarView/delta`` per mailbox, mailboxes read together in ``$batch``.

The cursor holds, per mailbox, the link to continue from: an ``@odata.nextLink`` while a
round is under way (so a crash resumes at the next page) or the ``@odata.deltaLink`` of
the finished round, plus the window the round was started with. When the window must
move, the old round is drained first (so no deletion is missed) and a new round is
started over the new window; events that fell out of the back of the window are left
alone (history).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog

from mentorpulse.config.schema import MicrosoftSource
from mentorpulse.connectors.base import (
    AuthError,
    CursorExpired,
    SeriesBound,
    TransientError,
    Window,
    cursor_entries,
    describe,
    utc_from_iso,
)
from mentorpulse.connectors.microsoft import teams
from mentorpulse.connectors.microsoft.auth import GraphSignIn
from mentorpulse.connectors.microsoft.graph import BATCH_LIMIT, GraphClient
from mentorpulse.connectors.zones import ZoneMapping, to_iana
from mentorpulse.model import (
    AttendanceEvidence,
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
)
from mentorpulse.text import rfc3339_utc

log = structlog.get_logger(__name__)

CURSOR_VERSION = 1
PER_MAILBOX_CONCURRENCY = 4  # Graph's limit of concurrent requests per mailbox
QUIET_BATCHES = 50  # unchanged batches between cursor writes (a crash redoes at most these)
_RESPONSES = {
    "accepted": Response.ACCEPTED,
    "organizer": Response.ACCEPTED,
    "declined": Response.DECLINED,
    "tentativelyaccepted": Response.TENTATIVE,
    "none": Response.NEEDS_ACTION,
    "notresponded": Response.NEEDS_ACTION,
}
_FULL_FIELDS = ("iCalUId", "attendees", "organizer")


@dataclass
class _Box:
    """Cursor entry of one mailbox."""

    link: str | None = None
    settled: bool = False  # link is a deltaLink (the round finished)
    window_start: str | None = None
    window_end: str | None = None
    zone: str | None = None  # the mailbox's own zone, once looked up

    def as_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class _Page:
    records: list[EventRecord] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


@dataclass
class _Round:
    """Where one sync stands: the mailboxes done, those draining an old window's round,
    and how many quiet answers have gone by since the cursor was last handed out."""

    done: set[str] = field(default_factory=set)
    draining: set[str] = field(default_factory=set)
    quiet: int = 0


class MicrosoftConnector:
    """Reads a :class:`MicrosoftSource`; see the package docstring for the cursor."""

    def __init__(
        self,
        source: MicrosoftSource,
        *,
        base_dir: Path,
        now: datetime,
        default_zone: str = "UTC",
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.default_zone = default_zone
        self.window = Window.around(now, source.window_past, source.window_future)
        self.graph_url = source.graph_url.rstrip("/")
        self.sign_in = GraphSignIn(source, base_dir=base_dir, timeout=timeout)
        self.graph = GraphClient(
            self.source_id,
            graph_url=self.graph_url,
            sign_in=self.sign_in,
            timeout=timeout,
            sleep=sleep,
        )
        self._bound = SeriesBound(None)

    @property
    def requests(self) -> int:
        """HTTP requests sent to Graph (for the bench and the logs)."""
        return self.graph.requests

    def close(self) -> None:
        self.graph.close()

    def _prefer(self) -> dict[str, str]:
        return {"Prefer": f'odata.maxpagesize={self.source.page_size}, outlook.timezone="UTC"'}

    # -- cursor -------------------------------------------------------------------------

    def _boxes(self, cursor: Mapping[str, object] | None) -> dict[str, _Box]:
        boxes: dict[str, _Box] = {m: _Box() for m in self.source.mailboxes}
        stored = cursor_entries(cursor, CURSOR_VERSION, "mailboxes")
        for mailbox in boxes:
            entry = stored.get(mailbox)
            if entry is not None and isinstance(entry.get("link"), str):
                boxes[mailbox] = _Box(
                    link=str(entry["link"]),
                    settled=bool(entry.get("settled")),
                    window_start=str(entry.get("window_start") or "") or None,
                    window_end=str(entry.get("window_end") or "") or None,
                    zone=str(entry.get("zone") or "") or None,
                )
        return boxes

    def _cursor(self, boxes: Mapping[str, _Box]) -> dict[str, object]:
        return {
            "version": CURSOR_VERSION,
            **self.window.stamp(),
            "mailboxes": {m: b.as_json() for m, b in sorted(boxes.items()) if b.link},
            **self._bound.stamp(),
        }

    def _start_link(self, mailbox: str) -> str:
        start, end = rfc3339_utc(self.window.start), rfc3339_utc(self.window.end)
        return f"/users/{quote(mailbox)}/calendarView/delta?startDateTime={start}&endDateTime={end}"

    # -- sync ---------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """Every mailbox to the end of a round over the current window, 20 per request.

        Each step GETs one link per due mailbox (in one ``$batch`` when several are due)
        and yields one page with what those answers held and the cursor after them.
        """
        boxes = self._boxes(cursor)
        self._bound = SeriesBound(
            cursor if cursor and cursor.get("version") == CURSOR_VERSION else None
        )
        state = _Round(draining=self._prepare(boxes))
        try:
            while due := [m for m in boxes if m not in state.done]:
                for start in range(0, len(due), BATCH_LIMIT):
                    page = self._step(due[start : start + BATCH_LIMIT], boxes, state)
                    # A quiet batch's new links need not be stored at once (the old ones
                    # stay valid and would return the same nothing): one cursor write per
                    # quiet poll instead of one per 20 mailboxes.
                    if page.records or page.deleted or page.errors or state.quiet >= QUIET_BATCHES:
                        state.quiet = 0
                        yield self._page(page, boxes)
                    else:
                        state.quiet += 1
            if state.quiet:
                yield self._page(_Page(), boxes)
        finally:
            self.close()
            log.info("graph_sync_done", source=self.source_id, requests=self.requests)

    def _prepare(self, boxes: dict[str, _Box]) -> set[str]:
        """Start new mailboxes; returns those whose round is over an old window."""
        draining: set[str] = set()
        for mailbox, box in boxes.items():
            if box.link is not None and not self.window.matches(box.as_json()):
                # Drain the old window's round first: only it can tell what was deleted
                # meanwhile. Then a new round starts over the new window.
                log.info(
                    "graph_window_moved",
                    source=self.source_id,
                    mailbox=mailbox,
                    old=f"{box.window_start}..{box.window_end}",
                    new=f"{self.window.first_day}..{self.window.last_day}",
                )
                draining.add(mailbox)
                box.settled = False  # its deltaLink is polled once more, to the end
            elif box.link is None:
                self._start(mailbox, box)
        return draining

    def _step(self, chunk: list[str], boxes: dict[str, _Box], state: _Round) -> _Page:
        """One request for ``chunk``'s links; what they answered, the links moved on."""
        bodies = self._fetch([(m, boxes[m].link or "") for m in chunk])
        page = _Page()
        for mailbox in chunk:
            box = boxes[mailbox]
            self._collect(mailbox, box, bodies[mailbox], page)
            self._advance(box, bodies[mailbox])
            if box.settled and mailbox in state.draining:
                state.draining.discard(mailbox)
                self._start(mailbox, box)
            elif box.settled:
                state.done.add(mailbox)
        return page

    def _start(self, mailbox: str, box: _Box) -> None:
        box.link = self._start_link(mailbox)
        box.settled = False
        box.window_start = self.window.first_day.isoformat()
        box.window_end = self.window.last_day.isoformat()

    def _fetch(self, links: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        """The delta page behind each mailbox's link: one GET, or a batch for several."""
        if len(links) == 1:
            [(mailbox, link)] = links
            with _expiry_of(mailbox):
                body = self.graph.get(link, f"the calendar of {mailbox}", self._prefer())
            return {mailbox: body if isinstance(body, dict) else {}}
        answers = self.graph.batch(
            [(m, link, f"the calendar of {m}") for m, link in links], self._prefer()
        )
        bodies = {}
        for mailbox, _ in links:
            answer = answers.get(mailbox)
            if answer is None:
                raise TransientError(self.source_id, f"$batch answered nothing for {mailbox}")
            with _expiry_of(mailbox):
                self.graph.check(answer, f"the calendar of {mailbox}")
            bodies[mailbox] = answer.body if isinstance(answer.body, dict) else {}
        return bodies

    def _advance(self, box: _Box, body: Mapping[str, Any]) -> None:
        if isinstance(body.get("@odata.nextLink"), str):
            box.link, box.settled = body["@odata.nextLink"], False
        elif isinstance(body.get("@odata.deltaLink"), str):
            box.link, box.settled = body["@odata.deltaLink"], True
        else:
            raise TransientError(self.source_id, "Graph answered a delta page without a link")

    def _page(self, page: _Page, boxes: Mapping[str, _Box]) -> SyncPage:
        records, gone, bad = self._bound.apply(page.records)
        return SyncPage(
            records=tuple(records),
            deleted=(*page.deleted, *gone),
            cursor=self._cursor(boxes),
            errors=(*page.errors, *bad),
        )

    # -- items --------------------------------------------------------------------------

    def _collect(self, mailbox: str, box: _Box, body: Mapping[str, Any], page: _Page) -> None:
        items = [i for i in body.get("value", []) if isinstance(i, dict)]
        thin = [i for i in items if "@removed" not in i and not all(f in i for f in _FULL_FIELDS)]
        completed = self._complete(mailbox, thin) if thin else {}
        for item in items:
            provider_id = f"{mailbox}/{item.get('id', '')}"
            full = None if "@removed" in item else completed.get(str(item.get("id", "")), item)
            if full is None:  # removed, or a thin occurrence that is gone by now
                page.deleted.append(provider_id)
            elif full.get("type") != "seriesMaster":  # calendarView yields the instances
                self._read(mailbox, box, full, page)

    def _read(self, mailbox: str, box: _Box, item: Mapping[str, Any], page: _Page) -> None:
        """Add one event to ``page``: its record when in the window, or why it is not."""
        provider_id = f"{mailbox}/{item.get('id', '')}"
        try:
            record, warning = self._record(mailbox, box, item)
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # a bad shape too
            message = f"unreadable event ({describe(error)})"
            log.warning(
                "graph_item_rejected", source=self.source_id, item=provider_id, error=message
            )
            page.errors.append(ItemError(item=provider_id, message=message))
            return
        if warning is not None:
            log.warning(
                "graph_zone_fallback", source=self.source_id, item=provider_id, warning=warning
            )
            page.errors.append(ItemError(item=provider_id, message=warning))
        if record.end > self.window.start and record.start < self.window.end:
            page.records.append(record)  # outside the window: not ours to store

    def _complete(
        self, mailbox: str, thin: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """Full bodies of thin delta occurrences, batched 4 at a time (per-mailbox limit)."""
        done: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(thin), PER_MAILBOX_CONCURRENCY):
            chunk = {
                str(item["id"]): item for item in thin[start : start + PER_MAILBOX_CONCURRENCY]
            }
            answers = self.graph.batch(
                [
                    (
                        event_id,
                        f"/users/{quote(mailbox)}/events/{quote(event_id, safe='')}",
                        f"event {event_id} of {mailbox}",
                    )
                    for event_id in chunk
                ],
                self._prefer(),
            )
            for event_id, answer in answers.items():
                if answer.status == 404:
                    done[event_id] = None
                    continue
                self.graph.check(answer, f"event {event_id} of {mailbox}")
                body = answer.body if isinstance(answer.body, dict) else {}
                # The delta's times are those of this instance: keep them.
                times: dict[str, Any] = {
                    k: chunk[event_id][k] for k in ("start", "end") if k in chunk[event_id]
                }
                done[event_id] = {**body, **times}
        return done

    def _mailbox_zone(self, mailbox: str, box: _Box) -> str:
        """The mailbox's own zone for names we cannot map: looked up once, kept in the cursor.

        MailboxSettings.Read is not among the least privileges we ask for: when it is
        refused, the config's ``timezone`` stands in (and is remembered as the answer).
        """
        if box.zone is not None:
            return box.zone
        try:
            body = self.graph.get(
                f"/users/{quote(mailbox)}/mailboxSettings/timeZone",
                f"the settings of {mailbox}",
            )
        except TransientError as error:  # ask again next time
            self._zone_unknown(mailbox, error.message)
            return self.default_zone
        except AuthError as error:
            self._zone_unknown(mailbox, error.message)
            box.zone = self.default_zone
            return box.zone
        value = body.get("value") if isinstance(body, dict) else None
        box.zone = _iana(str(value) if value else None, self.default_zone).zone
        return box.zone

    def _zone_unknown(self, mailbox: str, error: str) -> None:
        log.info("graph_mailbox_zone_unknown", source=self.source_id, mailbox=mailbox, error=error)

    def _zone(self, mailbox: str, box: _Box, item: Mapping[str, Any]) -> tuple[str, str | None]:
        """The event's zone, and a warning when its Windows name had to be guessed."""
        zone_name = item.get("originalStartTimeZone")
        mapping = _iana(str(zone_name) if zone_name else None, "\0")
        if mapping.warning is None:
            return mapping.zone, None
        zone = self._mailbox_zone(mailbox, box)
        return zone, mapping.warning.replace("\0", zone)

    def _record(
        self, mailbox: str, box: _Box, item: Mapping[str, Any]
    ) -> tuple[EventRecord, str | None]:
        zone, warning = self._zone(mailbox, box, item)
        organizer = _address(item.get("organizer"))
        original = item.get("originalStart")
        meeting = item.get("onlineMeeting") or {}
        join_url = meeting.get("joinUrl") if isinstance(meeting, dict) else None
        updated = item.get("lastModifiedDateTime")
        record = EventRecord(
            source_id=self.source_id,
            provider_id=f"{mailbox}/{item['id']}",
            ical_uid=str(item["iCalUId"]),
            start=_graph_time(item["start"], zone),
            end=_graph_time(item["end"], zone),
            series_id=str(item["seriesMasterId"]) if item.get("seriesMasterId") else None,
            original_start=utc_from_iso(original) if original else None,
            all_day=bool(item.get("isAllDay")),
            zone=zone,
            status=EventStatus.CANCELLED if item.get("isCancelled") else EventStatus.CONFIRMED,
            organizer=organizer,
            attendees=_attendees(mailbox, organizer, item),
            calendar_owner=mailbox,
            categories=tuple(str(c) for c in item.get("categories") or ()),
            conference_id=str(join_url) if join_url else (item.get("onlineMeetingUrl") or None),
            title=item.get("subject"),
            updated=utc_from_iso(updated) if updated else None,
            etag=item.get("@odata.etag") or item.get("changeKey"),
        )
        return record, warning

    # -- attendance ---------------------------------------------------------------------

    def attendance_evidence(self, record: EventRecord) -> list[AttendanceEvidence]:
        """Teams attendance of one occurrence (see :mod:`.teams`); off unless
        ``attendance: true``."""
        if not self.source.attendance:
            return []
        return teams.attendance_evidence(self.graph, record)


def _attendees(
    mailbox: str, organizer: str | None, item: Mapping[str, Any]
) -> tuple[Attendee, ...]:
    """The attendees of an event; the mailbox's own copy speaks for its owner's answer."""
    attendees: dict[str, Attendee] = {}
    for entry in item.get("attendees") or []:
        email = _address(entry)
        if not email:
            continue
        kind = str(entry.get("type", "")).lower()
        attendees[email] = Attendee(
            email=email,
            response=_response((entry.get("status") or {}).get("response"))
            or Response.NEEDS_ACTION,
            optional=kind == "optional",
            is_resource=kind == "resource",
        )
    owner_response = _response((item.get("responseStatus") or {}).get("response"))
    if mailbox != organizer and owner_response is not None:
        previous = attendees.get(mailbox)
        attendees[mailbox] = Attendee(
            email=mailbox,
            response=owner_response,
            optional=previous.optional if previous else False,
        )
    return tuple(attendees.values())


def _iana(name: str | None, fallback: str) -> ZoneMapping:
    """The one use of the Windows → IANA mapper in this package."""
    return to_iana(name, fallback=fallback)


def _address(value: object) -> str | None:
    if isinstance(value, Mapping):
        inner = value.get("emailAddress")
        if isinstance(inner, Mapping) and inner.get("address"):
            return str(inner["address"]).strip().lower()
    return None


def _response(value: object) -> Response | None:
    if value is None:
        return None
    return _RESPONSES.get(str(value).lower(), Response.NEEDS_ACTION)


def _graph_time(value: Mapping[str, Any], zone: str) -> datetime:
    """A dateTimeTimeZone: local time in ``timeZone`` (UTC, as we ask for with Prefer)."""
    local = utc_from_iso(str(value["dateTime"])).replace(tzinfo=None)
    name = str(value.get("timeZone") or "UTC")
    return local.replace(tzinfo=ZoneInfo(_iana(name, zone).zone)).astimezone(UTC)


@contextmanager
def _expiry_of(mailbox: str) -> Iterator[None]:
    """A rejected delta link concerns this mailbox only: say which, so that only its
    calendar is read again."""
    try:
        yield
    except CursorExpired as expired:
        if expired.calendar is not None:
            raise
        raise CursorExpired(expired.source_id, expired.message, calendar=mailbox) from None

"""The CalDAV connector (``kind: caldav``): calendars on a CalDAV server, polled incrementally.

Each calendar object resource (one ``.ics`` on the server) is one *scope*: its records
replace what was stored under it (objects are grouped into pages sized by work,
connectors/base.PageGroup), so a modified series, a moved or cancelled
occurrence and a deleted object need no per-occurrence diff. Parsing and recurrence
expansion are :func:`mentorpulse.connectors.ics.records_from_ical`'s, over our own window
(the server's expansion is not relied upon).

Per calendar the cursor holds the RFC 6578 sync-token, or, where the server has no
``sync-collection``, the CTag and every object's ETag, so only changed objects are
downloaded. Pages in the middle of a calendar carry no cursor (the stored one stays);
the calendar's last page carries the new one, so a crash re-reads a calendar from its
previous token and stores the same records again, which is harmless.

The expansion window moves once a day; then every object of the calendar is downloaded
and expanded again (after the incremental report, so deletions are not missed). A
calendar that is no longer listed is dropped from the cursor, but what it gave is left
stored: a vanished calendar is more often a sharing glitch than a deletion.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import structlog

from mentorpulse.config.schema import CaldavCalendar, CaldavSource
from mentorpulse.connectors.base import (
    ConnectorError,
    CursorExpired,
    PageGroup,
    TransientError,
    Window,
    cursor_entries,
    describe,
    status_error,
)
from mentorpulse.connectors.http import (
    BoundedClient,
    FetchError,
    FetchTimeout,
    Refused,
    TooLarge,
    safe_url,
)
from mentorpulse.errors import code_trace, unexpected_summary
from mentorpulse.model import ItemError, SyncPage

if TYPE_CHECKING:
    from caldav.collection import Calendar
    from caldav.davclient import DAVClient

log = structlog.get_logger(__name__)

CURSOR_VERSION = 1
MULTIGET_BATCH = 100  # objects per calendar-multiget REPORT
PROGRESS_EVERY = 5.0  # seconds between progress log lines of a long sync
_URL_SAFE = ":/@%?#=&+~!$'()*,;"  # characters of a URL left as they are when quoting


T = TypeVar("T")


def _done(value: T | Coroutine[Any, Any, T]) -> T:
    """The library types every call as sync-or-async; our client is the sync one."""
    assert not isinstance(value, Coroutine)
    return value


def _url(handle: Calendar) -> Any:
    assert handle.url is not None  # a calendar object is always made with its URL
    return handle.url


class _BatchFailed(Exception):
    """The server failed a multiget with an internal error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Unsupported(Exception):
    """The server has no usable ``sync-collection`` on this calendar."""


@dataclass(frozen=True, slots=True)
class _Calendar:
    handle: Calendar
    key: str  # the calendar's path: its name in the cursor and in messages
    owner: str | None


@dataclass(slots=True)
class _Changes:
    changed: list[str]  # object paths to download
    deleted: list[str]  # object paths gone from the calendar
    entry: dict[str, object]  # the calendar's cursor entry once they are stored


def _calendar_url(server: str, configured: str | None) -> str | None:
    """A configured calendar URL joined to the server's as the caldav library joins it (a
    relative path is appended to the server's path); None where the library decides."""
    if configured is None:
        return None
    base = urlsplit(server)
    target = urlsplit(quote(configured, safe=_URL_SAFE))
    if base.username or base.password or target.fragment:
        return None
    if (target.scheme or target.netloc) and (target.scheme, target.netloc) != (
        base.scheme,
        base.netloc,
    ):
        return None
    if target.path.startswith("/"):
        path = target.path
    else:
        path = base.path + ("" if base.path.endswith("/") else "/") + target.path
    return urlunsplit((base.scheme, base.netloc, path, target.query, ""))


def _path(url: object) -> str:
    """An object's or calendar's identity: its unquoted URL path."""
    return unquote(urlsplit(str(url)).path)


class CaldavConnector:
    """Reads a :class:`CaldavSource`; see the module docstring for the cursor's contract."""

    def __init__(
        self,
        source: CaldavSource,
        *,
        now: datetime,
        default_zone: str = "UTC",
        client: DAVClient | None = None,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.source = source
        self.source_id = source.id
        self.default_zone = default_zone
        self.window = Window.around(now, source.window_past, source.window_future)
        self.server = safe_url(source.url)  # the URL fit for logs and messages
        self._client = client

    # -- the client and its errors ---------------------------------------------------

    def _connect(self) -> DAVClient:
        if self._client is None:
            from mentorpulse.connectors.caldav_client import dav_client

            self._client = dav_client(self.source)
        return self._client

    def _fail(self, exc: Exception, doing: str, calendar: str | None = None) -> NoReturn:
        """Raise the typed error for a failed request. Library messages are not quoted:
        they may carry response bodies or URLs, and a URL may carry credentials."""
        from caldav.elements import dav
        from caldav.lib import error as dav_error
        from caldav.lib.http_sync import requests as http

        if isinstance(exc, ConnectorError):
            raise exc
        if isinstance(exc, FetchError):
            raise TransientError(self.source_id, self._fetch_failure(exc, doing)) from None
        if isinstance(exc, dav_error.DAVError):
            status = exc.status
            if dav.ValidSyncToken.tag in exc.preconditions:
                raise CursorExpired(
                    self.source_id,
                    f"{self.server} rejected the sync-token while {doing}",
                    calendar,  # this calendar's only: the others' tokens stand
                ) from None
            if isinstance(exc, dav_error.RateLimitError):
                raise TransientError(
                    self.source_id,
                    f"{self.server} asked us to slow down (HTTP {status}) while {doing}",
                    retry_after=exc.retry_after_seconds,
                ) from None
            if status is None and isinstance(exc, dav_error.AuthorizationError):
                status = 401
            what = f"HTTP {status}" if status else type(exc).__name__
            error = status_error(
                self.source_id,
                status or 500,  # the library could not tell: a failed server
                f"{self.server} failed ({what}) while {doing}",
                refused=f"{self.server} refused user {self.source.username!r} (HTTP {status}) "
                f"while {doing}; check the username, the password or app password, "
                "and that the account may read the calendar",
            )
            raise error or TransientError(
                self.source_id, f"{self.server} failed ({what}) while {doing}"
            ) from None
        if isinstance(exc, http.exceptions.Timeout):
            raise TransientError(self.source_id, f"{self.server} timed out while {doing}") from None
        if isinstance(exc, http.exceptions.RequestException | OSError):
            raise TransientError(
                self.source_id, f"cannot reach {self.server} ({type(exc).__name__}) while {doing}"
            ) from None
        # Not CalDAV at all (a login page, a redirect elsewhere): the library trips over it.
        log.warning(
            "caldav_unexpected_answer", source=self.source_id, doing=doing, error=type(exc).__name__
        )
        raise TransientError(
            self.source_id,
            f"{self.server} did not answer as a CalDAV server ({type(exc).__name__}) while "
            f"{doing}; check the url",
        ) from None

    def _fetch_failure(self, exc: FetchError, doing: str) -> str:
        """What failed (no credentials, nothing the server sent) and what to change."""
        if isinstance(exc, FetchTimeout):
            seconds = self.source.timeout.total_seconds()
            return (
                f"{self.server} timed out while {doing} (no complete answer within "
                f"{seconds:g} s); raise timeout for this source if the server is only slow"
            )
        if isinstance(exc, TooLarge):
            return (
                f"{exc} while {doing}; raise max_bytes for this source if its answers are "
                "really that large"
            )
        if isinstance(exc, Refused):
            return f"{exc} while {doing}; check the url"
        if exc.cause:
            return f"cannot reach {self.server} ({exc.cause}) while {doing}"
        return f"{exc} while {doing}"

    # -- calendars --------------------------------------------------------------------

    def _default_owner(self) -> str | None:
        if self.source.owner:
            return self.source.owner.lower()
        name = self.source.username.strip().lower()
        return name if "@" in name else None

    def _calendars(self, client: DAVClient) -> list[_Calendar]:
        """The configured calendars, or every calendar of the principal."""
        wanted = self.source.calendars
        by_url = [c for c in wanted if c.url is not None]
        by_name = [c for c in wanted if c.name is not None]
        found: list[_Calendar] = []
        try:
            found.extend(self._by_url(client, config) for config in by_url)
            if by_name or not wanted:
                found.extend(self._listed(client, by_name, every=not wanted))
        except Exception as exc:  # the library raises all kinds on a non-CalDAV answer
            self._fail(exc, "finding the calendars")
        if not found:
            # Nothing to read is never what was meant: a wrong URL, or an account without
            # calendars. Not an empty calendar to mirror.
            raise TransientError(
                self.source_id,
                f"{self.server} lists no calendars for user {self.source.username!r}; check "
                "the url, or list the calendars to read",
            )
        unique: dict[str, _Calendar] = {}
        for calendar in found:  # listed by URL and by name too: read it once
            unique.setdefault(calendar.key, calendar)
        return list(unique.values())

    def _by_url(self, client: DAVClient, config: CaldavCalendar) -> _Calendar:
        assert config.url is not None
        # Written as a person would (spaces, @): the library wants it quoted.
        url = client.url.join(quote(config.url, safe=_URL_SAFE))
        handle = client.calendar(url=url)  # type: ignore[no-untyped-call]
        return self._calendar(handle, config)

    def _listed(
        self, client: DAVClient, by_name: list[CaldavCalendar], *, every: bool
    ) -> list[_Calendar]:
        """The principal's calendars: ``every`` one, then those ``by_name`` asks for."""
        principal = client.principal()  # type: ignore[no-untyped-call]
        listed = list(principal.calendars())
        found = [self._calendar(handle, None) for handle in listed] if every else []
        names: dict[str | None, Calendar] = {}
        for handle in listed if by_name else []:
            names.setdefault(handle.get_display_name(), handle)
        for config in by_name:
            if config.name not in names:
                known = ", ".join(sorted(repr(n) for n in names if n)) or "none"
                raise TransientError(
                    self.source_id,
                    f"{self.server} has no calendar named {config.name!r} for user "
                    f"{self.source.username!r} (its calendars: {known})",
                )
            found.append(self._calendar(names[config.name], config))
        return found

    def _calendar(self, handle: Calendar, config: CaldavCalendar | None) -> _Calendar:
        owner = config.owner.lower() if config is not None and config.owner else None
        return _Calendar(handle, _path(handle.url), owner or self._default_owner())

    # -- the unchanged check, without the library --------------------------------------

    def _unchanged(self, entries: Mapping[str, Mapping[str, object]]) -> bool:
        """Whether every configured calendar answers its stored sync-token with an empty
        sync-collection REPORT, asked through our own client: the common no-change run
        then never loads the caldav library. Calendars found by name or listing, digest
        auth, an injected client, a calendar without a token or in a moved window, and any
        other answer are left to the library, which asks again."""
        calendars = self.source.calendars
        if (
            self._client is not None
            or self.source.auth != "basic"
            or self.source.sync == "etag"
            or not calendars
            or not (self.source.username + self.source.password.get_secret_value()).isascii()
        ):
            return False
        found = [_calendar_url(self.source.url, c.url) for c in calendars]
        urls = sorted({url for url in found if url is not None})
        tokens = {_path(url): entries.get(_path(url), {}).get("sync_token") for url in urls}
        if None in found or set(tokens) != set(entries):  # a calendar new, gone or by name
            return False
        if not all(
            isinstance(t, str) and self.window.matches(entries[k]) for k, t in tokens.items()
        ):
            return False
        with BoundedClient(
            self.source.url,
            timeout=self.source.timeout.total_seconds(),
            max_bytes=self.source.max_bytes,
            verify=self.source.verify_tls,
        ) as client:
            for url in urls:
                if not self._token_current(client, url, str(tokens[_path(url)])):
                    return False
        for key in sorted(tokens):
            log.debug("caldav_calendar_unchanged", source=self.source_id, calendar=key)
        return True

    def _token_current(self, client: BoundedClient, url: str, token: str) -> bool:
        """One sync-collection REPORT (RFC 6578) for what changed since ``token``: True
        when the server lists nothing and keeps the token. A failed request is the error
        the library's would have been."""
        from lxml import etree  # as the library writes and parses; ~0.015 s

        login = f"{self.source.username}:{self.source.password.get_secret_value()}"
        headers = {
            "Authorization": "Basic " + base64.b64encode(login.encode()).decode(),
            "Content-Type": "text/xml",
            "Depth": "1",
        }
        query = etree.Element("{DAV:}sync-collection", nsmap={"D": "DAV:"})
        etree.SubElement(query, "{DAV:}sync-token").text = token
        etree.SubElement(query, "{DAV:}sync-level").text = "1"
        etree.SubElement(etree.SubElement(query, "{DAV:}prop"), "{DAV:}getetag")
        body = etree.tostring(query, encoding="utf-8", xml_declaration=True)
        try:
            answer = client.request("REPORT", url, headers=headers, body=body)
        except FetchError as exc:
            self._fail(exc, f"syncing {_path(url)}")
        if answer.status != 207:
            return False
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        try:
            root = etree.fromstring(answer.content, parser)
        except etree.XMLSyntaxError:
            return False
        return (
            root.tag == "{DAV:}multistatus"
            and root.find("{DAV:}response") is None
            and root.findtext("{DAV:}sync-token") == token
        )

    # -- cursor -----------------------------------------------------------------------

    def _entries(self, cursor: Mapping[str, object] | None) -> dict[str, dict[str, object]]:
        return cursor_entries(cursor, CURSOR_VERSION, "calendars")

    def _cursor(self, entries: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
        return {
            "version": CURSOR_VERSION,
            "calendars": {key: dict(entry) for key, entry in sorted(entries.items())},
        }

    def _entry(self, **values: object) -> dict[str, object]:
        return {
            **self.window.stamp(),
            **{k: v for k, v in values.items() if v is not None},
        }

    # -- sync -------------------------------------------------------------------------

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        """Per calendar: its changed and deleted objects, then its new cursor entry."""
        entries = self._entries(cursor)
        if self._unchanged(entries):
            return
        owned = self._client is None
        client = self._connect()
        try:
            calendars = self._calendars(client)
            seen = {calendar.key for calendar in calendars}
            pruned = False
            for gone in sorted(set(entries) - seen):
                # Unlisted, renamed, or a server glitch: stop polling it, delete nothing.
                log.warning("caldav_calendar_gone", source=self.source_id, calendar=gone)
                del entries[gone]
                pruned = True
            for calendar in calendars:
                for page in self._sync_calendar(calendar, entries):
                    pruned = pruned and page.cursor is None
                    yield page
            if pruned:  # no later page carried the shorter cursor
                yield SyncPage(cursor=self._cursor(entries))
        finally:
            if owned:  # a client we made is closed with its connections
                client.close()
                self._client = None

    def _sync_calendar(
        self, calendar: _Calendar, entries: dict[str, dict[str, object]]
    ) -> Iterator[SyncPage]:
        entry = entries.get(calendar.key)
        if entry is not None and not self.window.matches(entry):
            # The window moved: every object must be expanded again, changed or not.
            log.info("caldav_window_moved", source=self.source_id, calendar=calendar.key)
        changes = self._changes(calendar, entry)
        if changes is None:
            log.debug("caldav_calendar_unchanged", source=self.source_id, calendar=calendar.key)
            return
        # Objects grouped into pages sized by work; only the last carries the calendar's
        # new entry, so a crash inside the calendar reads it again from the old one (its
        # pages replace their objects: reading one twice stores it once).
        group = PageGroup()
        deletions = (SyncPage(replaces_scopes=(path,)) for path in changes.deleted)
        for page in itertools.chain(deletions, self._download(calendar, changes.changed)):
            if not group.fits(page):
                yield group.page()
            group.add(page)
        entries[calendar.key] = changes.entry
        log.info(
            "caldav_calendar_synced",
            source=self.source_id,
            calendar=calendar.key,
            changed=len(changes.changed),
            deleted=len(changes.deleted),
        )
        yield group.page(cursor=self._cursor(entries))

    def _changes(self, calendar: _Calendar, entry: dict[str, object] | None) -> _Changes | None:
        """What to download and delete; ``None`` when the calendar is unchanged."""
        method = self.source.sync
        if method != "etag" and (entry is None or "sync_token" in entry or method != "auto"):
            try:
                return self._changes_by_token(calendar, entry)
            except _Unsupported:
                if method == "sync-token":
                    raise TransientError(
                        self.source_id,
                        f"{self.server} does not support sync-collection on {calendar.key}; "
                        "set sync: etag (or auto) for this source",
                    ) from None
                log.info("caldav_no_sync_collection", source=self.source_id, calendar=calendar.key)
        return self._changes_by_etag(calendar, entry)

    def _report(self, calendar: _Calendar, token: str | None) -> tuple[list[str], list[str], str]:
        """One ``sync-collection`` REPORT (the library follows truncated replies)."""
        from caldav.elements import dav
        from caldav.lib import error as dav_error

        try:
            result = _done(
                calendar.handle.get_objects_by_sync_token(
                    token, load_objects=False, disable_fallback=True
                )
            )
        except Exception as exc:  # the library raises all kinds on a non-CalDAV answer
            unsupported = (
                isinstance(exc, dav_error.DAVError)
                and dav.ValidSyncToken.tag not in exc.preconditions
                and not isinstance(exc, dav_error.RateLimitError)
                and (
                    exc.status in (400, 405, 415, 501)
                    or dav.SupportedReport.tag in exc.preconditions
                )
            )
            if unsupported:
                raise _Unsupported from None
            self._fail(exc, f"syncing {calendar.key}", calendar.key)
        if not result.sync_token:
            raise _Unsupported
        deleted = {_path(url) for url in result.deleted_urls}
        changed = sorted({_path(o.url) for o in result} - deleted - {calendar.key})
        return changed, sorted(deleted), str(result.sync_token)

    def _changes_by_token(
        self, calendar: _Calendar, entry: dict[str, object] | None
    ) -> _Changes | None:
        old = entry.get("sync_token") if entry is not None else None
        if isinstance(old, str):
            changed, deleted, token = self._report(calendar, old)
            if not changed and not deleted and token == old and self.window.matches(entry or {}):
                return None  # unchanged
            if not self.window.matches(entry or {}):
                changed, _, token = self._report(calendar, None)  # everything, re-expanded
        else:
            changed, deleted, token = self._report(calendar, None)
        return _Changes(changed, deleted, self._entry(sync_token=token))

    def _changes_by_etag(
        self, calendar: _Calendar, entry: dict[str, object] | None
    ) -> _Changes | None:
        from caldav.elements import dav

        listed = self._etag_listing(calendar, entry)
        if listed is None:
            return None  # unchanged
        ctag, listing = listed
        etags = {
            _path(_url(calendar.handle).join(href)): str(values.get(dav.GetEtag.tag) or "")
            for href, values in listing.items()
        }
        etags.pop(calendar.key, None)  # the calendar itself answers a depth-1 PROPFIND
        stored = entry.get("etags") if entry is not None else None
        old = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, Mapping) else {}
        same_window = entry is not None and self.window.matches(entry)
        changed = sorted(p for p, e in etags.items() if not same_window or old.get(p) != e or not e)
        deleted = sorted(set(old) - set(etags))
        return _Changes(
            changed, deleted, self._entry(ctag=str(ctag) if ctag else None, etags=etags)
        )

    def _etag_listing(
        self, calendar: _Calendar, entry: dict[str, object] | None
    ) -> tuple[object, dict[str, dict[str, Any]]] | None:
        """The calendar's ctag and every object's etag; None when the ctag says unchanged."""
        from caldav.elements import dav

        from mentorpulse.connectors.caldav_client import GetCtag

        try:
            props = _done(calendar.handle.get_properties([GetCtag()]))
            ctag = props.get(GetCtag.tag)
            if (
                entry is not None
                and self.window.matches(entry)
                and ctag
                and entry.get("ctag") == str(ctag)
            ):
                return None
            response = _done(
                calendar.handle.get_properties([dav.GetEtag()], depth=1, parse_response_xml=False)
            )
            listing: dict[str, dict[str, Any]] = response.expand_simple_props([dav.GetEtag()])
        except Exception as exc:  # the library raises all kinds on a non-CalDAV answer
            self._fail(exc, f"listing {calendar.key}")
        return ctag, listing

    # -- downloading and parsing ------------------------------------------------------

    def _download(self, calendar: _Calendar, paths: list[str]) -> Iterator[SyncPage]:
        """One page per object (the caller groups them), fetched in calendar-multiget batches."""
        total = len(paths)
        started = last_report = time.monotonic()
        for offset in range(0, total, MULTIGET_BATCH):
            batch = paths[offset : offset + MULTIGET_BATCH]
            bodies, broken = self._multiget(calendar, batch)
            for path in batch:
                data = bodies.get(path)
                if path in broken:  # keep what an earlier version of it gave
                    yield SyncPage(errors=(broken[path],))
                elif data is None:  # listed as changed, gone by now: deleted meanwhile
                    yield SyncPage(replaces_scopes=(path,))
                else:
                    yield self._page(calendar, path, data)
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY and offset + len(batch) < total:
                last_report = now
                log.info(
                    "caldav_sync_progress",
                    source=self.source_id,
                    calendar=calendar.key,
                    done=offset + len(batch),
                    total=total,
                    seconds=round(now - started, 1),
                )

    def _multiget(
        self, calendar: _Calendar, paths: list[str]
    ) -> tuple[dict[str, bytes], dict[str, ItemError]]:
        """The bodies of ``paths`` (a missing one was deleted meanwhile).

        A server that fails a whole batch (Xandikos does on some malformed objects) is
        asked again object by object, so one bad object costs only itself.
        """
        try:
            return self._report_bodies(calendar, paths), {}
        except _BatchFailed as failed:
            if len(paths) == 1:
                raise TransientError(
                    self.source_id,
                    f"{self.server} failed (HTTP {failed.status}) while downloading {paths[0]}",
                ) from None
        bodies: dict[str, bytes] = {}
        broken: dict[str, ItemError] = {}
        for path in paths:
            try:
                bodies.update(self._report_bodies(calendar, [path]))
            except _BatchFailed as failed:
                message = f"the server could not return this object (HTTP {failed.status})"
                log.warning("caldav_item_rejected", source=self.source_id, item=path, error=message)
                broken[path] = ItemError(item=path, message=message)
        if len(broken) == len(paths):
            raise TransientError(
                self.source_id, f"{self.server} failed every download from {calendar.key}"
            )
        return bodies, broken

    def _report_bodies(self, calendar: _Calendar, paths: list[str]) -> dict[str, bytes]:
        """One calendar-multiget REPORT for calendar data and ETags (RFC 4791 7.9)."""
        from caldav.elements import cdav, dav
        from caldav.lib import error as dav_error
        from lxml import etree

        url = _url(calendar.handle)
        query = (
            cdav.CalendarMultiGet()
            + (dav.Prop() + [cdav.CalendarData(), dav.GetEtag()])
            + [dav.Href(value=quote(path)) for path in paths]
        )
        body = etree.tostring(query.xmlelement(), encoding="utf-8", xml_declaration=True)
        try:
            response = self._connect().report(str(url), body.decode(), depth=1)
        except Exception as exc:  # the library raises all kinds on a non-CalDAV answer
            self._fail(exc, f"downloading objects of {calendar.key}")
        if response.status >= 500 and response.status not in (502, 503, 504):
            raise _BatchFailed(response.status)
        if response.status >= 400:
            self._fail(
                dav_error.ReportError(reason="multiget", status=response.status),
                f"downloading objects of {calendar.key}",
            )
        found = response.expand_simple_props([cdav.CalendarData()])
        bodies: dict[str, bytes] = {}
        for href, props in found.items():
            data = props.get(cdav.CalendarData.tag)
            if data:
                bodies[_path(url.join(href))] = data.encode() if isinstance(data, str) else data
        return bodies

    def _page(self, calendar: _Calendar, path: str, data: bytes) -> SyncPage:
        from mentorpulse.connectors.ics import IcsParseError, records_from_ical

        try:
            records, errors = records_from_ical(
                data,
                source_id=self.source_id,
                scope=path,
                window=self.window,
                calendar_owner=calendar.owner,
                default_zone=self.default_zone,
            )
        except IcsParseError as exc:
            message = str(exc)
        except Exception as exc:  # a bug of ours or the library's: one object, not the sync
            log.error(
                "caldav_object_failed",
                source=self.source_id,
                item=path,
                error=unexpected_summary(exc, "reading an object"),
                trace=code_trace(exc),
            )
            message = f"unexpected error ({describe(exc, 200)})"
        else:
            return SyncPage(
                records=tuple(records),
                replaces_scopes=(path,),
                errors=tuple(errors),
            )
        # Unparseable: report it, and keep whatever an earlier version of it gave.
        log.warning("caldav_item_rejected", source=self.source_id, item=path, error=message)
        return SyncPage(errors=(ItemError(item=path, message=message),))

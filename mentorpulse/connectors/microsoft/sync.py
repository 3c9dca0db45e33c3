"""The Microsoft 365 connector (``kind: microsoft``): Graph ``calendarView/delta`` per mailbox.

Sign-in is msal: client credentials (a secret or a certificate) for app-only access to
the listed mailboxes, or the refresh token that ``mentorpulse auth microsoft`` stored
encrypted. Graph itself is plain HTTP (httpx).

The cursor holds, per mailbox, the link to continue from: an ``@odata.nextLink`` while a
round is under way (so a crash resumes at the next page) or the ``@odata.deltaLink`` of
the finished round, plus the window the round was started with. Mailboxes are read
together in JSON ``$batch`` requests of up to 20, one sub-request per mailbox, so a
quiet organisation costs one request per 20 mailboxes. When the window must move, the
old round is drained first (so no deletion is missed) and a new round is started over
the new window; events that fell out of the back of the window are left alone (history).

A 410 Gone or ``syncStateNotFound`` raises :class:`CursorExpired`; 429/503 with
``Retry-After`` are waited out (briefly) and retried, per request and per sub-response
of a batch. At most one request per mailbox is in flight (4 when thin occurrences are
completed in a batch), within Graph's limit of 4 concurrent requests per mailbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx
import structlog

from mentorpulse.config.schema import MicrosoftSource, resolve_path
from mentorpulse.connectors.base import (
    AuthError,
    CursorExpired,
    SeriesBound,
    TransientError,
    Window,
    cursor_entries,
    describe,
    retry_after_seconds,
    rfc3339_utc,
    utc_from_iso,
)
from mentorpulse.connectors.http import (
    BoundedClient,
    BoundedTransport,
    BoundedTransportError,
    FetchError,
    FetchTimeout,
)
from mentorpulse.connectors.windows_zones import to_iana
from mentorpulse.model import (
    AttendanceEvidence,
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
)

log = structlog.get_logger(__name__)

CURSOR_VERSION = 1
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
BATCH_LIMIT = 20  # Graph's limit of requests per JSON batch
PER_MAILBOX_CONCURRENCY = 4  # Graph's limit of concurrent requests per mailbox
MAX_WAIT = 30.0  # longer Retry-After: give up this run, let the scheduler come back
MAX_ATTEMPTS = 4
_THROTTLED = frozenset({429, 503, 504})  # retried after Retry-After (or a backoff)
QUIET_BATCHES = 50  # unchanged batches between cursor writes (a crash redoes at most these)
_RESPONSES = {
    "accepted": Response.ACCEPTED,
    "organizer": Response.ACCEPTED,
    "declined": Response.DECLINED,
    "tentativelyaccepted": Response.TENTATIVE,
    "none": Response.NEEDS_ACTION,
    "notresponded": Response.NEEDS_ACTION,
}
_EXPIRED_CODES = {"syncstatenotfound", "syncstateinvalid", "resyncrequired"}
_FULL_FIELDS = ("iCalUId", "attendees", "organizer")


def delegated_scopes(source: MicrosoftSource) -> list[str]:
    """Least privilege for a signed-in user: their calendar (and shared ones they can read)."""
    scopes = ["Calendars.Read", "Calendars.Read.Shared"]
    if source.attendance:
        scopes += ["OnlineMeetings.Read", "OnlineMeetingArtifact.Read.All"]
    return scopes


def device_code_sign_in(
    source: MicrosoftSource, *, base_dir: Path, show: Callable[[str], None]
) -> str:
    """Sign a user in with a device code and store their refresh token, encrypted.

    ``show`` gets the instruction to open the verification page and enter the code.
    Returns the path of the token store. Failures are :class:`UserError` (one line).
    """
    import msal
    import requests

    from mentorpulse.credentials import TokenStore, require_key
    from mentorpulse.errors import UserError

    require_key()
    verify = _verify_for(source, base_dir)
    try:
        app = msal.PublicClientApplication(
            source.client_id,
            authority=f"{source.authority_host.rstrip('/')}/{source.tenant_id}",
            instance_discovery=False,
            verify=verify,
            http_client=_pinned_session(verify) if isinstance(verify, str) else None,
        )
        flow = app.initiate_device_flow(scopes=delegated_scopes(source))
        if "user_code" not in flow:
            raise UserError(
                f"source {source.id}: Microsoft refused the device-code sign-in: "
                f"{flow.get('error', 'unknown error')} (is 'Allow public client flows' on "
                "for the app registration?)"
            )
        show(str(flow["message"]))
        result = app.acquire_token_by_device_flow(flow)
    except requests.RequestException as error:
        raise UserError(
            f"source {source.id}: cannot reach {source.authority_host} ({type(error).__name__})"
        ) from None
    except ValueError as error:
        raise UserError(f"source {source.id}: sign-in failed ({type(error).__name__})") from None
    refresh = result.get("refresh_token") if isinstance(result, dict) else None
    if not refresh:
        raise UserError(
            f"source {source.id}: sign-in did not complete: {result.get('error', 'no token')}"
        )
    store = TokenStore(resolve_path(base_dir, source.token_store))
    store.save(token_name(source), str(refresh))
    log.info("graph_signed_in", source=source.id, token_store=str(store.path))
    return str(store.path)


def _verify_for(source: MicrosoftSource, base_dir: Path) -> str | bool:
    return str(resolve_path(base_dir, source.ca_bundle)) if source.ca_bundle is not None else True


def token_name(source: MicrosoftSource) -> str:
    """The name the device-code sign-in's refresh token is stored under."""
    return f"microsoft:{source.id}:{source.tenant_id}:{source.client_id}"


def _error_code(body: object) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("code") or "")
    return ""


@dataclass
class _Answer:
    """One Graph response (a top-level one or a sub-response of a batch)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def code(self) -> str:
        return _error_code(self.body)


@dataclass
class _Box:
    """Cursor entry of one mailbox."""

    link: str | None = None
    settled: bool = False  # link is a deltaLink (the round finished)
    window_start: str | None = None
    window_end: str | None = None
    zone: str | None = None  # the mailbox's own zone, once looked up

    def as_json(self) -> dict[str, object]:
        return {
            k: v
            for k, v in {
                "link": self.link,
                "settled": self.settled,
                "window_start": self.window_start,
                "window_end": self.window_end,
                "zone": self.zone,
            }.items()
            if v is not None
        }


@dataclass
class _Page:
    records: list[EventRecord] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)


class MicrosoftConnector:
    """Reads a :class:`MicrosoftSource`; see the module docstring for the cursor."""

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
        self._sleep = sleep
        self._verify = _verify_for(source, base_dir)
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._app: Any = None
        self.requests = 0  # HTTP requests sent to Graph (for the bench and the logs)
        self._bound = SeriesBound(None)

    def _path(self, value: str) -> Path:
        return resolve_path(self.base_dir, value)

    # -- sign-in ------------------------------------------------------------------------

    def _msal_app(self) -> Any:
        import msal

        authority = f"{self.source.authority_host.rstrip('/')}/{self.source.tenant_id}"
        common: dict[str, Any] = {
            "authority": authority,
            "instance_discovery": False,
            "verify": self._verify,
            "timeout": self._timeout,
        }
        # Sign-in requests get the bounds Graph requests get (msal's timeout is per read).
        common["http_client"] = _BoundedSignIn(
            BoundedClient(self.source.authority_host, timeout=self._timeout, verify=self._verify)
        )
        if self.source.auth == "device_code":
            return msal.PublicClientApplication(self.source.client_id, **common)
        credential: Any
        if self.source.client_secret is not None:
            credential = self.source.client_secret.get_secret_value()
        else:
            assert self.source.certificate_path is not None  # the schema demands one
            try:
                key = self._path(self.source.certificate_path).read_text(encoding="utf-8")
            except OSError as error:
                raise AuthError(
                    self.source_id,
                    f"cannot read certificate_path {self.source.certificate_path} "
                    f"({error.strerror})",
                ) from None
            credential = {"private_key": key, "thumbprint": self.source.certificate_thumbprint}
        return msal.ConfidentialClientApplication(
            self.source.client_id, client_credential=credential, **common
        )

    def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        import requests

        try:
            if self._app is None:
                self._app = self._msal_app()
            if self.source.auth == "device_code":
                result = self._delegated_token()
            else:
                result = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except requests.RequestException as error:
            raise TransientError(
                self.source_id,
                f"cannot reach the Microsoft sign-in service {self.source.authority_host} "
                f"({type(error).__name__})",
            ) from None
        except ValueError as error:  # msal: bad authority / OIDC metadata, bad key
            raise AuthError(
                self.source_id, f"Microsoft sign-in failed ({type(error).__name__})"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            code = result.get("error", "unknown") if isinstance(result, dict) else "unknown"
            description = str(result.get("error_description", "")) if result else ""
            first = description.split("\r\n")[0].split("\n")[0][:200]
            raise AuthError(
                self.source_id,
                f"Microsoft sign-in refused for client {self.source.client_id} in tenant "
                f"{self.source.tenant_id}: {code} {first}".rstrip(),
            )
        self._token = str(token)
        self._token_expires = time.monotonic() + max(60, int(result.get("expires_in", 3600)) - 300)
        return self._token

    def _delegated_token(self) -> dict[str, Any]:
        from mentorpulse.credentials import TokenStore
        from mentorpulse.errors import UserError

        store = TokenStore(self._path(self.source.token_store))
        try:
            refresh = store.load(token_name(self.source))
        except UserError as error:
            raise AuthError(self.source_id, error.message) from None
        if refresh is None:
            raise AuthError(
                self.source_id,
                f"nobody signed in yet: run `mentorpulse auth microsoft --source {self.source_id}`",
            )
        result: dict[str, Any] = self._app.acquire_token_by_refresh_token(
            refresh, scopes=delegated_scopes(self.source)
        )
        if result.get("refresh_token") and result["refresh_token"] != refresh:
            try:
                store.save(token_name(self.source), str(result["refresh_token"]))
            except UserError as error:
                log.warning("graph_token_not_saved", source=self.source_id, error=error.message)
        return result

    # -- HTTP ---------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            # One total deadline per request, a size cap, checked addresses (httpx's
            # timeouts apply per read).
            bounded = BoundedClient(self.graph_url, timeout=self._timeout, verify=self._verify)
            self._client = httpx.Client(
                transport=BoundedTransport(bounded), timeout=self._timeout, trust_env=False
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _url(self, link: str) -> str:
        return link if link.startswith("https://") else f"{self.graph_url}{link}"

    def _relative(self, link: str) -> str:
        """A Graph link as a batch sub-request URL (relative to the version root)."""
        if link.startswith(self.graph_url):
            return link[len(self.graph_url) :]
        parts = urlsplit(link)
        path = parts.path
        version = urlsplit(self.graph_url).path
        if path.startswith(version):
            path = path[len(version) :]
        return f"{path}?{parts.query}" if parts.query else path

    def _send(
        self, method: str, link: str, *, headers: Mapping[str, str], json_body: Any = None
    ) -> _Answer:
        url = self._url(link)
        try:
            response = self._http().request(
                method,
                url,
                headers={"Authorization": f"Bearer {self._access_token()}", **headers},
                json=json_body,
            )
        except httpx.TimeoutException:
            raise TransientError(self.source_id, "timed out talking to Microsoft Graph") from None
        except BoundedTransportError as error:  # too large, or an address refused
            raise TransientError(self.source_id, f"Microsoft Graph: {error}") from None
        except httpx.HTTPError as error:
            raise TransientError(
                self.source_id, f"cannot reach Microsoft Graph ({type(error).__name__})"
            ) from None
        self.requests += 1
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return _Answer(response.status_code, response.headers, body)

    def _check(self, answer: _Answer, what: str) -> None:
        """The one place where Graph statuses become the typed errors of the contract."""
        status = answer.status
        if 200 <= status < 300:
            return
        code = answer.code
        if status == 410 or code.lower() in _EXPIRED_CODES:
            raise CursorExpired(
                self.source_id, f"Graph no longer knows the sync state of {what} ({status} {code})"
            )
        if status in (401, 403):
            raise AuthError(
                self.source_id,
                f"Graph refused access to {what} (HTTP {status} {code}); check the app's "
                "permissions and its Exchange RBAC / application access policy scope",
            )
        if status == 404:
            raise TransientError(self.source_id, f"Graph does not know {what} (HTTP 404 {code})")
        raise TransientError(
            self.source_id,
            f"Graph answered HTTP {status} {code} for {what}",
            retry_after=self._retry_after(answer.headers),
        )

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        return retry_after_seconds(headers.get("Retry-After"), datetime.now(UTC))

    def _wait(self, retry_after: float | None, attempt: int, what: str) -> None:
        """Sleep before retrying a throttled request, or give up when the wait is long."""
        wait = retry_after if retry_after is not None else min(2.0**attempt, MAX_WAIT)
        if attempt + 1 >= MAX_ATTEMPTS or wait > MAX_WAIT:
            raise TransientError(
                self.source_id, f"Graph is throttling requests for {what}", retry_after=wait
            )
        log.info("graph_throttled", source=self.source_id, item=what, retry_after=wait)
        self._sleep(wait)

    def _get(
        self,
        link: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """GET with throttling retries; with ``missing_ok`` a 404 is None, not an error."""
        for attempt in range(MAX_ATTEMPTS):
            answer = self._send("GET", link, headers=headers or {})
            if answer.status in _THROTTLED:
                self._wait(self._retry_after(answer.headers), attempt, what)
                continue
            if missing_ok and answer.status == 404:
                return None
            self._check(answer, what)
            return answer.body
        raise AssertionError("unreachable: _wait raises on the last attempt")

    def _batch(self, requests: Sequence[tuple[str, str, str]]) -> dict[str, _Answer]:
        """GET ``(key, link, what)`` requests in JSON batches, retrying throttled ones.

        Returns each key's final answer; errors other than throttling are for the caller.
        """
        pending = {key: (link, what) for key, link, what in requests}
        answers: dict[str, _Answer] = {}
        for attempt in range(MAX_ATTEMPTS):
            throttled: list[float | None] = []
            keys = list(pending)
            for chunk_start in range(0, len(keys), BATCH_LIMIT):
                chunk = keys[chunk_start : chunk_start + BATCH_LIMIT]
                payload = {
                    "requests": [
                        {
                            "id": str(index),
                            "method": "GET",
                            "url": self._relative(pending[key][0]),
                            "headers": self._prefer(),
                        }
                        for index, key in enumerate(chunk)
                    ]
                }
                for sub_attempt in range(MAX_ATTEMPTS):
                    outer = self._send("POST", "/$batch", headers={}, json_body=payload)
                    if outer.status in _THROTTLED:
                        self._wait(self._retry_after(outer.headers), sub_attempt, "$batch")
                        continue
                    self._check(outer, "a $batch request")
                    break
                responses = outer.body.get("responses", []) if isinstance(outer.body, dict) else []
                for item in responses:
                    if not str(item.get("id", "")).isdigit() or int(item["id"]) >= len(chunk):
                        continue  # not one of ours: the key is then missing for the caller
                    key = chunk[int(item["id"])]
                    headers = httpx.Headers(  # case-insensitive, as HTTP headers are
                        {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
                    )
                    answer = _Answer(int(item["status"]), headers, item.get("body"))
                    if answer.status in _THROTTLED:
                        throttled.append(self._retry_after(headers))
                        continue
                    answers[key] = answer
                    del pending[key]
            if not pending:
                return answers
            waits = [w for w in throttled if w is not None]
            self._wait(max(waits) if waits else None, attempt, f"{len(pending)} mailboxes")
        raise AssertionError("unreachable: _wait raises on the last attempt")

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
                if box.settled:
                    box.settled = False  # its deltaLink is polled once more, to the end
            elif box.link is None:
                self._start(mailbox, box)
        done: set[str] = set()
        quiet = 0  # answers without changes since the cursor was last handed out
        try:
            while due := [m for m in boxes if m not in done]:
                for start in range(0, len(due), BATCH_LIMIT):
                    chunk = due[start : start + BATCH_LIMIT]
                    bodies = self._fetch([(m, boxes[m].link or "") for m in chunk])
                    page = _Page()
                    for mailbox in chunk:
                        box = boxes[mailbox]
                        self._collect(mailbox, box, bodies[mailbox], page)
                        self._advance(box, bodies[mailbox])
                        if box.settled and mailbox in draining:
                            draining.discard(mailbox)
                            self._start(mailbox, box)
                        elif box.settled:
                            done.add(mailbox)
                    # A quiet batch's new links need not be stored at once (the old ones
                    # stay valid and would return the same nothing): one cursor write per
                    # quiet poll instead of one per 20 mailboxes.
                    if page.records or page.deleted or page.errors or quiet >= QUIET_BATCHES:
                        quiet = 0
                        yield self._page(page, boxes)
                    else:
                        quiet += 1
            if quiet:
                yield self._page(_Page(), boxes)
        finally:
            self.close()
            log.info("graph_sync_done", source=self.source_id, requests=self.requests)

    def _start(self, mailbox: str, box: _Box) -> None:
        box.link = self._start_link(mailbox)
        box.settled = False
        box.window_start = self.window.first_day.isoformat()
        box.window_end = self.window.last_day.isoformat()

    def _fetch(self, links: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        """The delta page behind each mailbox's link: one GET, or a batch for several."""
        if len(links) == 1:
            [(mailbox, link)] = links
            body = self._get(link, f"the calendar of {mailbox}", self._prefer())
            return {mailbox: body if isinstance(body, dict) else {}}
        answers = self._batch([(m, link, f"the calendar of {m}") for m, link in links])
        bodies = {}
        for mailbox, _ in links:
            answer = answers.get(mailbox)
            if answer is None:
                raise TransientError(self.source_id, f"$batch answered nothing for {mailbox}")
            self._check(answer, f"the calendar of {mailbox}")
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
            event_id = str(item.get("id", ""))
            provider_id = f"{mailbox}/{event_id}"
            if "@removed" in item:
                page.deleted.append(provider_id)
                continue
            full = completed.get(event_id, item)
            if full is None:  # a thin occurrence that is gone by now
                page.deleted.append(provider_id)
                continue
            if full.get("type") == "seriesMaster":
                continue  # calendarView yields the instances; the master is not a meeting
            try:
                record, warning = self._record(mailbox, box, full)
            except (AttributeError, KeyError, TypeError, ValueError) as error:  # a bad shape too
                message = f"unreadable event ({describe(error)})"
                log.warning(
                    "graph_item_rejected", source=self.source_id, item=provider_id, error=message
                )
                page.errors.append(ItemError(item=provider_id, message=message))
                continue
            if warning is not None:
                log.warning(
                    "graph_zone_fallback", source=self.source_id, item=provider_id, warning=warning
                )
                page.errors.append(ItemError(item=provider_id, message=warning))
            if record.end <= self.window.start or record.start >= self.window.end:
                continue  # outside the window: not ours to store
            page.records.append(record)

    def _complete(
        self, mailbox: str, thin: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """Full bodies of thin delta occurrences, batched 4 at a time (per-mailbox limit)."""
        done: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(thin), PER_MAILBOX_CONCURRENCY):
            chunk = thin[start : start + PER_MAILBOX_CONCURRENCY]
            answers = self._batch(
                [
                    (
                        str(item["id"]),
                        f"/users/{quote(mailbox)}/events/{quote(str(item['id']), safe='')}",
                        f"event {item['id']} of {mailbox}",
                    )
                    for item in chunk
                ]
            )
            for event_id, answer in answers.items():
                if answer.status == 404:
                    done[event_id] = None
                    continue
                self._check(answer, f"event {event_id} of {mailbox}")
                body = answer.body if isinstance(answer.body, dict) else {}
                # The delta's times are those of this instance: keep them.
                thin_item = next(i for i in chunk if str(i["id"]) == event_id)
                done[event_id] = {
                    **body,
                    **{k: thin_item[k] for k in ("start", "end") if k in thin_item},
                }
        return done

    def _mailbox_zone(self, mailbox: str, box: _Box) -> str:
        """The mailbox's own zone for names we cannot map: looked up once, kept in the cursor.

        MailboxSettings.Read is not among the least privileges we ask for: when it is
        refused, the config's ``timezone`` stands in (and is remembered as the answer).
        """
        if box.zone is not None:
            return box.zone
        try:
            body = self._get(
                f"/users/{quote(mailbox)}/mailboxSettings/timeZone",
                f"the settings of {mailbox}",
            )
        except AuthError as error:
            log.info(
                "graph_mailbox_zone_unknown",
                source=self.source_id,
                mailbox=mailbox,
                error=error.message,
            )
            box.zone = self.default_zone
            return box.zone
        except TransientError as error:  # ask again next time
            log.info(
                "graph_mailbox_zone_unknown",
                source=self.source_id,
                mailbox=mailbox,
                error=error.message,
            )
            return self.default_zone
        value = body.get("value") if isinstance(body, dict) else None
        box.zone = to_iana(str(value) if value else None, fallback=self.default_zone).zone
        return box.zone

    def _record(
        self, mailbox: str, box: _Box, item: Mapping[str, Any]
    ) -> tuple[EventRecord, str | None]:
        zone_name = item.get("originalStartTimeZone")
        mapping = to_iana(str(zone_name) if zone_name else None, fallback="\0")
        warning = None
        zone = mapping.zone
        if mapping.warning is not None:
            zone = self._mailbox_zone(mailbox, box)
            warning = mapping.warning.replace("\0", zone)
        start = _graph_time(item["start"], zone)
        end = _graph_time(item["end"], zone)
        all_day = bool(item.get("isAllDay"))
        original = item.get("originalStart")
        owner_response = _response((item.get("responseStatus") or {}).get("response"))
        organizer = _address(item.get("organizer"))
        attendees: dict[str, Attendee] = {}
        for entry in item.get("attendees") or []:
            email = _address(entry)
            if not email:
                continue
            attendees[email] = Attendee(
                email=email,
                response=_response((entry.get("status") or {}).get("response"))
                or Response.NEEDS_ACTION,
                optional=str(entry.get("type", "")).lower() == "optional",
                is_resource=str(entry.get("type", "")).lower() == "resource",
            )
        if mailbox != organizer and owner_response is not None:
            # The mailbox's own copy speaks for its owner's answer.
            previous = attendees.get(mailbox)
            attendees[mailbox] = Attendee(
                email=mailbox,
                response=owner_response,
                optional=previous.optional if previous else False,
            )
        meeting = item.get("onlineMeeting") or {}
        join_url = meeting.get("joinUrl") if isinstance(meeting, dict) else None
        updated = item.get("lastModifiedDateTime")
        record = EventRecord(
            source_id=self.source_id,
            provider_id=f"{mailbox}/{item['id']}",
            ical_uid=str(item["iCalUId"]),
            start=start,
            end=end,
            series_id=str(item["seriesMasterId"]) if item.get("seriesMasterId") else None,
            original_start=utc_from_iso(original) if original else None,
            all_day=all_day,
            zone=zone,
            status=EventStatus.CANCELLED if item.get("isCancelled") else EventStatus.CONFIRMED,
            organizer=organizer,
            attendees=tuple(attendees.values()),
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
        """Teams attendance of one occurrence, from the organiser's online meeting.

        Off unless ``attendance: true``. The meeting is found by its join URL; of its
        attendance reports (one per occurrence of a recurring meeting) those that overlap
        the occurrence count. A refused permission is an :class:`AuthError` naming what
        to grant, so the caller stops asking for the rest of the run.
        """
        if not self.source.attendance or not record.conference_id or not record.organizer:
            return []
        organizer = quote(record.organizer)
        what = f"the online meetings of {record.organizer}"
        escaped = record.conference_id.replace("'", "''")
        query = quote(f"JoinWebUrl eq '{escaped}'")
        try:
            found = self._get(
                f"/users/{organizer}/onlineMeetings?$filter={query}", what, missing_ok=True
            )
        except AuthError:
            raise AuthError(
                self.source_id,
                f"Graph refused to read {what}: attendance needs OnlineMeetings.Read.All and "
                "OnlineMeetingArtifact.Read.All plus a Teams application access policy "
                "granted to the organiser",
            ) from None
        if found is None:
            return []  # the organiser is outside the tenant: no log to read
        evidence: dict[str, AttendanceEvidence] = {}
        for meeting in found.get("value", []) if isinstance(found, dict) else []:
            base = f"/users/{organizer}/onlineMeetings/{quote(str(meeting['id']), safe='')}"
            reports = self._get(f"{base}/attendanceReports", what)
            for report in reports.get("value", []) if isinstance(reports, dict) else []:
                began = utc_from_iso(report["meetingStartDateTime"])
                ended = utc_from_iso(report["meetingEndDateTime"])
                slack = timedelta(hours=1)
                if ended < record.start - slack or began > record.end + slack:
                    continue  # another occurrence of the same meeting
                detail = self._get(
                    f"{base}/attendanceReports/{quote(str(report['id']), safe='')}"
                    "?$expand=attendanceRecords",
                    what,
                )
                entries = detail.get("attendanceRecords", []) if detail else []
                for entry in entries:
                    self._add_evidence(evidence, record, entry)
        return list(evidence.values())

    @staticmethod
    def _add_evidence(
        evidence: dict[str, AttendanceEvidence], record: EventRecord, entry: Mapping[str, Any]
    ) -> None:
        email = str(entry.get("emailAddress") or "").strip().lower()
        if not email:
            return
        seconds = int(entry.get("totalAttendanceInSeconds") or 0)
        intervals = entry.get("attendanceIntervals") or []
        joins = [utc_from_iso(i["joinDateTime"]) for i in intervals if i.get("joinDateTime")]
        leaves = [utc_from_iso(i["leaveDateTime"]) for i in intervals if i.get("leaveDateTime")]
        previous = evidence.get(email)
        if previous is not None:
            seconds += previous.seconds_present
            joins += [previous.joined_at] if previous.joined_at else []
            leaves += [previous.left_at] if previous.left_at else []
        evidence[email] = AttendanceEvidence(
            provider_id=record.provider_id,
            email=email,
            seconds_present=seconds,
            joined_at=min(joins) if joins else None,
            left_at=max(leaves) if leaves else None,
            system="teams",
        )


@dataclass(frozen=True, slots=True)
class _SignInAnswer:
    """msal's minimal response: status, text, headers."""

    status_code: int
    text: str
    headers: httpx.Headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"HTTP {self.status_code}")


class _BoundedSignIn:
    """msal's ``HttpClient`` interface over :class:`BoundedClient`. Failures are raised
    as the requests exceptions msal's default client raises, which sign-in maps."""

    def __init__(self, client: BoundedClient) -> None:
        self._client = client

    def get(
        self, url: str, params: Mapping[str, str] | None = None, headers: Any = None, **_: Any
    ) -> _SignInAnswer:
        return self._send("GET", url, params, dict(headers or {}), None)

    def post(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Any = None,
        **_: Any,
    ) -> _SignInAnswer:
        sent = dict(headers or {})
        if isinstance(data, Mapping):
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            data = urlencode(data)
        body = data.encode() if isinstance(data, str) else data
        return self._send("POST", url, params, sent, body)

    def close(self) -> None:
        self._client.close()

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        body: bytes | None,
    ) -> _SignInAnswer:
        import requests

        if params:
            url = f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"
        try:
            answer = self._client.request(method, url, headers=headers, body=body)
        except FetchTimeout as exc:
            raise requests.Timeout(str(exc)) from None
        except FetchError as exc:
            raise requests.ConnectionError(str(exc)) from None
        text = answer.content.decode("utf-8", "replace")
        return _SignInAnswer(answer.status, text, answer.headers)


def _pinned_session(ca_bundle: str) -> Any:
    """A requests session that keeps ``ca_bundle`` even when $REQUESTS_CA_BUNDLE is set.

    requests lets the environment override a session's ``verify`` (psf/requests#3829),
    which would silently ignore the configured ``ca_bundle`` for sign-in.
    """
    import requests

    class PinnedSession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    session = PinnedSession()
    session.verify = ca_bundle
    return session


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
    return local.replace(tzinfo=ZoneInfo(to_iana(name, fallback=zone).zone)).astimezone(UTC)

"""The Google Workspace connector (``kind: google``): Calendar v3, and Meet v2 for attendance.

Each configured user's primary calendar is synced on its own with sync tokens: a first
sync lists the configured window (``singleEvents=true``, ``eventTypes=default``, 2,500 a
page) and keeps ``nextPageToken`` in the cursor between pages, so a crash resumes
mid-calendar; the last page's ``nextSyncToken`` is kept, and later polls send only it.
When the window's end moves on (once a day), the new slice is listed once.

Calls for many calendars go out together as Google batch requests (up to 50 calls per
HTTP request), each call with its own user's token, so a poll of N unchanged calendars
costs N API calls in N/50 HTTP requests. Client-side token buckets keep the poller under
its share of the project and per-user quotas; rate limits, 5xx and dropped connections are
retried with exponential backoff and jitter (honouring Retry-After) before they become a
:class:`TransientError`. A 410 is :class:`CursorExpired`; refused credentials are an
:class:`AuthError` naming the user; a user without a calendar (suspended, deleted) is an
:class:`ItemError` and the other calendars go on.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from http.client import HTTPException
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import google.auth.exceptions
import google_auth_httplib2
import httplib2
import structlog
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from mentorpulse.config.schema import GoogleSource, resolve_path
from mentorpulse.connectors.base import (
    AuthError,
    ConnectorError,
    CursorExpired,
    SeriesBound,
    TransientError,
    Window,
    cursor_entries,
    describe,
    known_zone,
    retry_after_seconds,
    rfc3339_utc,
    utc_from_iso,
)
from mentorpulse.connectors.http import BoundedClient, FetchError, FetchTimeout
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

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar.readonly"
SCOPE_MEET = "https://www.googleapis.com/auth/meetings.space.readonly"
CALENDAR_ROOT = "https://www.googleapis.com"
MEET_ROOT = "https://meet.googleapis.com"
CURSOR_VERSION = 1
PAGE_SIZE = 2500
MEET_PAGE_SIZE = 100  # the documented maximum of the Meet lists
MAX_ATTEMPTS = 5
MAX_BACKOFF = 60.0
TOKEN_WORKERS = 16
TOKEN_NAME = "google:{source_id}"  # noqa: S105 - a key name, not a secret
_RETRIABLE_403 = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_RESPONSES = {
    "accepted": Response.ACCEPTED,
    "declined": Response.DECLINED,
    "tentative": Response.TENTATIVE,
    "needsAction": Response.NEEDS_ACTION,
}
_STATUSES = {"tentative": EventStatus.TENTATIVE, "cancelled": EventStatus.CANCELLED}
_OAUTH_ERROR = re.compile(r"\b(invalid_grant|unauthorized_client|invalid_client|access_denied)\b")


def scopes_for(source: GoogleSource) -> list[str]:
    """The read-only scopes this source needs, and nothing more."""
    return [SCOPE_CALENDAR, SCOPE_MEET] if source.attendance else [SCOPE_CALENDAR]


# --------------------------------------------------------------------------------------
# Quotas: token buckets shared by every connector of the process, keyed by project.


@dataclass
class _Bucket:
    per_minute: float
    tokens: float
    at: float


@dataclass
class QuotaGate:
    """Keeps calls under a share of the project and per-user quotas (per minute)."""

    project_per_minute: float
    user_per_minute: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, key: str, per_minute: float, count: int) -> float:
        now = self.clock()
        bucket = self._buckets.setdefault(key, _Bucket(per_minute, per_minute, now))
        bucket.per_minute = per_minute
        bucket.tokens = min(per_minute, bucket.tokens + (now - bucket.at) * per_minute / 60)
        bucket.at = now
        bucket.tokens -= count
        return 0.0 if bucket.tokens >= 0 else -bucket.tokens * 60 / per_minute

    def acquire(self, users: list[str]) -> float:
        """Reserve one call per entry of ``users``; sleeps as long as the quotas demand."""
        with self._lock:
            wait = self._take("", self.project_per_minute, len(users))
            for user in set(users):
                wait = max(wait, self._take(user, self.user_per_minute, users.count(user)))
        if wait > 0:
            log.info("google_quota_wait", seconds=round(wait, 2), calls=len(users))
            self.sleep(wait)
        return wait


_GATES: dict[str, QuotaGate] = {}
_CREDENTIALS: dict[tuple[str, str, tuple[str, ...]], Any] = {}
_SHARED_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------
# The cursor of one calendar.


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


@dataclass
class _Call:
    user: str
    request: HttpRequest
    phase: str
    attempt: int = 0


@dataclass
class _Outcome:
    user: str
    phase: str
    response: dict[str, Any] | None
    error: object  # None, an HttpError, a transport exception, _NoCalendar or _Garbled


class GoogleConnector:
    """Reads a :class:`GoogleSource`; see the module docstring for costs and errors."""

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
        self.scopes = scopes_for(source)
        self._sleep = sleep
        self._jitter = jitter
        self._token_key = token_key
        root = (source.api_root or CALENDAR_ROOT).rstrip("/")
        self._api_root = f"{root}/"  # its host sets which addresses requests may reach
        # httplib2's timeout applies per read: requests go through the bounded client.
        self._http: Any = _BoundedHttp(
            BoundedClient(self._api_root, timeout=source.timeout.total_seconds())
        )
        self._calendar_api = build_from_document(
            get_static_doc("calendar", "v3"),
            http=self._http,
            client_options={"api_endpoint": f"{root}/calendar/v3/"},
        )
        self._batch_uri = f"{root}/batch/calendar/v3"
        self._meet_root = (source.api_root or MEET_ROOT).rstrip("/")
        self._meet_api: Any = None
        self._events = self._calendar_api.events()
        self._authed: dict[str, google_auth_httplib2.AuthorizedHttp] = {}
        self._base: Any = None
        self._gone: dict[str, _NoCalendar] = {}
        self._bound = SeriesBound(None)
        self._key_id = self._credential_key()
        with _SHARED_LOCK:
            self._gate = _GATES.setdefault(
                self._key_id,
                QuotaGate(
                    source.project_quota_per_minute * source.quota_share,
                    source.user_quota_per_minute * source.quota_share,
                    sleep=sleep,
                ),
            )
        self.http_requests = 0  # batch and single requests sent by this connector

    def close(self) -> None:
        """Let go of the pooled connections (the sync stage calls this when it is done)."""
        self._http.close()

    # -- credentials --------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        return resolve_path(self.base_dir, value)

    def _credential_key(self) -> str:
        if self.source.service_account_key is not None:
            return f"sa:{self._path(self.source.service_account_key)}"
        return f"oauth:{self.source_id}"

    def _base_credentials(self) -> Any:
        """The service account or the signed-in user's credentials, as configured."""
        if self.source.service_account_key is not None:
            path = self._path(self.source.service_account_key)
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
                return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=self.scopes
                )
            except (OSError, ValueError, KeyError) as exc:
                # Never quote the file: it holds the private key.
                raise AuthError(
                    self.source_id,
                    f"cannot read the service account key {path} ({type(exc).__name__})",
                ) from None
        from mentorpulse.credentials import TokenStore
        from mentorpulse.errors import UserError

        assert self.source.oauth_client is not None  # the schema demands one of the two
        client_path = self._path(self.source.oauth_client)
        try:
            client = oauth_client_info(client_path)
            refresh = TokenStore(self._path(self.source.token_store), self._token_key).load(
                TOKEN_NAME.format(source_id=self.source_id)
            )
        except UserError as exc:
            raise AuthError(self.source_id, exc.message) from None
        if refresh is None:
            raise AuthError(
                self.source_id,
                f"nobody signed in yet: run `mentorpulse auth google --source {self.source_id}`",
            )
        return user_credentials.Credentials(  # type: ignore[no-untyped-call]
            None,
            refresh_token=refresh,
            client_id=client["client_id"],
            client_secret=client["client_secret"],
            token_uri=client["token_uri"],
            scopes=self.scopes,
        )

    def _cache_key(self, user: str) -> tuple[str, str, tuple[str, ...]]:
        delegated = self.source.service_account_key is not None
        return (self._key_id, user if delegated else "", tuple(self.scopes))

    def _credentials_for(self, user: str) -> Any:
        """Valid credentials for reading ``user``'s data, cached across polls."""
        key = self._cache_key(user)
        with _SHARED_LOCK:
            creds = _CREDENTIALS.get(key)
        if creds is None:
            if self._base is None:
                self._base = self._base_credentials()  # parsing the key is slow: once
            creds = self._base
            if self.source.service_account_key is not None:
                creds = creds.with_subject(user)
            with _SHARED_LOCK:
                _CREDENTIALS[key] = creds
        if not creds.valid:
            try:
                self._refresh(creds, user)
            except Exception:
                with _SHARED_LOCK:  # refused credentials are read again next time
                    _CREDENTIALS.pop(key, None)
                raise
        return creds

    def _warm(self, users: list[str]) -> None:
        """Fetch missing delegated tokens concurrently.

        Domain-wide delegation needs one token request per user (an hour's worth);
        waiting for 2,000 of them one after the other would dominate a first sync.
        """
        if self.source.service_account_key is None or len(users) < 2:
            return
        if self._base is None:
            self._base = self._base_credentials()

        def attempt(user: str) -> Exception | None:
            try:
                self._credentials_for(user)
            except (_NoCalendar, ConnectorError) as failure:
                return failure
            return None

        with ThreadPoolExecutor(max_workers=TOKEN_WORKERS) as pool:
            failures = list(pool.map(attempt, users))
        for failure in failures:
            if isinstance(failure, _NoCalendar):
                self._gone[failure.user] = failure
            elif failure is not None:
                raise failure

    def _refresh(self, creds: Any, user: str) -> None:
        # A bounded client of its own: token requests run on several threads at once.
        http = _BoundedHttp(
            BoundedClient(self._api_root, timeout=self.source.timeout.total_seconds())
        )
        try:
            creds.refresh(google_auth_httplib2.Request(http))
        except google.auth.exceptions.RefreshError as exc:
            code = _oauth_code(exc)
            delegated = self.source.service_account_key is not None
            if delegated and code == "invalid_grant":
                raise _NoCalendar(user, "no such user, or the user is suspended") from None
            if delegated:
                raise AuthError(
                    self.source_id,
                    f"Google refused to act as {user} ({code or 'refused'}): grant the "
                    f"service account domain-wide delegation of {', '.join(self.scopes)} "
                    "in the Admin console",
                ) from None
            raise AuthError(
                self.source_id,
                f"Google refused the sign-in used to read {user} ({code or 'refused'}): "
                f"run `mentorpulse auth google --source {self.source_id}` again",
            ) from None
        except (google.auth.exceptions.TransportError, OSError) as exc:
            raise TransientError(
                self.source_id, f"cannot reach the Google token endpoint ({type(exc).__name__})"
            ) from None
        finally:
            http.close()

    def _forget(self, user: str) -> None:
        """Drop ``user``'s cached token, so that the next call asks Google afresh."""
        key = self._cache_key(user)
        with _SHARED_LOCK:
            _CREDENTIALS.pop(key, None)
        self._authed.pop(user, None)

    def _http_for(self, user: str) -> google_auth_httplib2.AuthorizedHttp:
        creds = self._credentials_for(user)
        authed = self._authed.get(user)
        if authed is None or authed.credentials is not creds:
            authed = google_auth_httplib2.AuthorizedHttp(creds, http=self._http)
            self._authed[user] = authed
        return authed

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
        """One page per batch response that changed anything; see the module docstring."""
        states = self._states(cursor)
        self._bound = SeriesBound(
            cursor if cursor and cursor.get("version") == CURSOR_VERSION else None
        )
        done: set[str] = set()
        self._warm(list(states))
        while True:
            calls: list[_Call] = []
            skipped: list[ItemError] = []
            for user, state in states.items():
                if user in done:
                    continue
                missing = self._gone.pop(user, None)
                if missing is not None:
                    skipped.append(self._skip(user, missing.reason))
                    done.add(user)
                    continue
                try:
                    calls.append(self._next_call(user, state))
                except _NoCalendar as gone:
                    skipped.append(self._skip(user, gone.reason))
                    done.add(user)
            if skipped:
                yield SyncPage(cursor=self._cursor(states), errors=tuple(skipped))
            if not calls:
                return
            for start in range(0, len(calls), self.source.batch_size):
                chunk = calls[start : start + self.source.batch_size]
                page = self._apply(self._execute(chunk), states, done)
                if page is not None:
                    yield page

    def _next_call(self, user: str, state: _Calendar) -> _Call:
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
        request.http = self._http_for(user)
        return _Call(user=user, request=request, phase=phase)

    def _execute(self, calls: list[_Call]) -> list[_Outcome]:
        """Send ``calls`` in batch requests until each has an answer worth acting on."""
        outcomes: list[_Outcome] = []
        pending = calls
        while pending:
            self._gate.acquire([c.user for c in pending])
            answers = self._send(pending)
            retry: list[_Call] = []
            delay = 0.0
            for call in pending:
                response, error = answers.get(id(call), (None, None))
                wait = self._retry_wait(call, response, error)
                if wait is None:
                    outcomes.append(_Outcome(call.user, call.phase, response, error))
                    continue
                call.attempt += 1
                if call.attempt >= MAX_ATTEMPTS:
                    raise TransientError(
                        self.source_id,
                        f"Google kept failing for {call.user}: {_describe(error)}",
                        retry_after=wait,
                    )
                retry.append(call)
                delay = max(delay, wait)
            if retry:
                log.info(
                    "google_backoff",
                    source=self.source_id,
                    calls=len(retry),
                    seconds=round(delay, 2),
                    reason=_describe(next(answers.get(id(c), (None, None))[1] for c in retry)),
                )
                self._sleep(delay)
            pending = retry
        return outcomes

    def _send(self, calls: list[_Call]) -> dict[int, tuple[dict[str, Any] | None, Any]]:
        """One HTTP request; a transport failure answers every call with the exception."""
        answers: dict[int, tuple[dict[str, Any] | None, Any]] = {}
        by_id = {str(n): call for n, call in enumerate(calls)}

        def collect(request_id: str, response: Any, exception: Any) -> None:
            answers[id(by_id[request_id])] = (response, exception)

        batch = BatchHttpRequest(callback=collect, batch_uri=self._batch_uri)
        for request_id, call in by_id.items():
            batch.add(call.request, request_id=request_id)
        self.http_requests += 1
        try:
            batch.execute(http=self._http)
        except google.auth.exceptions.RefreshError:
            # A 401 made the library refresh a token, and Google refused: find whose, and
            # turn it into the typed error of that user; the others are sent again.
            answers = {}
            for call in calls:
                self._forget(call.user)
                try:
                    call.request.http = self._http_for(call.user)
                except _NoCalendar as gone:
                    answers[id(call)] = (None, gone)
                else:
                    answers[id(call)] = (None, _Garbled("expired token"))
        except (HttpError, OSError, HTTPException, httplib2.HttpLib2Error) as exc:
            log.info("google_batch_failed", source=self.source_id, error=type(exc).__name__)
            answers = {id(call): (None, exc) for call in calls}
        except Exception as exc:  # a malformed batch answer (BatchError, parse failures)
            log.info("google_batch_failed", source=self.source_id, error=type(exc).__name__)
            answers = {id(call): (None, _Garbled(type(exc).__name__)) for call in calls}
        return answers

    def _retry_wait(self, call: _Call, response: Any, error: Any) -> float | None:
        """Seconds to wait before retrying ``call``; None when its answer is final."""
        if error is None or isinstance(error, _NoCalendar):
            return None
        retry_after: float | None = None
        if isinstance(error, HttpError):
            status = error.resp.status
            if not (
                status == 429
                or status >= 500
                or (status == 403 and _reason(error) in _RETRIABLE_403)
            ):
                return None
            header = error.resp.get("retry-after")
            retry_after = retry_after_seconds(str(header) if header else None, datetime.now(UTC))
        backoff = min(MAX_BACKOFF, (2**call.attempt) * (0.5 + self._jitter()))
        return float(max(backoff, retry_after or 0.0))

    def _apply(
        self, outcomes: list[_Outcome], states: dict[str, _Calendar], done: set[str]
    ) -> SyncPage | None:
        """Turn one batch's answers into one page (records, deletions, the new cursor)."""
        records: list[EventRecord] = []
        deleted: list[str] = []
        errors: list[ItemError] = []
        changed = False
        for outcome in outcomes:
            state = states[outcome.user]
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
            next_page = answer.get("nextPageToken")
            state.page_token = next_page if isinstance(next_page, str) else None
            if state.page_token is None:
                if outcome.phase != "extend" and isinstance(answer.get("nextSyncToken"), str):
                    state.sync_token = answer["nextSyncToken"]
                state.extend_from = None
                state.phase = "changes"
                if outcome.phase != "extend":
                    done.add(outcome.user)
            changed = changed or bool(items) or state.dump() != before
        if not changed:
            return None
        records, gone, bad = self._bound.apply(records)
        deleted += gone
        errors += bad
        log.info(
            "google_page",
            source=self.source_id,
            calendars=len(outcomes),
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

    def _failed(self, outcome: _Outcome, state: _Calendar) -> ItemError:
        """Map one call's final error: raise for the source, or skip this calendar."""
        error = outcome.error
        user = outcome.user
        if isinstance(error, HttpError):
            status = error.resp.status
            if status == 410:
                raise CursorExpired(
                    self.source_id, f"Google expired the sync token of {user}: full resync"
                )
            if status == 401 or (status == 403 and _reason(error) == "insufficientPermissions"):
                raise AuthError(
                    self.source_id,
                    f"Google refused the credentials for {user} (HTTP {status}); check the "
                    f"scopes granted: {', '.join(self.scopes)}",
                )
            if status == 404:
                return self._skip(user, "no calendar (suspended, deleted, or not shared)")
            state.page_token = None  # a rejected page token: start that listing again
            return self._skip(user, f"HTTP {status} {_reason(error) or ''}".strip())
        if isinstance(error, _NoCalendar):
            return self._skip(user, error.reason)
        return self._skip(user, _describe(error))

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
        all_day = "date" in start_field and "dateTime" not in start_field
        start = _when(start_field, event_zone)
        end = max(start, _when(end_field, event_zone))
        organizer = _lower((item.get("organizer") or {}).get("email"))  # null: none known
        attendees: dict[str, Attendee] = {}
        for person in item.get("attendees") or []:
            email = _lower(person.get("email"))
            if not email or person.get("resource") or email in attendees:
                continue  # meeting rooms are not people
            if person.get("organizer") and organizer is None:
                organizer = email
            attendees[email] = Attendee(
                email=email,
                response=_RESPONSES.get(person.get("responseStatus", ""), Response.NEEDS_ACTION),
                optional=bool(person.get("optional")),
            )
        original = item.get("originalStartTime")
        conference = item.get("conferenceData") or {}
        return EventRecord(
            source_id=self.source_id,
            provider_id=key,
            ical_uid=str(item.get("iCalUID") or item["id"]),
            start=start,
            end=end,
            series_id=item.get("recurringEventId"),
            original_start=_when(original, event_zone) if original else None,
            all_day=all_day,
            zone=event_zone,
            status=_STATUSES.get(item.get("status", ""), EventStatus.CONFIRMED),
            organizer=organizer,
            attendees=tuple(attendees.values()),
            calendar_owner=owner,
            conference_id=conference.get("conferenceId"),
            title=item.get("summary"),
            updated=utc_from_iso(item["updated"]) if item.get("updated") else None,
            sequence=int(item.get("sequence") or 0),
            etag=item.get("etag"),
        )

    # -- attendance -----------------------------------------------------------------------

    def attendance_evidence(self, record: EventRecord) -> list[AttendanceEvidence]:
        """Meet conference logs of ``record``'s meeting code, one evidence per party.

        Parties are matched by their Google profile id, which Calendar gives per attendee
        and Meet gives per signed-in participant. A party absent from a conference that
        took place gets zero seconds: evidence of a no-show.
        """
        if not self.source.attendance or not record.conference_id:
            return []
        # Meet shows a conference to its space's owner and to who joined: ask as the
        # organiser when we may act as them, else as the calendar's owner.
        users = self._users()
        owner = (
            record.organizer
            if record.organizer in users and self.source.service_account_key is not None
            else record.calendar_owner or record.organizer or ""
        )
        code = record.conference_id
        low = rfc3339_utc(record.start - timedelta(hours=1))
        high = rfc3339_utc(record.end + timedelta(hours=1))
        meet = self._meet().conferenceRecords()
        conferences = self._listed(
            owner,
            meet.list,
            "conferenceRecords",
            filter=f'space.meeting_code = "{code}" AND start_time >= "{low}" '
            f'AND start_time <= "{high}"',
        )
        if not conferences:
            return []
        holder = record.calendar_owner or owner
        event = self._single(
            holder,
            self._events.get(calendarId=holder, eventId=record.provider_id.split("/", 1)[1]),
            reading="the event's attendees",
            scope=SCOPE_CALENDAR,
        )
        by_profile = {
            str(p["id"]): email
            for p in [*(event.get("attendees") or []), event.get("organizer") or {}]
            if p.get("id") and (email := _lower(p.get("email")))
        }
        seen: dict[str, list[tuple[datetime, datetime]]] = {}
        for conference in conferences:
            participants = self._listed(
                owner, meet.participants().list, "participants", parent=conference["name"]
            )
            for participant in participants:
                user = (participant.get("signedinUser") or {}).get("user", "")
                email = by_profile.get(user.removeprefix("users/"))
                if email is None:
                    continue  # anonymous, phone, or someone not invited
                sessions = self._listed(
                    owner,
                    meet.participants().participantSessions().list,
                    "participantSessions",
                    parent=participant["name"],
                )
                for session in sessions:
                    if session.get("startTime") and session.get("endTime"):
                        span = (
                            utc_from_iso(session["startTime"]),
                            utc_from_iso(session["endTime"]),
                        )
                        seen.setdefault(email, []).append(span)
        evidence = []
        for email in sorted(record.participants()):
            spans = seen.get(email, [])
            evidence.append(
                AttendanceEvidence(
                    provider_id=record.provider_id,
                    email=email,
                    seconds_present=int(sum((e - s).total_seconds() for s, e in spans)),
                    joined_at=min((s for s, _ in spans), default=None),
                    left_at=max((e for _, e in spans), default=None),
                    system="google_meet",
                )
            )
        return evidence

    def _meet(self) -> Any:
        if self._meet_api is None:
            self._meet_api = build_from_document(
                get_static_doc("meet", "v2"),
                http=self._http,
                client_options={"api_endpoint": f"{self._meet_root}/"},
            )
        return self._meet_api

    def _listed(
        self, user: str, method: Callable[..., HttpRequest], key: str, **params: str
    ) -> list[dict[str, Any]]:
        """Every item of a paged Meet list (pages of at most ``MEET_PAGE_SIZE``)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            extra = {"pageToken": token} if token else {}
            answer = self._single(
                user,
                method(pageSize=MEET_PAGE_SIZE, **params, **extra),
                reading="Meet records",
                scope=SCOPE_MEET,
            )
            items += answer.get(key) or []
            token = answer.get("nextPageToken")
            if not token:
                return items

    def _single(
        self, user: str, request: HttpRequest, *, reading: str, scope: str
    ) -> dict[str, Any]:
        """One call on its own, with the same retries and error mapping as a batch; a
        refusal names what was being read and the scope that allows it."""
        try:
            request.http = self._http_for(user)
        except _NoCalendar as gone:
            raise TransientError(self.source_id, f"cannot act as {user}: {gone.reason}") from None
        call = _Call(user=user, request=request, phase="single")
        while True:
            self._gate.acquire([user])
            self.http_requests += 1
            try:
                response: dict[str, Any] = request.execute()
                return response
            except (HttpError, OSError, HTTPException, httplib2.HttpLib2Error) as exc:
                error: Any = exc
            wait = self._retry_wait(call, None, error)
            if wait is None:
                if isinstance(error, HttpError) and error.resp.status == 404:
                    return {}
                if isinstance(error, HttpError) and error.resp.status in (401, 403):
                    raise AuthError(
                        self.source_id,
                        f"Google refused to read {reading} for {user} (HTTP "
                        f"{error.resp.status}); grant {scope}",
                    )
                raise TransientError(self.source_id, f"Google failed: {_describe(error)}")
            call.attempt += 1
            if call.attempt >= MAX_ATTEMPTS:
                raise TransientError(
                    self.source_id, f"Google kept failing: {_describe(error)}", retry_after=wait
                )
            self._sleep(wait)


# --------------------------------------------------------------------------------------
# Helpers.


class _NoCalendar(Exception):
    def __init__(self, user: str, reason: str) -> None:
        super().__init__(reason)
        self.user = user
        self.reason = reason


@dataclass(frozen=True)
class _Garbled:
    kind: str


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


def oauth_client_info(path: Path) -> dict[str, str]:
    """client_id, client_secret and token_uri of an installed-app client JSON file."""
    from mentorpulse.errors import UserError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        section = data.get("installed") or data.get("web")
        return {
            "client_id": str(section["client_id"]),
            "client_secret": str(section["client_secret"]),
            "token_uri": str(section.get("token_uri", "https://oauth2.googleapis.com/token")),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"{path}: not an OAuth client file of an installed app ({type(exc).__name__})"
        ) from None


def _oauth_code(exc: google.auth.exceptions.RefreshError) -> str | None:
    """The OAuth error code of a refusal (the response never carries a secret here)."""
    for arg in exc.args:
        if isinstance(arg, Mapping) and isinstance(arg.get("error"), str):
            return str(arg["error"])
        found = _OAUTH_ERROR.search(str(arg)) if isinstance(arg, str) else None
        if found:
            return found.group(1)
    return None


def _reason(error: HttpError) -> str | None:
    try:
        payload = json.loads(error.content)
        return str(payload["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class _BoundedHttp:
    """``httplib2.Http``'s interface, as the Google client libraries use it, over
    :class:`BoundedClient`: one total deadline per request, a size cap, checked
    addresses. A timeout is raised as ``socket.timeout``, any other failure as a
    ``ConnectionError`` (both retried by googleapiclient where it retries)."""

    redirect_codes = frozenset({300, 301, 302, 303, 307})
    follow_redirects = True

    def __init__(self, client: BoundedClient) -> None:
        self._client = client
        self.timeout = client.timeout
        self.connections: dict[str, Any] = {}

    def request(  # noqa: PLR0917 - httplib2's signature, positional as callers use it
        self,
        uri: str,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[httplib2.Response, bytes]:
        data = body.encode() if isinstance(body, str) else body
        try:
            if method == "GET":
                answer = self._client.get(uri, headers=headers)
            else:
                answer = self._client.request(method, uri, headers=headers, body=data)
        except FetchTimeout as exc:
            raise TimeoutError(str(exc)) from None
        except FetchError as exc:
            raise ConnectionError(str(exc)) from None
        info = {key.lower(): value for key, value in answer.headers.items()}
        info["status"] = str(answer.status)
        response = httplib2.Response(info)
        response.reason = answer.reason
        return response, answer.content

    def close(self) -> None:
        self._client.close()


def _describe(error: Any) -> str:
    if isinstance(error, HttpError):
        return f"HTTP {error.resp.status} {_reason(error) or ''}".strip()
    if isinstance(error, _Garbled):
        return f"malformed answer ({error.kind})"
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return f"connection failed ({type(error).__name__})" if error else "no answer"


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

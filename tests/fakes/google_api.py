"""A faithful fake of the Google APIs the google connector uses, served on loopback.

Implements the documented subset, over real HTTP, so the real google-api-python-client
and google-auth talk to it unchanged:

* OAuth 2.0 token endpoint (``POST /token``): the service-account JWT bearer grant (the
  assertion's RS256 signature is verified against the registered key; ``sub`` is the
  impersonated user of domain-wide delegation), the refresh-token grant and the
  authorization-code grant of the installed-app flow (``GET /o/oauth2/auth`` redirects
  back with a code, as the consent screen does).
* Calendar v3 ``events.list`` and ``events.get``
  (``/calendar/v3/calendars/{calendarId}/events``): ``singleEvents`` instances, paging
  with ``maxResults``/``pageToken``, sync tokens (only the last page carries
  ``nextSyncToken``; 400 ``syncTokenWithRequestRestrictions`` when ``timeMin``,
  ``timeMax``, ``showDeleted=false`` … accompany one; 410 ``fullSyncRequired`` for an
  expired one), deletions as ``status: cancelled`` with only the identifying fields.
* The batch endpoint (``POST /batch/calendar/v3``): ``multipart/mixed`` of
  ``application/http`` parts, answered part by part with ``response-`` Content-IDs.
* Meet v2 ``conferenceRecords``, ``participants`` and ``participantSessions`` lists.
* Fault injection: queued :class:`Fault` s answer matching calls with an HTTP error
  (410, 403 rate limit, 429 with Retry-After, 500) or drop the connection mid-body.

Every HTTP request and every API call (inner batch parts included) is counted.
"""

from __future__ import annotations

import base64
import email.parser
import itertools
import json
import re
import threading
import time
import uuid
import webbrowser
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

CALENDAR_PREFIX = "/calendar/v3/"
MAX_BATCH = 1000  # calls in one batch request, as documented
INCOMPATIBLE_WITH_SYNC_TOKEN = ("timeMin", "timeMax", "q", "orderBy", "updatedMin", "iCalUID")


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def instance_id(series_id: str, original_start: datetime) -> str:
    """Google's id of a recurring instance: series id, ``_``, its original start in UTC."""
    return f"{series_id}_{original_start.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def make_service_account(token_uri: str) -> tuple[dict[str, str], str]:
    """A service-account key file (as the Cloud console downloads it) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    info = {
        "type": "service_account",
        "project_id": "mentorpulse-test",
        "private_key_id": uuid.uuid4().hex,
        "private_key": private_pem,
        "client_email": "mentorpulse@mentorpulse-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    return info, public_pem


@dataclass
class Fault:
    """Answer the next ``times`` API calls that ``match`` with an error instead."""

    status: int  # 0: drop the connection mid-body; -1: stall (retry_after seconds)
    reason: str = ""
    retry_after: int | None = None
    times: int = 1
    calendar: str | None = None  # only calls on this calendar; None: any API call
    outer: bool = False  # fail the whole HTTP request (a batch), not one call


@dataclass
class FakeEvent:
    data: dict[str, Any]
    seq: int


@dataclass
class FakeCalendar:
    owner: str
    events: dict[str, FakeEvent] = field(default_factory=dict)
    valid_from: int = 0  # sync tokens older than this answer 410
    shared_with: set[str] = field(default_factory=set)


@dataclass
class Participant:
    user_id: str | None  # the profile id of a signed-in user; None: anonymous
    display_name: str
    sessions: list[tuple[datetime, datetime]]


@dataclass
class ConferenceRecord:
    id: str
    meeting_code: str
    start: datetime
    end: datetime
    participants: list[Participant]
    owner: str  # the meeting space's owner (the organiser who created the link)

    def visible_to(self, user: str, profile_id: str | None) -> bool:
        """Space owners and participants may read a conference record, nobody else."""
        return user == self.owner or any(
            p.user_id is not None and p.user_id == profile_id for p in self.participants
        )


class GoogleFake:
    """The state behind the fake APIs; tests arrange it and assert against it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.calendars: dict[str, FakeCalendar] = {}
        self.suspended: set[str] = set()
        self.profile_ids: dict[str, str] = {}
        self.conferences: list[ConferenceRecord] = []
        self.faults: list[Fault] = []
        self.seq = itertools.count(1)
        self.last_seq = 0
        self.base_url = ""
        self.public_keys: dict[str, str] = {}  # client_email → PEM
        self.delegated_scopes: set[str] | None = None  # None: any scope is delegated
        self.refresh_tokens: dict[str, str] = {}  # refresh token → user
        self.auth_codes: dict[str, str] = {}
        self.oauth_user = "admin@example.org"
        self.access_tokens: dict[str, tuple[str, frozenset[str]]] = {}
        # Counters a test or the bench reads.
        self.http_requests = 0
        self.api_calls = 0
        self.token_requests = 0
        self.batch_sizes: list[int] = []
        self.calls: list[tuple[str, dict[str, str]]] = []  # (path, query) per API call
        self.delay = 0.0  # seconds each outer HTTP request takes (a slow API, to act mid-sync)

    def requests_per_calendar(self, *, full_only: bool = False) -> Counter[str]:
        """Events-list calls served per calendar id (each call inside a batch counts);
        ``full_only``: only full listings, not the incremental calls with a sync token."""
        with self.lock:
            calls = list(self.calls)
        counts: Counter[str] = Counter()
        for path, query in calls:
            found = re.fullmatch(CALENDAR_PREFIX + r"calendars/([^/]+)/events", path)
            if found and not (full_only and "syncToken" in query):
                counts[unquote(found.group(1))] += 1
        return counts

    # -- arranging -----------------------------------------------------------------------

    def add_user(self, email: str) -> FakeCalendar:
        with self.lock:
            calendar = FakeCalendar(owner=email)
            self.calendars[email] = calendar
            self.profile_ids[email] = str(100000000000000000000 + len(self.profile_ids))
            return calendar

    def _bump(self) -> int:
        self.last_seq = next(self.seq)
        return self.last_seq

    def put_event(self, calendar: str, event: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an event (as the organiser's client would), ``updated`` now."""
        with self.lock:
            data = dict(event)
            data.setdefault("status", "confirmed")
            data.setdefault("kind", "calendar#event")
            data.setdefault("iCalUID", f"{data.get('recurringEventId', data['id'])}@google.com")
            data["updated"] = rfc3339(datetime.now(UTC))
            data["etag"] = f'"{uuid.uuid4().int % 10**16}"'
            for attendee in data.get("attendees") or []:
                if not isinstance(attendee, dict):
                    continue  # a hostile test's malformed entry, served as it is
                pid = self.profile_ids.get(attendee["email"])
                if pid:
                    attendee.setdefault("id", pid)
            self.calendars[calendar].events[data["id"]] = FakeEvent(data, self._bump())
            return data

    def meeting(
        self,
        calendars: list[str],
        *,
        event_id: str,
        start: datetime,
        minutes: int = 60,
        organizer: str,
        attendees: dict[str, str],
        meet_code: str | None = None,
        summary: str = "Mentoring",
    ) -> None:
        """One event, copied into each calendar with each attendee's response."""
        for calendar in calendars:
            self.put_event(
                calendar,
                self._event_body(
                    event_id, start, minutes, organizer, attendees, meet_code, summary, calendar
                ),
            )

    def series(
        self,
        calendars: list[str],
        *,
        series_id: str,
        first: datetime,
        count: int,
        every: timedelta = timedelta(weeks=1),
        minutes: int = 60,
        organizer: str,
        attendees: dict[str, str],
        meet_code: str | None = None,
    ) -> list[datetime]:
        """A recurring series as ``singleEvents=true`` lists it: one instance each."""
        starts = [first + every * n for n in range(count)]
        for calendar in calendars:
            for start in starts:
                body = self._event_body(
                    instance_id(series_id, start),
                    start,
                    minutes,
                    organizer,
                    attendees,
                    meet_code,
                    "Mentoring",
                    calendar,
                )
                body["recurringEventId"] = series_id
                body["originalStartTime"] = {"dateTime": rfc3339(start), "timeZone": "UTC"}
                body["iCalUID"] = f"{series_id}@google.com"
                self.put_event(calendar, body)
        return starts

    def _event_body(
        self,
        event_id: str,
        start: datetime,
        minutes: int,
        organizer: str,
        attendees: dict[str, str],
        meet_code: str | None,
        summary: str,
        calendar: str,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": event_id,
            "summary": summary,
            "start": {"dateTime": rfc3339(start), "timeZone": "Europe/Berlin"},
            "end": {
                "dateTime": rfc3339(start + timedelta(minutes=minutes)),
                "timeZone": "Europe/Berlin",
            },
            "organizer": {"email": organizer, **({"self": True} if organizer == calendar else {})},
            "attendees": [
                {
                    "email": email,
                    "responseStatus": status,
                    **({"organizer": True} if email == organizer else {}),
                    **({"self": True} if email == calendar else {}),
                }
                for email, status in attendees.items()
            ],
            "sequence": 0,
            "eventType": "default",
        }
        if meet_code:
            body["hangoutLink"] = f"https://meet.google.com/{meet_code}"
            body["conferenceData"] = {
                "conferenceId": meet_code,
                "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"},
                "entryPoints": [
                    {"entryPointType": "video", "uri": f"https://meet.google.com/{meet_code}"}
                ],
            }
        return body

    def update(self, calendar: str, event_id: str, **changes: Any) -> None:
        with self.lock:
            data = dict(self.calendars[calendar].events[event_id].data)
            data.update(changes)
            data["sequence"] = int(data.get("sequence", 0)) + 1
            self.put_event(calendar, data)

    def move(self, calendar: str, event_id: str, start: datetime, minutes: int = 60) -> None:
        self.update(
            calendar,
            event_id,
            start={"dateTime": rfc3339(start), "timeZone": "Europe/Berlin"},
            end={
                "dateTime": rfc3339(start + timedelta(minutes=minutes)),
                "timeZone": "Europe/Berlin",
            },
        )

    def cancel(self, calendar: str, event_id: str) -> None:
        """Delete an event: it stays as ``cancelled`` for incremental syncs."""
        with self.lock:
            old = self.calendars[calendar].events[event_id].data
            data = {k: old[k] for k in ("id", "recurringEventId", "originalStartTime") if k in old}
            data.update(status="cancelled", kind="calendar#event", etag=f'"{uuid.uuid4().int}"')
            self.calendars[calendar].events[event_id] = FakeEvent(data, self._bump())

    def expire_sync_tokens(self, calendar: str) -> None:
        with self.lock:
            self.calendars[calendar].valid_from = self._bump()

    def calendar_calls(self) -> list[tuple[str, dict[str, str]]]:
        """(calendar id, query) of every events call so far, in order: what a test counts
        requests (or full listings: no syncToken, no pageToken) per calendar from."""
        with self.lock:
            calls = list(self.calls)
        found = []
        for path, query in calls:
            match = re.fullmatch(rf"{CALENDAR_PREFIX}calendars/([^/]+)/events", path)
            if match:
                found.append((unquote(match.group(1)), query))
        return found

    def live_events(self, calendar: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {
                i: e.data
                for i, e in self.calendars[calendar].events.items()
                if e.data.get("status") != "cancelled"
            }

    def add_conference(
        self,
        meet_code: str,
        start: datetime,
        end: datetime,
        present: dict[str, list[tuple[datetime, datetime]]],
        *,
        owner: str,
    ) -> None:
        """A Meet conference; ``present`` maps a user's email to their join/leave spans."""
        with self.lock:
            self.conferences.append(
                ConferenceRecord(
                    id=uuid.uuid4().hex[:16],
                    meeting_code=meet_code,
                    start=start,
                    end=end,
                    participants=[
                        Participant(self.profile_ids.get(email), email.split("@")[0], spans)
                        for email, spans in present.items()
                    ],
                    owner=owner,
                )
            )

    # -- HTTP ---------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request (outer, or one part of a batch)."""
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if path == "/token" and method == "POST":
            return self._token(body)
        if path == "/o/oauth2/auth":
            return self._consent(query)
        if path.startswith("/batch/"):
            return self._batch(headers, body)
        with self.lock:
            self.api_calls += 1
            self.calls.append((path, query))
            fault = self._fault(path, outer=False)
        if fault is not None:
            return self._error(fault.status, fault.reason, retry_after=fault.retry_after)
        user, scopes = self._caller(headers)
        if user is None:
            return self._error(401, "authError", "Invalid Credentials")
        if path.startswith(CALENDAR_PREFIX):
            if "https://www.googleapis.com/auth/calendar.readonly" not in scopes:
                return self._error(403, "insufficientPermissions", "Insufficient Permission")
            return self._calendar(method, path[len(CALENDAR_PREFIX) :], query, user)
        if path.startswith("/v2/conferenceRecords"):
            if "https://www.googleapis.com/auth/meetings.space.readonly" not in scopes:
                return self._error(403, "insufficientPermissions", "Insufficient Permission")
            return self._meet(path[len("/v2/") :], query, user)
        return self._error(404, "notFound", "Not Found")

    def _fault(self, path: str, *, outer: bool) -> Fault | None:
        for fault in self.faults:
            if fault.outer != outer or fault.times <= 0:
                continue
            if (
                fault.calendar is not None
                and f"/calendars/{quote(fault.calendar)}/" not in path
                and f"/calendars/{fault.calendar}/" not in path
            ):
                continue
            fault.times -= 1
            return fault
        return None

    def take_outer_fault(self) -> Fault | None:
        with self.lock:
            return self._fault("", outer=True)

    @staticmethod
    def _json(
        status: int, payload: Any, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json; charset=UTF-8", **(extra or {})}
        return status, headers, json.dumps(payload).encode()

    def _error(
        self, status: int, reason: str, message: str = "", retry_after: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        message = message or {
            410: "Sync token is no longer valid, a full sync is required.",
            429: "Too Many Requests",
            500: "Backend Error",
            403: "Rate Limit Exceeded",
        }.get(status, reason)
        extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        domain = "global" if status != 410 else "calendar"
        payload = {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"domain": domain, "reason": reason, "message": message}],
            }
        }
        return self._json(status, payload, extra)

    # -- OAuth ----------------------------------------------------------------------------

    def _token(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_grant(form.get("assertion", ""))
        if grant == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            if user is None:
                return self._json(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                )
            return self._issue(
                user,
                form.get("scope", "").split()
                or [
                    "https://www.googleapis.com/auth/calendar.readonly",
                    "https://www.googleapis.com/auth/meetings.space.readonly",
                ],
            )
        if grant == "authorization_code":
            user = self.auth_codes.pop(form.get("code", ""), None)
            if user is None:
                return self._json(400, {"error": "invalid_grant", "error_description": "Bad code"})
            refresh = "1//" + uuid.uuid4().hex
            self.refresh_tokens[refresh] = user
            status, _headers, content = self._issue(
                user,
                [
                    "https://www.googleapis.com/auth/calendar.readonly",
                ],
            )
            payload = json.loads(content)
            payload["refresh_token"] = refresh
            return self._json(status, payload)
        return self._json(400, {"error": "unsupported_grant_type"})

    def _jwt_grant(self, assertion: str) -> tuple[int, dict[str, str], bytes]:
        try:
            unverified = jwt.decode(assertion, verify=False)
            certs = self.public_keys[unverified["iss"]]
            # google-auth signs for Google's token URI whatever URI it posts to.
            claims = jwt.decode(
                assertion,
                certs=certs,
                audience=["https://oauth2.googleapis.com/token", f"{self.base_url}/token"],
            )
        except Exception:  # any bad assertion is invalid_grant, as Google answers
            return self._json(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            )
        scopes = str(claims.get("scope", "")).split()
        if self.delegated_scopes is not None and not set(scopes) <= self.delegated_scopes:
            return self._json(
                401,
                {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens using "
                    "this method, or client not authorized for any of the scopes requested.",
                },
            )
        subject = claims.get("sub")
        if subject is None or subject not in self.calendars or subject in self.suspended:
            return self._json(
                400, {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
            )
        return self._issue(subject, scopes)

    def _issue(self, user: str, scopes: list[str]) -> tuple[int, dict[str, str], bytes]:
        token = "ya29." + uuid.uuid4().hex
        with self.lock:
            self.access_tokens[token] = (user, frozenset(scopes))
        return self._json(
            200,
            {
                "access_token": token,
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": " ".join(scopes),
            },
        )

    def _consent(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The consent screen, already agreed to: back to the app's redirect_uri."""
        code = "4/" + uuid.uuid4().hex
        self.auth_codes[code] = self.oauth_user
        answer = {"code": code, "state": query["state"], "scope": query.get("scope", "")}
        target = f"{query['redirect_uri']}?{urlencode(answer)}"
        return 302, {"Location": target}, b""

    def _caller(self, headers: dict[str, str]) -> tuple[str | None, frozenset[str]]:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        token = auth.removeprefix("Bearer ").strip()
        return self.access_tokens.get(token, (None, frozenset()))

    # -- Calendar -------------------------------------------------------------------------

    def _calendar(
        self, method: str, rest: str, query: dict[str, str], user: str
    ) -> tuple[int, dict[str, str], bytes]:
        found = re.fullmatch(r"calendars/([^/]+)/events(?:/([^/]+))?", rest)
        if not found or method != "GET":
            return self._error(404, "notFound", "Not Found")
        calendar_id = unquote(found.group(1))
        if calendar_id == "primary":
            calendar_id = user
        with self.lock:
            calendar = self.calendars.get(calendar_id)
            if (
                calendar is None
                or calendar_id in self.suspended
                or (calendar_id != user and user not in calendar.shared_with)
            ):
                return self._error(404, "notFound", "Not Found")
            if found.group(2):
                event = calendar.events.get(unquote(found.group(2)))
                if event is None:
                    return self._error(404, "notFound", "Not Found")
                return self._json(200, event.data)
            return self._list(calendar, query)

    def _list(
        self, calendar: FakeCalendar, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if query.get("singleEvents") != "true":
            return self._error(400, "badRequest", "this fake only serves singleEvents=true")
        size = min(int(query.get("maxResults", "250")), 2500)
        token = query.get("syncToken")
        page = _decode(query["pageToken"]) if "pageToken" in query else None
        if token is not None:
            if (
                any(k in query for k in INCOMPATIBLE_WITH_SYNC_TOKEN)
                or query.get("showDeleted") == "false"
            ):
                return self._error(
                    400,
                    "syncTokenWithRequestRestrictions",
                    "Sync token cannot be used with other request restrictions.",
                )
            since = _decode(token)
            if since.get("cal") != calendar.owner or since["seq"] < calendar.valid_from:
                return self._error(410, "fullSyncRequired")
            snapshot = page["snap"] if page else self.last_seq
            chosen = sorted(
                (e for e in calendar.events.values() if since["seq"] < e.seq <= snapshot),
                key=lambda e: e.seq,
            )
        else:
            snapshot = page["snap"] if page else self.last_seq
            low = parse_rfc3339(query["timeMin"]) if "timeMin" in query else None
            high = parse_rfc3339(query["timeMax"]) if "timeMax" in query else None
            show_deleted = query.get("showDeleted") == "true"
            chosen = []
            for event in calendar.events.values():
                data = event.data
                if data.get("status") == "cancelled":
                    if not show_deleted:
                        continue
                elif data.get("eventType", "default") not in query.get(
                    "eventTypes", "default,outOfOffice,focusTime,workingLocation,birthday,fromGmail"
                ).split(","):
                    continue
                if "start" in data:
                    try:
                        start, end = _when(data["start"]), _when(data["end"])
                    except (KeyError, TypeError, ValueError):
                        pass  # a value the fake cannot place (a hostile test's) is listed
                    else:
                        if (low and end <= low) or (high and start >= high):
                            continue
                chosen.append(event)
            chosen.sort(key=lambda e: (_start_text(e.data), e.data["id"]))
        offset = page["offset"] if page else 0
        items = [e.data for e in chosen[offset : offset + size]]
        payload: dict[str, Any] = {
            "kind": "calendar#events",
            "summary": calendar.owner,
            "timeZone": "Europe/Berlin",
            "items": items,
        }
        if offset + size < len(chosen):
            payload["nextPageToken"] = _encode({"offset": offset + size, "snap": snapshot})
        elif token is not None and not chosen:
            payload["nextSyncToken"] = token  # nothing changed: the same token comes back
        else:
            payload["nextSyncToken"] = _encode({"cal": calendar.owner, "seq": snapshot})
        return self._json(200, payload)

    # -- Meet -----------------------------------------------------------------------------

    def _meet(
        self, rest: str, query: dict[str, str], user: str
    ) -> tuple[int, dict[str, str], bytes]:
        parts = rest.split("/")
        with self.lock:
            profile = self.profile_ids.get(user)
            visible = [c for c in self.conferences if c.visible_to(user, profile)]
            if parts == ["conferenceRecords"]:
                records = [c for c in visible if _meet_filter(c, query.get("filter", ""))]
                return self._meet_page(
                    query,
                    "conferenceRecords",
                    [
                        {
                            "name": f"conferenceRecords/{c.id}",
                            "startTime": rfc3339(c.start),
                            "endTime": rfc3339(c.end),
                            "space": f"spaces/{c.meeting_code}",
                        }
                        for c in records
                    ],
                )
            record = next((c for c in visible if c.id == parts[1]), None)
            if record is None:
                return self._error(404, "notFound", "Requested entity was not found.")
            if len(parts) == 3 and parts[2] == "participants":
                listed = []
                for index, p in enumerate(record.participants):
                    item: dict[str, Any] = {
                        "name": f"conferenceRecords/{record.id}/participants/{index}",
                        "earliestStartTime": rfc3339(min(s for s, _ in p.sessions)),
                        "latestEndTime": rfc3339(max(e for _, e in p.sessions)),
                    }
                    if p.user_id:
                        item["signedinUser"] = {
                            "user": f"users/{p.user_id}",
                            "displayName": p.display_name,
                        }
                    else:
                        item["anonymousUser"] = {"displayName": p.display_name}
                    listed.append(item)
                return self._meet_page(query, "participants", listed)
            if len(parts) == 5 and parts[4] == "participantSessions":
                participant = record.participants[int(parts[3])]
                sessions = [
                    {
                        "name": f"conferenceRecords/{record.id}/participants/{parts[3]}"
                        f"/participantSessions/{n}",
                        "startTime": rfc3339(s),
                        "endTime": rfc3339(e),
                    }
                    for n, (s, e) in enumerate(participant.sessions)
                ]
                return self._meet_page(query, "participantSessions", sessions)
        return self._error(404, "notFound", "Not Found")

    def _meet_page(
        self, query: dict[str, str], key: str, items: list[dict[str, Any]]
    ) -> tuple[int, dict[str, str], bytes]:
        """Meet's paging: ``pageSize`` (default 25 for conferences, 100 at most)."""
        size = min(int(query.get("pageSize") or 25), 100)
        offset = int(_decode(query["pageToken"]).get("offset", 0)) if "pageToken" in query else 0
        payload: dict[str, Any] = {key: items[offset : offset + size]}
        if key == "participants":
            payload["totalSize"] = len(items)
        if offset + size < len(items):
            payload["nextPageToken"] = _encode({"offset": offset + size})
        return self._json(200, payload)

    # -- batch ----------------------------------------------------------------------------

    def _batch(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
        message = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        outer_auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
        boundary = "batch_" + uuid.uuid4().hex
        out: list[str] = []
        parts = message.get_payload()
        assert isinstance(parts, list)
        if len(parts) > MAX_BATCH:
            return self._error(400, "badRequest", f"A batch may hold at most {MAX_BATCH} calls")
        with self.lock:
            self.batch_sizes.append(len(parts))
        for part in parts:
            raw = part.get_payload(decode=False)
            request_line, rest = raw.split("\n", 1)
            method, target, _version = request_line.strip().split(" ")
            inner = email.parser.Parser().parsestr(rest)
            inner_headers = {**outer_auth, **dict(inner.items())}
            status, response_headers, content = self.handle(method, target, inner_headers, b"")
            head = "".join(f"{k}: {v}\r\n" for k, v in response_headers.items())
            out.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{part['Content-ID'][1:-1]}>\r\n\r\n"
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n{head}\r\n"
                f"{content.decode()}\r\n"
            )
        out.append(f"--{boundary}--\r\n")
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, "".join(out).encode()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _encode(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def _decode(value: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value.encode()))
    except ValueError:
        return {"cal": None, "seq": -1, "offset": 0, "snap": 0}
    return decoded if isinstance(decoded, dict) else {}


def _start_text(data: dict[str, Any]) -> str:
    """The listing's order: by start dateTime (a hostile test's odd start sorts as text)."""
    start = data.get("start")
    return str(start.get("dateTime", "")) if isinstance(start, dict) else str(start or "")


def _when(value: dict[str, str]) -> datetime:
    if "dateTime" in value:
        return parse_rfc3339(value["dateTime"])
    return datetime.fromisoformat(value["date"]).replace(tzinfo=UTC)


def _meet_filter(record: ConferenceRecord, text: str) -> bool:
    """The documented filter subset: ``space.meeting_code = "..."`` and start_time bounds."""
    for clause in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        found = re.fullmatch(r'\s*([\w.]+)\s*(=|>=|<=)\s*"([^"]*)"\s*', clause)
        if not found:
            continue
        name, op, value = found.groups()
        if name == "space.meeting_code" and record.meeting_code != value:
            return False
        if name == "start_time":
            bound = parse_rfc3339(value)
            if (op == ">=" and record.start < bound) or (op == "<=" and record.start > bound):
                return False
    return True


class _Handler(BaseHTTPRequestHandler):
    fake: GoogleFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.fake.lock:
            self.fake.http_requests += 1
        if self.fake.delay and not self.path.startswith("/token"):
            time.sleep(self.fake.delay)
        fault = self.fake.take_outer_fault() if not self.path.startswith("/token") else None
        if fault is not None and fault.status == -1:  # a stall: answer after the client gave up
            time.sleep(fault.retry_after or 2)
            fault = None
        if fault is not None and fault.status == 0:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self.wfile.write(b'{"kind": "calendar#events", "items": [')
            self.wfile.flush()
            self.close_connection = True
            return
        if fault is not None:
            status, headers, content = self.fake._error(
                fault.status, fault.reason, retry_after=fault.retry_after
            )
        else:
            status, headers, content = self.fake.handle(
                self.command, self.path, dict(self.headers.items()), body
            )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = _serve
    do_POST = _serve


@dataclass
class RunningFake:
    fake: GoogleFake
    url: str
    service_account: dict[str, str]


def serve(fake: GoogleFake) -> Iterator[RunningFake]:
    """Serve ``fake`` on a free loopback port for as long as the generator is suspended."""
    handler = type("Handler", (_Handler,), {"fake": fake})
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
    server = server_class(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.base_url = url
    info, public_pem = make_service_account(f"{url}/token")
    fake.public_keys[info["client_email"]] = public_pem
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield RunningFake(fake=fake, url=url, service_account=info)
    finally:
        server.shutdown()
        server.server_close()


# -- the installed-app sign-in (`mentorpulse auth google`) against this fake ---------------


class ConsentingBrowser(webbrowser.BaseBrowser):
    """A person who opens Google's consent page and agrees (the fake redirects back)."""

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        import httpx

        threading.Thread(
            target=lambda: httpx.get(url, follow_redirects=True, timeout=10), daemon=True
        ).start()
        return True


def consent_in_browser() -> None:
    """Make the browser the sign-in opens one whose user agrees at once."""
    webbrowser.register("mentorpulse-consent", None, ConsentingBrowser("consent"))


def write_installed_client(folder: Path, fake_url: str) -> Path:
    """The OAuth client file an admin downloads for an installed app, pointing at the fake."""
    client = {
        "installed": {
            "client_id": "cid.apps.googleusercontent.com",
            "client_secret": "GOCSPX-client-secret",
            "auth_uri": f"{fake_url}/o/oauth2/auth",
            "token_uri": f"{fake_url}/token",
            "redirect_uris": ["http://localhost"],
        }
    }
    path = folder / "client.json"
    path.write_text(json.dumps(client))
    return path

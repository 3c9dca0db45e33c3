"""A faithful fake of the Microsoft identity platform and the Graph subset we use.

Served over HTTPS on loopback with a certificate from a test CA (trustme), so msal and
httpx talk to it exactly as to the real thing. Implemented, as documented on
learn.microsoft.com:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST
  /{tenant}/oauth2/v2.0/token`` (client credentials with a secret or a certificate
  assertion, device code, refresh token) and ``POST /{tenant}/oauth2/v2.0/devicecode``;
- ``GET /v1.0/users/{id}/calendarView/delta`` with ``startDateTime``/``endDateTime``,
  ``$skiptoken`` pages (``@odata.nextLink``), ``$deltatoken`` rounds
  (``@odata.deltaLink``), ``Prefer: odata.maxpagesize`` and ``outlook.timezone``,
  ``@removed`` entries, thin occurrences (id, seriesMasterId, type, start, end only);
- ``GET /v1.0/users/{id}/events/{id}``;
- ``POST /v1.0/$batch`` (at most 20 requests, each answered on its own);
- ``GET /v1.0/users/{id}/onlineMeetings?$filter=JoinWebUrl eq '…'`` and the meeting's
  ``attendanceReports`` (``$expand=attendanceRecords``).

Fault injection: ``throttle(mailbox or "$batch", status, retry_after, times)`` answers the next
requests about a mailbox with 429/503 + Retry-After (inside a batch too);
``expire_sync_state(mailbox, style)`` makes older delta tokens fail with 410 Gone or 400
``syncStateNotFound``.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from zoneinfo import ZoneInfo

import jwt
import trustme

GRAPH_PREFIX = "/v1.0"


def _iso7(moment: datetime) -> str:
    """Graph's dateTimeTimeZone.dateTime: local time, seven fractional digits."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.0000000")


# The Windows zones the fake answers in, with their IANA zones written out here: not read
# from the table the connector maps them back with, so a wrong mapping there shows.
SERVED_ZONES = {
    "W. Europe Standard Time": "Europe/Berlin",
    "Pacific Standard Time": "America/Los_Angeles",
    "Eastern Standard Time": "America/New_York",
    "GMT Standard Time": "Europe/London",
    "India Standard Time": "Asia/Kolkata",
    "Tokyo Standard Time": "Asia/Tokyo",
    "UTC": "UTC",
}


def _when(moment: datetime, zone: str | None) -> dict[str, str]:
    """A dateTimeTimeZone in UTC (``outlook.timezone="UTC"``) or in a Windows zone."""
    if zone is None:
        return {"dateTime": _iso7(moment.astimezone(UTC)), "timeZone": "UTC"}
    local = moment.astimezone(ZoneInfo(SERVED_ZONES[zone]))
    return {"dateTime": _iso7(local), "timeZone": zone}


def _offset_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeEvent:
    """One instance of a mailbox's calendar view (single, occurrence or exception)."""

    id: str
    ical_uid: str
    subject: str
    start: datetime
    end: datetime
    organizer: str
    attendees: list[tuple[str, str, str]] = field(default_factory=list)  # email, type, response
    owner_response: str = "organizer"
    type: str = "singleInstance"
    series_master_id: str | None = None
    original_start: datetime | None = None
    is_cancelled: bool = False
    is_all_day: bool = False
    zone: str = "W. Europe Standard Time"
    join_url: str | None = None
    categories: list[str] = field(default_factory=list)
    thin_in_delta: bool = False
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))

    def full(self, zone: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.etag": f'W/"{self.id}-{int(self.modified.timestamp())}"',
            "id": self.id,
            "iCalUId": self.ical_uid,
            "subject": self.subject,
            "type": self.type,
            "seriesMasterId": self.series_master_id,
            "originalStart": _offset_iso(self.original_start) if self.original_start else None,
            "originalStartTimeZone": self.zone,
            "originalEndTimeZone": self.zone,
            "start": _when(self.start, zone),
            "end": _when(self.end, zone),
            "isAllDay": self.is_all_day,
            "isCancelled": self.is_cancelled,
            "isOnlineMeeting": self.join_url is not None,
            "onlineMeeting": {"joinUrl": self.join_url} if self.join_url else None,
            "categories": list(self.categories),
            "lastModifiedDateTime": _offset_iso(self.modified),
            "showAs": "busy",
            "responseStatus": {"response": self.owner_response, "time": "0001-01-01T00:00:00Z"},
            "organizer": {"emailAddress": {"name": self.organizer, "address": self.organizer}},
            "attendees": [
                {
                    "type": kind,
                    "status": {"response": response, "time": "0001-01-01T00:00:00Z"},
                    "emailAddress": {"name": email, "address": email},
                }
                for email, kind, response in self.attendees
            ],
        }
        return body

    def thin(self, zone: str | None = None) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.event",
            "id": self.id,
            "seriesMasterId": self.series_master_id,
            "start": _when(self.start, zone),
            "end": _when(self.end, zone),
        }


@dataclass
class Mailbox:
    events: dict[str, FakeEvent] = field(default_factory=dict)
    # The change log: (sequence, event id); a delta token remembers a sequence.
    changes: list[tuple[int, str]] = field(default_factory=list)
    epoch: int = 0  # tokens of an older epoch are expired
    time_zone: str = "W. Europe Standard Time"  # mailboxSettings.timeZone
    expiry_style: str = "gone"


@dataclass
class AttendanceReport:
    id: str
    start: datetime
    end: datetime
    records: list[tuple[str, int, datetime, datetime]]  # email, seconds, joined, left


@dataclass
class OnlineMeeting:
    id: str
    organizer: str
    join_url: str
    reports: list[AttendanceReport] = field(default_factory=list)


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    in_batch: bool = False
    query: str = ""


def _encode(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any] | None:
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class GraphFake:
    """The state of the fake tenant; ``serve()`` starts it, ``url`` says where."""

    def __init__(self, tmp_path: Path, *, tenant: str = "contoso.example") -> None:
        self.tenant = tenant
        self.client_id = "11111111-2222-3333-4444-555555555555"
        self.client_secret = "s3cr3t-Graph-Client-Secret~value"
        self.certificate_thumbprint: str | None = None
        self.certificate_public_pem: bytes | None = None
        self.mailboxes: dict[str, Mailbox] = {}
        self.meetings: dict[str, OnlineMeeting] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> user
        self.device_codes: dict[str, str | None] = {}  # device code -> user once approved
        self.auto_approve: str | None = None  # the user who signs in at once, in tests
        self.deny_meetings = False  # no OnlineMeetings permission / access policy
        self.ignore_timezone_preference = False  # answer in the mailbox's Windows zone
        self.forbidden: set[str] = set()  # mailboxes outside the app's RBAC scope
        self.log: list[Logged] = []
        self.tokens_issued = 0
        self._access_tokens: set[str] = set()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._throttles: dict[str, list[tuple[int, str]]] = {}
        self._lock = threading.RLock()
        self._ca = trustme.CA()
        self.ca_path = tmp_path / "graph-fake-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- tenant state -------------------------------------------------------------------

    def next_id(self, prefix: str = "AAMk") -> str:
        return f"{prefix}{next(self._ids):06d}="

    def mailbox(self, address: str) -> Mailbox:
        return self.mailboxes.setdefault(address.lower(), Mailbox())

    def put(self, address: str, event: FakeEvent) -> FakeEvent:
        """Add or change an event in a mailbox (bumps its change sequence)."""
        with self._lock:
            box = self.mailbox(address)
            event.modified = datetime.now(UTC)
            box.events[event.id] = event
            box.changes.append((next(self._seq), event.id))
        return event

    def delete(self, address: str, event_id: str) -> None:
        with self._lock:
            box = self.mailbox(address)
            box.events.pop(event_id, None)
            box.changes.append((next(self._seq), event_id))

    def expire_sync_state(self, address: str, style: str = "gone") -> None:
        """Older delta and skip tokens fail: 410 Gone, or 400 with ``syncStateNotFound``."""
        with self._lock:
            box = self.mailbox(address)
            box.epoch += 1
            box.expiry_style = style

    def throttle(
        self, address: str, *, status: int = 429, retry_after: str = "3", times: int = 1
    ) -> None:
        with self._lock:
            self._throttles.setdefault(address.lower(), []).extend([(status, retry_after)] * times)

    def add_meeting(self, organizer: str, join_url: str) -> OnlineMeeting:
        meeting = OnlineMeeting(self.next_id("MSo"), organizer.lower(), join_url)
        self.meetings[meeting.id] = meeting
        return meeting

    def graph_requests(self, *, in_batch: bool | None = None) -> list[Logged]:
        return [
            r
            for r in self.log
            if r.path.startswith(GRAPH_PREFIX) and (in_batch is None or r.in_batch == in_batch)
        ]

    # -- server -------------------------------------------------------------------------

    def serve(self) -> Iterator[GraphFake]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    # -- identity platform --------------------------------------------------------------

    def _oidc(self) -> dict[str, Any]:
        base = f"{self.url}/{self.tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        }

    def _issue(self, user: str | None = None) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        self._access_tokens.add(token)
        self.tokens_issued += 1
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        if user is not None:
            refresh = secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
            body["scope"] = "Calendars.Read offline_access"
        return body

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if form.get("client_id") != self.client_id:
            return 400, {
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: Application not found.",
            }
        if grant == "client_credentials":
            if "client_assertion" in form:
                if not self._assertion_ok(form["client_assertion"]):
                    return 401, {
                        "error": "invalid_client",
                        "error_description": "AADSTS700027: Client assertion contains an "
                        "invalid signature.",
                    }
            elif form.get("client_secret") != self.client_secret:
                return 401, {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                }
            return 200, self._issue()
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            code = form.get("device_code", "")
            if code not in self.device_codes:
                return 400, {"error": "expired_token", "error_description": "AADSTS70019"}
            user = self.device_codes[code]
            if user is None:
                return 400, {"error": "authorization_pending", "error_description": "AADSTS70016"}
            return 200, self._issue(user)
        if grant == "refresh_token":
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            if user is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "AADSTS700082: The refresh token has expired.",
                }
            return 200, self._issue(user)
        return 400, {"error": "unsupported_grant_type"}

    def _assertion_ok(self, assertion: str) -> bool:
        if self.certificate_public_pem is None:
            return False
        try:
            header = jwt.get_unverified_header(assertion)
            jwt.decode(
                assertion,
                self.certificate_public_pem,
                algorithms=["RS256", "PS256"],
                audience=self._oidc()["token_endpoint"],
            )
        except jwt.PyJWTError:
            return False
        thumb = header.get("x5t")
        return (
            thumb is not None
            and self.certificate_thumbprint is not None
            and (
                base64.urlsafe_b64decode(thumb + "=" * (-len(thumb) % 4)).hex().lower()
                == self.certificate_thumbprint.lower()
            )
        )

    def device_flow(self) -> dict[str, Any]:
        code = secrets.token_urlsafe(16)
        self.device_codes[code] = self.auto_approve
        return {
            "device_code": code,
            "user_code": "FAKE-CODE",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": "To sign in, use a web browser to open https://microsoft.com/devicelogin "
            "and enter the code FAKE-CODE to authenticate.",
        }

    def approve_devices(self, user: str) -> None:
        for code in self.device_codes:
            self.device_codes[code] = user

    # -- graph --------------------------------------------------------------------------

    def graph(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: Any,
        *,
        in_batch: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        """One Graph request (also each request of a batch): status, headers, JSON body."""
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.log.append(Logged(method, path, dict(headers), in_batch, unquote(parts.query)))
            auth = headers.get("authorization", "")
            if not in_batch and (
                not auth.startswith("Bearer ") or auth[7:] not in self._access_tokens
            ):
                return _error(401, "InvalidAuthenticationToken", "Access token is empty.")
            segments = [s for s in path.removeprefix(GRAPH_PREFIX).split("/") if s]
            if segments == ["$batch"] and method == "POST" and not in_batch:
                if throttled := self._throttles.get("$batch"):
                    status, retry_after = throttled.pop(0)
                    return _error(
                        status,
                        "TooManyRequests",
                        "Too many requests.",
                        {"Retry-After": retry_after},
                    )
                return self._batch(body, headers)
            if len(segments) >= 2 and segments[0] in ("users", "me"):
                user = segments[1].lower()
                rest = segments[2:]
                if throttled := self._throttles.get(user):
                    status, retry_after = throttled.pop(0)
                    code = "TooManyRequests" if status == 429 else "ServiceUnavailable"
                    return _error(
                        status,
                        code,
                        "Application is over its MailboxConcurrency limit.",
                        {"Retry-After": retry_after},
                    )
                if user in self.forbidden:
                    return _error(
                        403,
                        "ErrorAccessDenied",
                        "Access is denied. Check credentials and try again.",
                    )
                if rest == ["calendarView", "delta"]:
                    if user not in self.mailboxes:
                        return _error(
                            404, "ErrorInvalidUser", f"The requested user '{user}' is invalid."
                        )
                    return self._delta(user, query, headers)
                if rest == ["mailboxSettings", "timeZone"] and user in self.mailboxes:
                    return 200, {}, {"value": self.mailboxes[user].time_zone}
                if len(rest) == 2 and rest[0] == "events":
                    event = self.mailboxes.get(user, Mailbox()).events.get(rest[1])
                    if event is None:
                        return _error(
                            404,
                            "ErrorItemNotFound",
                            "The specified object was not found in the store.",
                        )
                    return 200, {}, event.full(self._zone_of(user, headers))
                if rest and rest[0] == "onlineMeetings":
                    return self._meetings(user, rest[1:], query)
            return _error(400, "BadRequest", f"Resource not found for the segment '{path}'.")

    def _zone_of(self, user: str, headers: dict[str, str]) -> str | None:
        """Times in UTC when asked for with Prefer, else in the mailbox's own zone."""
        asked = 'outlook.timezone="UTC"' in headers.get("prefer", "").replace(" ", "")
        if asked and not self.ignore_timezone_preference:
            return None
        return self.mailbox(user).time_zone

    def _batch(self, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > 20:
            return _error(400, "BadRequest", "Number of batch requests exceeds the limit of 20.")
        responses = []
        for request in requests:
            sub_headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
            status, extra, payload = self.graph(
                request["method"],
                GRAPH_PREFIX + request["url"],
                sub_headers,
                request.get("body"),
                in_batch=True,
            )
            responses.append(
                {"id": request["id"], "status": status, "headers": extra, "body": payload}
            )
        return 200, {}, {"responses": responses}

    def _delta(
        self, user: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        box = self.mailboxes[user]
        prefer = headers.get("prefer", "")
        page_size = 10
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip() == "odata.maxpagesize" and value.strip().isdigit():
                page_size = int(value)
        applied = {"Preference-Applied": f"odata.maxpagesize={page_size}"}
        if 'outlook.timezone="UTC"' in prefer.replace(" ", ""):
            applied["Preference-Applied"] += ', outlook.timezone="UTC"'
        if "$skiptoken" in query or "$deltatoken" in query:
            state = _decode(query.get("$skiptoken") or query.get("$deltatoken") or "")
            if state is None:
                return _error(400, "BadRequest", "Invalid token.")
            if state["epoch"] != box.epoch:
                if box.expiry_style == "gone":
                    return _error(
                        410, "SyncStateNotFound", "The sync state generation is out of date."
                    )
                return _error(400, "syncStateNotFound", "The sync state cannot be found.")
        else:
            try:
                start = datetime.fromisoformat(query["startDateTime"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(query["endDateTime"].replace("Z", "+00:00"))
            except (KeyError, ValueError):
                return _error(
                    400, "ErrorInvalidParameter", "startDateTime and endDateTime are required."
                )
            state = {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "since": None,
                "upto": box.changes[-1][0] if box.changes else 0,
                "offset": 0,
                "epoch": box.epoch,
            }
        if "$deltatoken" in query:  # a new round: changes after the token's sequence
            state = {
                **state,
                "since": state["upto"],
                "upto": box.changes[-1][0] if box.changes else 0,
                "offset": 0,
            }
        start, end = datetime.fromisoformat(state["start"]), datetime.fromisoformat(state["end"])
        zone = self._zone_of(user, headers)

        def in_window(event: FakeEvent) -> bool:
            return event.start < end and event.end > start

        items: list[dict[str, Any]] = []
        if state["since"] is None:
            for event in sorted(box.events.values(), key=lambda e: e.id):
                if in_window(event):
                    items.append(event.thin(zone) if event.thin_in_delta else event.full(zone))
        else:
            changed = sorted({i for seq, i in box.changes if state["since"] < seq <= state["upto"]})
            for event_id in changed:
                event = box.events.get(event_id)
                if event is None or not in_window(event):
                    items.append(
                        {
                            "@odata.type": "#microsoft.graph.event",
                            "id": event_id,
                            "@removed": {"reason": "deleted"},
                        }
                    )
                else:
                    items.append(event.thin(zone) if event.thin_in_delta else event.full(zone))
        offset = state["offset"]
        page = items[offset : offset + page_size]
        base = f"{self.url}{GRAPH_PREFIX}/users/{quote(user)}/calendarView/delta"
        result: dict[str, Any] = {
            "@odata.context": f"{self.url}{GRAPH_PREFIX}/$metadata#Collection(event)",
            "value": page,
        }
        if offset + page_size < len(items):
            result["@odata.nextLink"] = (
                f"{base}?$skiptoken={_encode({**state, 'offset': offset + page_size})}"
            )
        else:
            result["@odata.deltaLink"] = f"{base}?$deltatoken={_encode({**state, 'offset': 0})}"
        return 200, applied, result

    def _meetings(
        self, user: str, rest: list[str], query: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        if self.deny_meetings:
            return _error(
                403,
                "Forbidden",
                "No application access policy found for this app.",
            )
        if not rest:
            wanted = query.get("$filter", "")
            prefix = "JoinWebUrl eq '"
            if not wanted.startswith(prefix) or not wanted.endswith("'"):
                return _error(400, "BadRequest", "Filter is required: JoinWebUrl eq '<url>'.")
            url = wanted[len(prefix) : -1].replace("''", "'")
            found = [m for m in self.meetings.values() if m.organizer == user and m.join_url == url]
            return 200, {}, {"value": [{"id": m.id, "joinWebUrl": m.join_url} for m in found]}
        meeting = self.meetings.get(rest[0])
        if meeting is None or meeting.organizer != user:
            return _error(404, "NotFound", "Meeting not found.")
        if rest[1:] == ["attendanceReports"]:
            return (
                200,
                {},
                {
                    "value": [
                        {
                            "id": r.id,
                            "totalParticipantCount": len(r.records),
                            "meetingStartDateTime": _offset_iso(r.start),
                            "meetingEndDateTime": _offset_iso(r.end),
                        }
                        for r in meeting.reports
                    ]
                },
            )
        if len(rest) >= 3 and rest[1] == "attendanceReports":
            report = next((r for r in meeting.reports if r.id == rest[2]), None)
            if report is None:
                return _error(404, "NotFound", "Report not found.")
            records = [
                {
                    "emailAddress": email,
                    "totalAttendanceInSeconds": seconds,
                    "role": "Attendee",
                    "identity": {"id": email, "displayName": email},
                    "attendanceIntervals": [
                        {
                            "joinDateTime": _offset_iso(joined),
                            "leaveDateTime": _offset_iso(left),
                            "durationInSeconds": seconds,
                        }
                    ],
                }
                for email, seconds, joined, left in report.records
            ]
            if rest[3:] == ["attendanceRecords"]:
                return 200, {}, {"value": records}
            body = {
                "id": report.id,
                "meetingStartDateTime": _offset_iso(report.start),
                "meetingEndDateTime": _offset_iso(report.end),
            }
            if "attendanceRecords" in query.get("$expand", ""):
                body["attendanceRecords"] = records
            return 200, {}, body
        return _error(400, "BadRequest", "Unsupported segment.")


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    return (
        status,
        dict(headers or {}),
        {"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}},
    )


def _handler(fake: GraphFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = urlsplit(self.path).path
            if path == f"/{fake.tenant}/v2.0/.well-known/openid-configuration":
                fake.log.append(Logged("GET", path, headers))
                self._send(200, {}, fake._oidc())
                return
            self._send(*fake.graph("GET", self.path, headers, None))

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            raw = self._body()
            path = urlsplit(self.path).path
            if path.startswith(f"/{fake.tenant}/oauth2/v2.0/"):
                fake.log.append(Logged("POST", path, headers))
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                if path.endswith("/devicecode"):
                    self._send(200, {}, fake.device_flow())
                    return
                with fake._lock:
                    status, body = fake._token(form)
                self._send(status, {}, body)
                return
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(*_error(400, "BadRequest", "Invalid JSON."))
                return
            self._send(*fake.graph("POST", self.path, headers, body))

    return Handler

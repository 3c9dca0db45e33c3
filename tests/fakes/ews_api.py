"""A faithful fake of an on-premises Exchange server's EWS endpoint, for the operations
the ``exchange`` connector's flow sends through exchangelib.

Served over HTTPS on loopback with a certificate from a test CA (trustme), as SOAP 1.1 at
``/EWS/Exchange.asmx``, so exchangelib talks to it exactly as to a real server. Implemented,
as documented on learn.microsoft.com (EWS reference):

- every answer carries ``ServerVersionInfo`` (Exchange 2016 CU, ``V2017_07_11``), so
  exchangelib's version probe (``ConvertId`` with a dummy id) learns the build;
- ``SyncFolderItems`` on the calendar (by ``DistinguishedFolderId`` with a mailbox) from a
  ``SyncState``: ``Create``/``Update``/``Delete`` of calendar items (single items and
  series masters: an occurrence's change is an update of its master), at most
  ``MaxChangesReturned`` per answer with ``IncludesLastItemInRange``; an unknown or older
  epoch's state is ``ErrorInvalidSyncStateData``;
- ``FindItem`` with a ``CalendarView``: the occurrences overlapping the view, series
  expanded (moved occurrences are exceptions, an organizer's cancelled occurrence is
  deleted from the series, an attendee's copy keeps it with ``IsCancelled``), at most
  ``MaxEntriesReturned`` and the server's own ``find_limit`` (EWSFindCountLimit), with
  ``IncludesLastItemInRange="false"`` when more were there;
- ``GetItem`` of single items and occurrences, with the properties asked for; one
  response message per id, an unknown id is ``ErrorItemNotFound``;
- ``ExchangeImpersonation`` honoured: a mailbox outside ``impersonation_scope`` is refused
  with ``ErrorImpersonateUserDenied``; without the header (delegate access), a mailbox that
  did not share its calendar (``delegates``) is ``ErrorAccessDenied``, an unknown one
  ``ErrorNonExistentMailbox``;
- HTTP Basic authentication (401 with ``WWW-Authenticate: Basic`` otherwise), or, after
  ``use_ntlm()``, NTLM as IIS does it: a connection-bound negotiate / challenge /
  authenticate handshake, answered by pyspnego's NTLM acceptor against a credential file
  (``NTLM_USER_FILE``, which the caller sets to the path ``use_ntlm`` returns).

Autodiscover as exchangelib 5 does it (SOAP ``GetUserSettings`` at
``/autodiscover/autodiscover.svc``, not the POX ``Autodiscover.xml`` of older clients): the
server answers for the hosts ``autodiscover.<domain>`` and ``mail.<domain>`` (its
certificate names them), while ``<domain>`` itself has no address, so a client walks from
step 1 to step 2 as against a typical on-premises setup; the answer gives the mailbox's
``ExternalEwsUrl`` on ``mail.<domain>`` (only ``InternalEwsUrl`` without
``external_access``), an unknown address is ``InvalidUser``.
``resolve_hosts(monkeypatch)`` points those names (DNS A/SRV lookups and connections to
port 443) at the loopback server: the test's stand-in for the organisation's DNS.

Fault injection: ``busy(times, back_off_ms)`` answers the next requests with the SOAP fault
``ErrorServerBusy`` carrying ``BackOffMilliseconds``; ``expire_sync_state(mailbox)``;
``password`` changed refuses the credentials (401); ``drop_next(operation)`` closes the
connection without answering; ``fail_next(operation, status)`` answers a bare 500.
"""

from __future__ import annotations

import base64
import itertools
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import trustme

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
ANS = "http://schemas.microsoft.com/exchange/2010/Autodiscover"
WSA = "http://www.w3.org/2005/08/addressing"
PATH = "/EWS/Exchange.asmx"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.svc"

# Windows zones as Outlook writes them into StartTimeZone (Id and Name, from real items),
# with the IANA zone each means written out here: not read from the mapper under test.
OUTLOOK_ZONES: dict[str, tuple[str, str]] = {
    "W. Europe Standard Time": (
        "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
        "Europe/Berlin",
    ),
    "Pacific Standard Time": ("(UTC-08:00) Pacific Time (US & Canada)", "America/Los_Angeles"),
    "Eastern Standard Time": ("(UTC-05:00) Eastern Time (US & Canada)", "America/New_York"),
    "GMT Standard Time": ("(UTC+00:00) Dublin, Edinburgh, Lisbon, London", "Europe/London"),
    "India Standard Time": ("(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi", "Asia/Kolkata"),
    "Tokyo Standard Time": ("(UTC+09:00) Osaka, Sapporo, Tokyo", "Asia/Tokyo"),
    "Romance Standard Time": ("(UTC+01:00) Brussels, Copenhagen, Madrid, Paris", "Europe/Paris"),
    "AUS Eastern Standard Time": ("(UTC+10:00) Canberra, Melbourne, Sydney", "Australia/Sydney"),
    "UTC": ("(UTC) Coordinated Universal Time", "Etc/UTC"),
}

_RESPONSE_TYPES = {"accepted": "Accept", "declined": "Decline", "tentative": "Tentative"}


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass
class Occurrence:
    """One instance of a series in one mailbox's copy."""

    original_start: datetime
    start: datetime
    end: datetime
    cancelled: bool = False  # an attendee's copy of a cancelled occurrence
    deleted: bool = False  # gone from the series (DeletedOccurrences)
    changed: bool = False  # moved or otherwise an exception

    @property
    def is_exception(self) -> bool:
        return self.changed or self.cancelled


@dataclass
class CalendarItem:
    """A single item or a series master in one mailbox (each mailbox has its own copy)."""

    id: str
    uid: str
    subject: str
    organizer: str
    start: datetime
    end: datetime
    attendees: list[tuple[str, str, str]] = field(default_factory=list)  # email, kind, response
    my_response: str = "Organizer"  # the MyResponseType of this copy
    zone: str = "W. Europe Standard Time"
    zone_name: str | None = None  # a Name only (legacy items), or an unmappable Id
    categories: list[str] = field(default_factory=list)
    cancelled: bool = False
    all_day: bool = False
    occurrences: list[Occurrence] | None = None  # None: a single item
    sequence: int = 0
    changekey: int = 1
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    unreadable: bool = False  # served with a start no client can read

    def occurrence_id(self, index: int) -> str:
        return f"{self.id}~{index}"


@dataclass
class Mailbox:
    address: str
    items: dict[str, CalendarItem] = field(default_factory=dict)
    changes: list[tuple[int, str, str]] = field(default_factory=list)  # seq, kind, item id
    epoch: int = 0


@dataclass
class Logged:
    operation: str
    mailbox: str | None
    impersonated: str | None


class EwsFake:
    """The state of the fake server; ``serve()`` starts it, ``url`` is its EWS endpoint."""

    def __init__(self, tmp_path: Path) -> None:
        self.username = "svc-mentorpulse@contoso.example"
        self.password = "Exchange-Service-Password-1!"
        self.mailboxes: dict[str, Mailbox] = {}
        self.impersonation_scope: set[str] | None = None  # None: every mailbox
        self.delegates: set[str] = set()  # mailboxes that shared their calendar
        self.find_limit = 1000  # EWSFindCountLimit
        self.ntlm = False
        self.log: list[Logged] = []
        self._busy: list[int] = []
        self._drop: list[str] = []
        self._fail: list[tuple[str, int]] = []
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._ca = trustme.CA()
        self.ca_path = tmp_path / "ews-fake-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self.url = ""
        self.port = 0
        self.domain = "contoso.example"  # the mailboxes' domain, for autodiscover
        self.hosts = {f"autodiscover.{self.domain}", f"mail.{self.domain}"}  # have an address
        self.external_access = True  # False: autodiscover publishes only InternalEwsUrl

    # -- server state ------------------------------------------------------------------

    def next_id(self) -> str:
        return f"AAMkAGI2{next(self._ids):08d}AAA="

    def mailbox(self, address: str) -> Mailbox:
        address = address.lower()
        with self._lock:
            return self.mailboxes.setdefault(address, Mailbox(address))

    def put(self, address: str, item: CalendarItem) -> CalendarItem:
        """Add or change an item (a new ChangeKey, an entry in the sync log)."""
        with self._lock:
            box = self.mailbox(address)
            kind = "Update" if item.id in box.items else "Create"
            item.changekey += 1
            item.modified = datetime.now(UTC)
            box.items[item.id] = item
            box.changes.append((next(self._seq), kind, item.id))
        return item

    def delete(self, address: str, item_id: str) -> None:
        with self._lock:
            box = self.mailbox(address)
            if box.items.pop(item_id, None) is not None:
                box.changes.append((next(self._seq), "Delete", item_id))

    def expire_sync_state(self, address: str) -> None:
        """Every sync state handed out for this mailbox so far is refused from now on."""
        with self._lock:
            self.mailbox(address).epoch += 1

    def use_ntlm(self, tmp_path: Path, domain: str = "CONTOSO") -> Path:
        """Ask for NTLM instead of Basic; the account is ``DOMAIN\\user`` from now on.
        Returns the credential file pyspnego's acceptor reads (set ``NTLM_USER_FILE``)."""
        user = self.username.split("@")[0].split("\\")[-1]
        self.username = f"{domain}\\{user}"
        self.ntlm = True
        path = tmp_path / "ntlm-users"
        path.write_text(f"{domain}:{user}:{self.password}\n")
        return path

    def busy(self, times: int = 1, back_off_ms: int = 3000) -> None:
        with self._lock:
            self._busy.extend([back_off_ms] * times)

    def drop_next(self, operation: str) -> None:
        """The next ``operation`` request has its connection closed without an answer."""
        with self._lock:
            self._drop.append(operation)

    def fail_next(self, operation: str, status: int = 500) -> None:
        with self._lock:
            self._fail.append((operation, status))

    def requests(self, operation: str | None = None) -> list[Logged]:
        return [r for r in self.log if operation is None or r.operation == operation]

    # -- server ------------------------------------------------------------------------

    def serve(self) -> Iterator[EwsFake]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert("127.0.0.1", "localhost", *sorted(self.hosts)).configure_cert(context)
        # The handshake happens in the request's thread, not in the accepting one.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        server.block_on_close = False
        self.port = server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}{PATH}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    @property
    def discovered_url(self) -> str:
        """The EWS endpoint autodiscover hands out (reached through ``resolve_hosts``)."""
        return f"https://mail.{self.domain}{PATH}"

    def resolve_hosts(self, monkeypatch: Any) -> None:
        """The organisation's DNS, for this test: the names in ``hosts`` have an address
        (dnspython's A lookups, which exchangelib's autodiscover makes first) and
        connections to them on port 443 reach the loopback server; every other name of
        the domain, and every SRV record, does not exist."""
        import dns.resolver

        real_getaddrinfo = socket.getaddrinfo
        real_resolve = dns.resolver.Resolver.resolve

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str) and host.lower() in self.hosts and int(port or 0) == 443:
                return real_getaddrinfo("127.0.0.1", self.port, *args, **kwargs)
            return real_getaddrinfo(host, port, *args, **kwargs)

        def resolve(resolver: Any, name: Any, kind: Any = "A", *args: Any, **kwargs: Any) -> Any:
            host = str(name).rstrip(".").lower()
            if host.endswith(self.domain) or host == self.domain:
                if kind == "A" and host in self.hosts:
                    return [host]
                raise dns.resolver.NXDOMAIN(qnames=[str(name)])
            return real_resolve(resolver, name, kind, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(dns.resolver.Resolver, "resolve", resolve)

    def autodiscover(self, body: bytes) -> str:
        """A GetUserSettings answer: the asked mailbox's EWS endpoint and schemas."""
        envelope = ET.fromstring(body)
        users = [
            (mailbox.text or "").strip().lower() for mailbox in envelope.iter(f"{{{ANS}}}Mailbox")
        ]
        responses = []
        with self._lock:
            for user in users:
                self.log.append(Logged("GetUserSettings", user, None))
                if user not in self.mailboxes and user != self.username.lower():
                    responses.append(
                        "<UserResponse><ErrorCode>InvalidUser</ErrorCode>"
                        f"<ErrorMessage>Invalid user: '{escape(user)}'</ErrorMessage>"
                        '<RedirectTarget i:nil="true"/><UserSettingErrors/><UserSettings/>'
                        "</UserResponse>"
                    )
                    continue
                settings = {
                    "AutoDiscoverSMTPAddress": user,
                    **({"ExternalEwsUrl": self.discovered_url} if self.external_access else {}),
                    "InternalEwsUrl": self.discovered_url,
                    "CasVersion": "15.01.2507.006",
                    "EwsSupportedSchemas": "Exchange2007, Exchange2007_SP1, Exchange2010, "
                    "Exchange2010_SP1, Exchange2010_SP2, Exchange2013, Exchange2013_SP1, "
                    "Exchange2016",
                }
                values = "".join(
                    f'<UserSetting i:type="StringSetting"><Name>{name}</Name>'
                    f"<Value>{escape(value)}</Value></UserSetting>"
                    for name, value in settings.items()
                )
                responses.append(
                    "<UserResponse><ErrorCode>NoError</ErrorCode>"
                    '<ErrorMessage>No error.</ErrorMessage><RedirectTarget i:nil="true"/>'
                    f"<UserSettingErrors/><UserSettings>{values}</UserSettings></UserResponse>"
                )
        return (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{SOAP}" xmlns:a="{WSA}"><s:Header>'
            '<a:Action s:mustUnderstand="1">'
            "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/"
            "GetUserSettingsResponse</a:Action>"
            f'<h:ServerVersionInfo xmlns:h="{ANS}" '
            'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
            "<h:MajorVersion>15</h:MajorVersion><h:MinorVersion>1</h:MinorVersion>"
            "<h:MajorBuildNumber>2507</h:MajorBuildNumber>"
            "<h:MinorBuildNumber>6</h:MinorBuildNumber><h:Version>Exchange2015</h:Version>"
            "</h:ServerVersionInfo></s:Header><s:Body>"
            f'<GetUserSettingsResponseMessage xmlns="{ANS}">'
            '<Response xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
            "<ErrorCode>NoError</ErrorCode><ErrorMessage/>"
            f"<UserResponses>{''.join(responses)}</UserResponses>"
            "</Response></GetUserSettingsResponseMessage></s:Body></s:Envelope>"
        )

    # -- SOAP ---------------------------------------------------------------------------

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user.lower() == self.username.lower() and password == self.password

    def answer(self, body: bytes) -> tuple[int, str | None]:
        """The status and SOAP envelope for one request; None: drop the connection."""
        envelope = ET.fromstring(body)
        header = envelope.find(f"{{{SOAP}}}Header")
        operation_elem = envelope.find(f"{{{SOAP}}}Body")
        operation_elem = operation_elem[0] if operation_elem is not None else None
        if operation_elem is None:
            return 500, _fault("ErrorSchemaValidation", "No operation.")
        operation = operation_elem.tag.rpartition("}")[2]
        impersonated = None
        if header is not None:
            address = header.find(f"{{{T}}}ExchangeImpersonation//{{{T}}}PrimarySmtpAddress")
            impersonated = address.text.lower() if address is not None and address.text else None
        with self._lock:
            mailbox = _addressed(operation_elem) or self._owner(operation_elem)
            self.log.append(Logged(operation, mailbox, impersonated))
            if operation in self._drop:
                self._drop.remove(operation)
                return 0, None
            for index, (failing, status) in enumerate(self._fail):
                if failing == operation:
                    del self._fail[index]
                    return status, ""
            if self._busy:
                back_off = self._busy.pop(0)
                return 500, _fault(
                    "ErrorServerBusy",
                    "The server cannot service this request right now. Try again later.",
                    f'<t:Value Name="BackOffMilliseconds">{back_off}</t:Value>',
                )
            if impersonated is not None:
                refusal = self._impersonation_refused(impersonated)
                if refusal is not None:
                    return 500, refusal
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                return 500, _fault("ErrorInvalidRequest", f"{operation} is not served.")
            if operation != "ConvertId" and mailbox is not None:
                refused = self._mailbox_refused(mailbox, impersonated)
                if refused is not None:
                    return 200, _envelope(_error_response(operation, *refused))
            return 200, _envelope(handler(operation_elem, mailbox))

    def _owner(self, operation: ET.Element) -> str | None:
        """The mailbox whose items a request names by id (ids are unique server-wide)."""
        for item_id in operation.iter(f"{{{T}}}ItemId"):
            master = item_id.get("Id", "").partition("~")[0]
            for address, box in self.mailboxes.items():
                if master in box.items:
                    return address
        return None

    def _impersonation_refused(self, user: str) -> str | None:
        if user not in self.mailboxes:
            return _fault("ErrorNonExistentMailbox", f"The SMTP address has no mailbox: {user}")
        if self.impersonation_scope is not None and user not in self.impersonation_scope:
            return _fault(
                "ErrorImpersonateUserDenied",
                "The account does not have permission to impersonate the requested user.",
            )
        return None

    def _mailbox_refused(self, mailbox: str, impersonated: str | None) -> tuple[str, str] | None:
        if mailbox not in self.mailboxes:
            return "ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."
        if impersonated is None and mailbox not in self.delegates:
            return "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        if impersonated is not None and impersonated != mailbox:
            return "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        return None

    # -- operations ----------------------------------------------------------------------

    def _op_ConvertId(self, request: ET.Element, mailbox: str | None) -> str:
        # exchangelib's version probe converts a dummy id: the answer's header is the point.
        return _error_response("ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.")

    def _op_SyncFolderItems(self, request: ET.Element, mailbox: str | None) -> str:
        assert mailbox is not None
        box = self.mailboxes[mailbox]
        state_elem = request.find(f"{{{M}}}SyncState")
        since = 0
        if state_elem is not None and state_elem.text:
            decoded = _decode_state(state_elem.text)
            if decoded is None or decoded[0] != mailbox or decoded[1] != box.epoch:
                return _error_response(
                    "SyncFolderItems",
                    "ErrorInvalidSyncStateData",
                    "Synchronization state data is corrupt or otherwise invalid.",
                )
            since = decoded[2]
        limit_elem = request.find(f"{{{M}}}MaxChangesReturned")
        limit = int(limit_elem.text) if limit_elem is not None and limit_elem.text else 100
        latest: dict[str, tuple[int, str]] = {}
        for seq, change, item_id in box.changes:
            if seq > since:
                first = latest.get(item_id)
                created = change == "Update" and first is not None and first[1] == "Create"
                latest[item_id] = (seq, "Create" if created else change)
        if since == 0:  # from the beginning: what is there now, each once
            latest = {i: (s, "Create") for i, (s, _) in latest.items() if i in box.items}
        pending = sorted(latest.items(), key=lambda entry: entry[1][0])
        shown, more = pending[:limit], len(pending) > limit
        last = shown[-1][1][0] if shown and more else max([since, *(s for s, _, _ in box.changes)])
        changes = []
        for item_id, (_, kind) in shown:
            item = box.items.get(item_id)
            if kind == "Delete" or item is None:
                if since == 0:
                    continue
                changes.append(f'<t:Delete><t:ItemId Id="{item_id}" ChangeKey="x"/></t:Delete>')
            else:
                changes.append(
                    f"<t:{kind}><t:CalendarItem><t:ItemId Id={quoteattr(item.id)} "
                    f'ChangeKey="{item.changekey}"/></t:CalendarItem></t:{kind}>'
                )
        return (
            "<m:SyncFolderItemsResponse><m:ResponseMessages>"
            '<m:SyncFolderItemsResponseMessage ResponseClass="Success">'
            "<m:ResponseCode>NoError</m:ResponseCode>"
            f"<m:SyncState>{_encode_state(mailbox, box.epoch, last)}</m:SyncState>"
            f"<m:IncludesLastItemInRange>{'false' if more else 'true'}</m:IncludesLastItemInRange>"
            f"<m:Changes>{''.join(changes)}</m:Changes>"
            "</m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"
        )

    def _instances(self, box: Mailbox) -> Iterator[tuple[str, CalendarItem, int | None]]:
        """Every instance of the calendar: (id, item, occurrence index or None)."""
        for item in box.items.values():
            if item.occurrences is None:
                yield item.id, item, None
                continue
            for index, occurrence in enumerate(item.occurrences):
                if not occurrence.deleted:
                    yield item.occurrence_id(index), item, index

    def _op_FindItem(self, request: ET.Element, mailbox: str | None) -> str:
        assert mailbox is not None
        box = self.mailboxes[mailbox]
        view = request.find(f"{{{M}}}CalendarView")
        if view is None:
            return _error_response("FindItem", "ErrorInvalidRequest", "Only CalendarView.")
        start, end = _parse(view.get("StartDate", "")), _parse(view.get("EndDate", ""))
        if end - start > timedelta(days=1830):
            return _error_response(
                "FindItem", "ErrorCalendarViewRangeTooBig", "The calendar view range is too big."
            )
        asked = int(view.get("MaxEntriesReturned") or 0) or self.find_limit
        found = []
        for instance_id, item, index in self._instances(box):
            begins, ends = _times(item, index)
            if ends > start and begins < end:
                found.append((begins, instance_id, item))
        found.sort(key=lambda entry: (entry[0], entry[1]))
        limit = min(asked, self.find_limit)
        shown = found[:limit]
        items = "".join(
            f"<t:CalendarItem><t:ItemId Id={quoteattr(instance_id)} "
            f'ChangeKey="{item.changekey}"/></t:CalendarItem>'
            for _, instance_id, item in shown
        )
        complete = "true" if len(found) <= limit else "false"
        return (
            "<m:FindItemResponse><m:ResponseMessages>"
            '<m:FindItemResponseMessage ResponseClass="Success">'
            "<m:ResponseCode>NoError</m:ResponseCode>"
            f'<m:RootFolder TotalItemsInView="{len(found)}" IncludesLastItemInRange="{complete}">'
            f"<t:Items>{items}</t:Items></m:RootFolder>"
            "</m:FindItemResponseMessage></m:ResponseMessages></m:FindItemResponse>"
        )

    def _op_GetItem(self, request: ET.Element, mailbox: str | None) -> str:
        box = self.mailboxes[mailbox] if mailbox is not None else Mailbox("")
        wanted = {
            uri.get("FieldURI", "").rpartition(":")[2] for uri in request.iter(f"{{{T}}}FieldURI")
        }
        messages = []
        for item_id_elem in request.iter(f"{{{T}}}ItemId"):
            instance_id = item_id_elem.get("Id", "")
            master_id, _, index_text = instance_id.partition("~")
            item = box.items.get(master_id)
            index = int(index_text) if index_text.isdigit() else None
            occurrences = item.occurrences if item is not None else None
            if (
                item is None
                or (index is None) != (occurrences is None)
                or (
                    occurrences is not None
                    and index is not None
                    and (index >= len(occurrences) or occurrences[index].deleted)
                )
            ):
                messages.append(
                    '<m:GetItemResponseMessage ResponseClass="Error">'
                    "<m:MessageText>The specified object was not found in the store."
                    "</m:MessageText>"
                    "<m:ResponseCode>ErrorItemNotFound</m:ResponseCode>"
                    "<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:Items/>"
                    "</m:GetItemResponseMessage>"
                )
                continue
            messages.append(
                '<m:GetItemResponseMessage ResponseClass="Success">'
                "<m:ResponseCode>NoError</m:ResponseCode>"
                f"<m:Items>{_calendar_item(instance_id, item, index, wanted)}</m:Items>"
                "</m:GetItemResponseMessage>"
            )
        return (
            "<m:GetItemResponse><m:ResponseMessages>"
            f"{''.join(messages)}</m:ResponseMessages></m:GetItemResponse>"
        )


def _times(item: CalendarItem, index: int | None) -> tuple[datetime, datetime]:
    if index is None or item.occurrences is None:
        return item.start, item.end
    occurrence = item.occurrences[index]
    return occurrence.start, occurrence.end


def _mailbox_xml(email: str) -> str:
    return (
        f"<t:Mailbox><t:Name>{escape(email.split('@', maxsplit=1)[0].title())}</t:Name>"
        f"<t:EmailAddress>{escape(email)}</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>"
        "<t:MailboxType>Mailbox</t:MailboxType></t:Mailbox>"
    )


def _calendar_item(
    instance_id: str, item: CalendarItem, index: int | None, wanted: set[str]
) -> str:
    """One CalendarItem element with the properties asked for (and its ItemId)."""
    begins, ends = _times(item, index)
    occurrence = (
        item.occurrences[index] if item.occurrences is not None and index is not None else None
    )
    if occurrence is None:
        kind = "Single"
    else:
        kind = "Exception" if occurrence.is_exception else "Occurrence"
    cancelled = item.cancelled or (occurrence is not None and occurrence.cancelled)
    zone_id = item.zone
    zone_name = item.zone_name or OUTLOOK_ZONES.get(zone_id, ("", ""))[0]
    groups = {
        "required": "RequiredAttendees",
        "optional": "OptionalAttendees",
        "resource": "Resources",
    }
    attendee_xml = {}
    for group_kind, tag in groups.items():
        members = [
            f"<t:Attendee>{_mailbox_xml(email)}"
            f"<t:ResponseType>{_RESPONSE_TYPES.get(response, 'NoResponseReceived')}"
            "</t:ResponseType>"
            "</t:Attendee>"
            for email, kind_of, response in item.attendees
            if kind_of == group_kind
        ]
        if members:
            attendee_xml[tag] = f"<t:{tag}>{''.join(members)}</t:{tag}>"
    start_text = "the day after tomorrow" if item.unreadable else _stamp(begins)
    fields = {
        "Subject": f"<t:Subject>{escape(item.subject)}</t:Subject>",
        "Categories": (
            "<t:Categories>"
            + "".join(f"<t:String>{escape(c)}</t:String>" for c in item.categories)
            + "</t:Categories>"
            if item.categories
            else ""
        ),
        "LastModifiedTime": f"<t:LastModifiedTime>{_stamp(item.modified)}</t:LastModifiedTime>",
        "UID": f"<t:UID>{escape(item.uid)}</t:UID>",
        "Start": f"<t:Start>{start_text}</t:Start>",
        "End": f"<t:End>{_stamp(ends)}</t:End>",
        "OriginalStart": (
            f"<t:OriginalStart>{_stamp(occurrence.original_start)}</t:OriginalStart>"
            if occurrence is not None
            else ""
        ),
        "IsAllDayEvent": f"<t:IsAllDayEvent>{str(item.all_day).lower()}</t:IsAllDayEvent>",
        "IsCancelled": f"<t:IsCancelled>{str(cancelled).lower()}</t:IsCancelled>",
        "CalendarItemType": f"<t:CalendarItemType>{kind}</t:CalendarItemType>",
        "MyResponseType": f"<t:MyResponseType>{item.my_response}</t:MyResponseType>",
        "Organizer": f"<t:Organizer>{_mailbox_xml(item.organizer)}</t:Organizer>",
        **attendee_xml,
        "AppointmentSequenceNumber": (
            f"<t:AppointmentSequenceNumber>{item.sequence}</t:AppointmentSequenceNumber>"
        ),
        "StartTimeZone": (
            f"<t:StartTimeZone Id={quoteattr(zone_id)} Name={quoteattr(zone_name)}/>"
            if zone_id
            else f"<t:StartTimeZone Name={quoteattr(zone_name)}/>"
        ),
    }
    body = "".join(value for name, value in fields.items() if name in wanted)
    return (
        f'<t:CalendarItem><t:ItemId Id={quoteattr(instance_id)} ChangeKey="{item.changekey}"/>'
        f"{body}</t:CalendarItem>"
    )


def _addressed(operation: ET.Element) -> str | None:
    """The mailbox a request's folder ids name (SyncFolderId, ParentFolderIds …)."""
    address = operation.find(f".//{{{T}}}DistinguishedFolderId/{{{T}}}Mailbox/{{{T}}}EmailAddress")
    return address.text.lower() if address is not None and address.text else None


def _encode_state(mailbox: str, epoch: int, seq: int) -> str:
    return base64.b64encode(f"{mailbox}|{epoch}|{seq}".encode()).decode()


def _decode_state(text: str) -> tuple[str, int, int] | None:
    try:
        mailbox, epoch, seq = base64.b64decode(text).decode().split("|")
        return mailbox, int(epoch), int(seq)
    except (ValueError, UnicodeDecodeError):
        return None


def _envelope(body: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Header>'
        '<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
        f'MinorBuildNumber="6" Version="V2017_07_11" xmlns:h="{T}" xmlns="{T}"/>'
        f'</s:Header><s:Body xmlns:m="{M}" xmlns:t="{T}">{body}</s:Body></s:Envelope>'
    )


def _error_response(operation: str, code: str, text: str) -> str:
    # Exchange's SyncFolderItems errors still carry an empty state and the range flag.
    sync = (
        "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>"
        if operation == "SyncFolderItems"
        else ""
    )
    return (
        f"<m:{operation}Response><m:ResponseMessages>"
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(text)}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{sync}</m:{operation}ResponseMessage>"
        f"</m:ResponseMessages></m:{operation}Response>"
    )


def _fault(code: str, text: str, values: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T}">a:{code}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring>'
        f'<detail><e:ResponseCode xmlns:e="{E}">{code}</e:ResponseCode>'
        f'<e:Message xmlns:e="{E}">{escape(text)}</e:Message>'
        f'<t:MessageXml xmlns:t="{T}">{values}</t:MessageXml>'
        "</detail></s:Fault></s:Body></s:Envelope>"
    )


def _handler(fake: EwsFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def setup(self) -> None:
            super().setup()
            self.ntlm_context: Any = None  # NTLM authenticates a connection, not a request
            self.ntlm_user: str | None = None
            # Headers and body go out in two writes: without this, each answer waits for
            # the client's delayed ACK (40 ms), which the figures would count as ours.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _ntlm(self) -> bool:
            """Whether this connection is signed in; else one handshake step is answered."""
            if self.ntlm_user is not None:
                return True
            header = self.headers.get("Authorization") or ""
            challenge = "NTLM"
            if header.startswith("NTLM "):
                import spnego
                from spnego.exceptions import SpnegoError

                if self.ntlm_context is None:
                    self.ntlm_context = spnego.server(protocol="ntlm")
                try:
                    answer = self.ntlm_context.step(base64.b64decode(header[5:]))
                except SpnegoError:  # a wrong password: start again
                    self.ntlm_context = None
                else:
                    if self.ntlm_context.complete:
                        self.ntlm_user = str(self.ntlm_context.client_principal)
                        return True
                    challenge = f"NTLM {base64.b64encode(answer or b'').decode()}"
            self._send(401, b"", "text/html", {"WWW-Authenticate": challenge})
            return False

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0].lower()
            if path not in (PATH.lower(), AUTODISCOVER_PATH):
                self._send(404, b"Not Found", "text/plain", {})
                return
            if fake.ntlm:
                if not self._ntlm():
                    return
            elif not fake.authorised(self.headers.get("Authorization")):
                self._send(
                    401,
                    b"",
                    "text/html",
                    {"WWW-Authenticate": 'Basic realm="mail.contoso.example"'},
                )
                return
            if path == AUTODISCOVER_PATH:
                self._send(200, fake.autodiscover(raw).encode(), "text/xml; charset=utf-8", {})
                return
            status, envelope = fake.answer(raw)
            if envelope is None:  # the connection drops mid-request
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if status == 500 and not envelope:
                page = b"<html><body><h1>Server Error in '/EWS' Application.</h1></body></html>"
                self._send(500, page, "text/html", {})
                return
            self._send(status, envelope.encode(), "text/xml; charset=utf-8", {})

    return Handler

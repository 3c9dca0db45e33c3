"""The one module that talks to exchangelib: a narrow, typed surface over an untyped library.

exchangelib builds and parses every SOAP message; this module chooses the operations (one
``SyncFolderItems`` per mailbox as the change probe, ``FindItem`` with a ``CalendarView``
for the occurrences of a window, ``GetItem`` for their properties), addresses the calendar
by its distinguished id (so no ``GetFolder`` round trip per mailbox), and turns the
library's exceptions into the connector contract's typed errors.
"""

from __future__ import annotations

import functools
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests.adapters
import structlog

from mentorpulse.config.schema import ExchangeSource
from mentorpulse.connectors.base import (
    AuthError,
    BadItem,
    ConnectorError,
    CursorExpired,
    TransientError,
    TryAgain,
    describe,
)

log = structlog.get_logger(__name__)

# What GetItem asks for each occurrence: no body, no attachments, no extended property.
ITEM_FIELDS = (
    "uid",
    "subject",
    "start",
    "end",
    "original_start",
    "is_all_day",
    "is_cancelled",
    "type",
    "my_response_type",
    "organizer",
    "required_attendees",
    "optional_attendees",
    "resources",
    "categories",
    "last_modified_time",
    "appointment_sequence_number",
    "_start_timezone",
)
SYNC_CHANGES = 512  # the most SyncFolderItems returns in one answer
GET_CHUNK = 100  # occurrences per GetItem request

# The schema versions the config names, as exchangelib's builds.
_BUILDS = {
    "Exchange2013": (15, 0, 0, 0),
    "Exchange2013_SP1": (15, 0, 847, 0),
    "Exchange2016": (15, 1, 0, 0),
    "Exchange2019": (15, 2, 0, 0),
}


class _Discovery(threading.local):
    """The autodiscovery under way in this thread: its hosts are not known beforehand
    (the domain, autodiscover.<domain>, an SRV target, a redirect), so the source's CA
    bundle applies to every request made meanwhile, and a TLS failure is remembered
    (exchangelib only moves on to its next step)."""

    bundle: str | None = None
    tls_error: str | None = None


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """exchangelib's HTTP adapter, verifying each endpoint against the CA bundle its source
    names (exchangelib has one adapter class for every session: this is its one hook)."""

    bundles: dict[str, str] = {}  # scheme://host:port → CA bundle path
    sent: dict[str, int] = {}  # requests sent per endpoint, for the figures
    discovery = _Discovery()
    _lock = threading.Lock()

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        origin = _origin(str(request.url))
        bundle = self.bundles.get(origin) or self.discovery.bundle
        if bundle is not None:
            kwargs["verify"] = bundle
        with self._lock:
            self.sent[origin] = self.sent.get(origin, 0) + 1
        try:
            return super().send(request, *args, **kwargs)
        except requests.exceptions.SSLError as error:
            self.discovery.tls_error = f"{origin}: {describe(error)}"
            raise


# Exchange's own zone markers. exchangelib reads a StartTimeZone Id with a "/" as an IANA
# key, and "tzone://Microsoft/Custom" then fails the whole GetItem answer (ValueError, not
# its UnknownTimeZone); entered in its translation table (the extension point it names) as
# a key that does not exist, they reach its "unknown zone" warning, whose name
# :meth:`Ews.items` hands to the one mapper.
EXCHANGE_MARKERS = ("tzone://Microsoft/Custom", "tzone://Microsoft/Utc")
_NO_SUCH_ZONE = "Etc/Unknown"


def _unknown_to_exchangelib(markers: Sequence[str]) -> None:
    from exchangelib.winzone import MS_TIMEZONE_TO_IANA_MAP

    for marker in markers:
        MS_TIMEZONE_TO_IANA_MAP.setdefault(marker, _NO_SUCH_ZONE)


@functools.cache  # exchangelib is imported when a source needs it, not with this module
def _endpoint_only() -> type:
    from exchangelib.autodiscover import Autodiscovery

    class EndpointOnly(Autodiscovery):  # type: ignore[misc]
        """exchangelib's discovery, without the protocol it would build from the answer:
        exchangelib caches that protocol by endpoint and credentials, so our Account would
        get it instead of the source's configuration (its auth, its version; the server's
        build never asked, a guess from the schema name kept instead)."""

        def _build_response(self, ad_response: Any) -> tuple[Any, None]:
            return ad_response, None

    return EndpointOnly


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


# How exchangelib (fields.TimeZoneField) says it could not read a zone name.
_ZONE_WARNING = re.compile(r"Cannot convert value (['\"])(.*?)\1 on field '_start_timezone'")


@dataclass(frozen=True, slots=True)
class Fetched:
    """One GetItem answer: the item (or the error for it) and, when exchangelib could
    not read its StartTimeZone, the name it had."""

    item_id: str
    item: Any
    unread_zone: str | None


@dataclass(frozen=True, slots=True)
class Probe:
    """What SyncFolderItems said since the stored state: whether anything changed."""

    changes: int
    state: str


class Ews:
    """One source's EWS endpoint: a protocol shared by all its mailboxes."""

    def __init__(self, source: ExchangeSource, *, base_dir: Path, server_version: str | None):
        import exchangelib
        from exchangelib.protocol import BaseProtocol

        self.source = source
        self.source_id = source.id
        BaseProtocol.HTTP_ADAPTER_CLS = _TrustAdapter
        BaseProtocol.USERAGENT = "mentorpulse"
        _unknown_to_exchangelib(EXCHANGE_MARKERS)
        bundle: str | None = None
        if source.ca_bundle:
            path = Path(source.ca_bundle).expanduser()
            bundle = str(path if path.is_absolute() else base_dir / path)
        self.endpoint = source.url or ""  # named by errors during discovery too
        if not self.endpoint:
            self.endpoint = self._discover(bundle)
        if bundle is not None:
            _TrustAdapter.bundles[_origin(self.endpoint)] = bundle
        self._sent_before = self.sent
        self.config = exchangelib.Configuration(
            service_endpoint=self.endpoint,
            credentials=exchangelib.Credentials(
                source.username, source.password.get_secret_value()
            ),
            auth_type=exchangelib.NTLM if source.auth == "ntlm" else exchangelib.BASIC,
            version=self._version(server_version),
            retry_policy=exchangelib.FailFast(),
        )
        self._accounts: dict[str, Any] = {}

    @property
    def sent(self) -> int:
        return _TrustAdapter.sent.get(_origin(self.endpoint), 0)

    @property
    def requests(self) -> int:
        """HTTP requests sent to the endpoint by this client (for the bench and the logs)."""
        return self.sent - self._sent_before

    def _version(self, discovered: str | None) -> Any:
        from exchangelib.version import Build, Version

        if self.source.version is not None:
            return Version(build=Build(*_BUILDS[self.source.version]))
        if discovered:
            try:
                parts = [int(p) for p in discovered.split(".")]
                return Version(build=Build(*parts[:4]))
            except (TypeError, ValueError):
                return None  # asked of the server again
        return None

    def server_version(self) -> str | None:
        """The build the server reported (kept in the cursor, so it is asked only once).

        exchangelib shares one protocol per endpoint and credentials between clients:
        the version it learnt is that protocol's, not necessarily our configuration's."""
        version = next(
            (c.account.protocol.config.version for c in self._accounts.values()),
            self.config.version,
        )
        build = getattr(version, "build", None)
        if build is None:
            return None
        parts = (build.major_version, build.minor_version, build.major_build, build.minor_build)
        return ".".join(str(p) for p in parts)

    def _discover(self, bundle: str | None) -> str:
        """The EWS endpoint exchangelib's autodiscover finds for the source's address,
        every discovery request trusting the source's ``ca_bundle``."""
        from exchangelib.credentials import Credentials
        from exchangelib.errors import AutoDiscoverFailed

        email = self.source.autodiscover_email or self.source.username
        credentials = Credentials(self.source.username, self.source.password.get_secret_value())
        discovery = _TrustAdapter.discovery
        discovery.bundle, discovery.tls_error = bundle, None
        try:
            with self.errors(f"autodiscover for {email}"):
                try:
                    answer, _ = _endpoint_only()(email=email, credentials=credentials).discover()
                except AutoDiscoverFailed:
                    raise TransientError(self.source_id, self._not_discovered(email)) from None
        finally:
            discovery.bundle = None
        # A server without external access publishes only its internal URL.
        endpoint = answer.ews_url or answer.user_settings.get("internal_ews_url")
        if not endpoint:
            raise TransientError(
                self.source_id, f"autodiscover for {email} gave no EWS URL; give it as url"
            )
        return str(endpoint)

    def _not_discovered(self, email: str) -> str:
        tls = _TrustAdapter.discovery.tls_error
        if tls is not None:
            return (
                f"autodiscover for {email} failed on TLS ({tls}); if the server's certificate "
                "comes from an internal CA, name its PEM file in ca_bundle"
            )
        domain = email.rpartition("@")[2]
        return (
            f"autodiscover for {email} found no EWS endpoint (neither {domain} nor "
            f"autodiscover.{domain} answered, no _autodiscover._tcp.{domain} SRV record); "
            "give the endpoint as url instead"
        )

    def _calendar(self, mailbox: str) -> Any:
        """The mailbox's calendar by its distinguished id: no GetFolder round trip."""
        found = self._accounts.get(mailbox)
        if found is not None:
            return found
        import exchangelib
        from exchangelib.folders import Calendar, Root
        from exchangelib.properties import DistinguishedFolderId, Mailbox

        account = exchangelib.Account(
            primary_smtp_address=mailbox,
            config=self.config,
            autodiscover=False,
            access_type=exchangelib.IMPERSONATION
            if self.source.access == "impersonation"
            else exchangelib.DELEGATE,
            locale="en_US",
            default_timezone=exchangelib.EWSTimeZone("UTC"),
        )
        account.protocol.TIMEOUT = self.source.timeout.total_seconds()
        root = Root(
            account=account,
            _distinguished_id=DistinguishedFolderId(
                id=Root.DISTINGUISHED_FOLDER_ID, mailbox=Mailbox(email_address=mailbox)
            ),
        )
        calendar = Calendar(
            root=root,
            _distinguished_id=DistinguishedFolderId(
                id=Calendar.DISTINGUISHED_FOLDER_ID, mailbox=Mailbox(email_address=mailbox)
            ),
        )
        self._accounts[mailbox] = calendar
        return calendar

    def close(self) -> None:
        """Close the connections (a poll every few minutes finds them closed anyway)."""
        for calendar in self._accounts.values():
            calendar.account.protocol.close()
            break  # one protocol serves every mailbox of the endpoint
        self._accounts.clear()

    # -- the three operations ------------------------------------------------------------

    def probe(self, mailbox: str, state: str | None) -> Probe:
        """SyncFolderItems on the calendar from ``state`` (None: from the beginning), drained:
        one request when nothing changed."""
        calendar = self._calendar(mailbox)
        changes = 0
        with self.errors(f"the calendar of {mailbox}", mailbox=mailbox, cursor=state is not None):
            for _ in calendar.sync_items(
                sync_state=state, only_fields=[], max_changes_returned=SYNC_CHANGES
            ):
                changes += 1
        new_state = calendar.item_sync_state
        if not new_state:
            raise TransientError(self.source_id, f"EWS gave no sync state for {mailbox}")
        return Probe(changes=changes, state=str(new_state))

    def view(self, mailbox: str, start: datetime, end: datetime, limit: int) -> list[str]:
        """The ids of the occurrences in ``[start, end)``, at most ``limit`` (CalendarView)."""
        from exchangelib import EWSDateTime

        calendar = self._calendar(mailbox)
        with self.errors(f"the calendar of {mailbox}", mailbox=mailbox):
            found = calendar.view(
                start=EWSDateTime.from_datetime(start),
                end=EWSDateTime.from_datetime(end),
                max_items=limit,
            ).values_list("id", flat=True)
            return [str(item_id) for item_id in found]

    def items(self, mailbox: str, ids: Sequence[str]) -> Iterator[Fetched]:
        """Each id's CalendarItem, or the error the server gave for it (GetItem).

        exchangelib maps a StartTimeZone to a zone itself and, for a name it does not know
        (a display name, a custom zone), only warns and drops it; the warning raised while
        an item is parsed gives that name back, for the one mapper (connectors/zones.py)."""
        calendar = self._calendar(mailbox)
        with self.errors(f"the calendar of {mailbox}", mailbox=mailbox):
            fetched = iter(
                calendar.account.fetch(
                    ids=[(i, None) for i in ids],
                    folder=calendar,
                    only_fields=list(ITEM_FIELDS),
                    chunk_size=GET_CHUNK,
                )
            )
            for item_id in ids:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    item = next(fetched)
                names = [
                    found.group(2)
                    for warned in caught
                    if (found := _ZONE_WARNING.search(str(warned.message)))
                ]
                yield Fetched(item_id, item, names[-1] if names else None)

    # -- errors --------------------------------------------------------------------------

    def errors(self, what: str, *, mailbox: str | None = None, cursor: bool = False) -> _Errors:
        return _Errors(self, what, mailbox, cursor)


_MAILBOX_DENIED = frozenset(
    {"ErrorAccessDenied", "ErrorImpersonateUserDenied", "ErrorImpersonationDenied"}
)
_MAILBOX_MISSING = frozenset({"ErrorNonExistentMailbox", "ErrorMailboxMoveInProgress"})
_CURSOR_GONE = frozenset({"ErrorInvalidSyncStateData", "ErrorSyncFolderNotFound"})
_BUSY = frozenset({"ErrorServerBusy", "ErrorTooManyObjectsOpened", "ErrorMailboxStoreUnavailable"})


class MailboxRefused(BadItem):
    """The server will not show this one mailbox (no rights on it, or it does not exist)."""

    def __init__(self, source_id: str, message: str, mailbox: str, *, denied: bool) -> None:
        super().__init__(source_id, message)
        self.mailbox = mailbox
        self.denied = denied


class _Errors:
    """Maps what exchangelib raises inside a ``with`` to the contract's typed errors."""

    def __init__(self, ews: Ews, what: str, mailbox: str | None, cursor: bool) -> None:
        self.ews, self.what, self.mailbox, self.cursor = ews, what, mailbox, cursor

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if isinstance(error, Exception) and not isinstance(error, ConnectorError):
            raise self.typed(error) from None

    def typed(self, error: Exception) -> ConnectorError:
        from exchangelib import errors as ews_errors

        source_id = self.ews.source_id
        code = type(error).__name__
        said = f"{self.what}: {describe(error)}"
        if isinstance(error, ews_errors.UnauthorizedError):
            return AuthError(
                source_id,
                f"EWS refused the credentials of {self.ews.source.username!r} "
                f"({self.ews.source.auth}) at {self.ews.endpoint}",
            )
        if code in _MAILBOX_DENIED and self.mailbox is not None:
            return MailboxRefused(
                source_id,
                f"the service account may not read the calendar of {self.mailbox} ({code}): "
                + _grant_hint(self.ews.source.access),
                self.mailbox,
                denied=True,
            )
        if code in _MAILBOX_MISSING and self.mailbox is not None:
            return MailboxRefused(
                source_id,
                f"no mailbox {self.mailbox} on this server ({code})",
                self.mailbox,
                denied=False,
            )
        if code in _CURSOR_GONE and self.cursor:
            return CursorExpired(
                source_id, f"the sync state of {self.mailbox} expired ({code})", self.mailbox
            )
        busy = _busy(error)
        if busy is not None:
            back_off = getattr(busy, "back_off", None)
            return TryAgain(
                source_id,
                f"{self.what}: {describe(busy)} (the server asked to back off)",
                retry_after=float(back_off) if back_off else None,
            )
        if isinstance(error, ews_errors.TransportError) and _is_tls(error):
            return TransientError(
                source_id,
                f"TLS failure talking to {self.ews.endpoint}: {describe(error)}; if the server's "
                "certificate comes from an internal CA, name its PEM file in ca_bundle",
            )
        if isinstance(error, ews_errors.RedirectError):
            return TransientError(source_id, f"{said}: EWS redirected; check url")
        # Timeouts, dropped connections, 5xx, an answer exchangelib could not read.
        return TransientError(source_id, said)


def _busy(error: BaseException) -> BaseException | None:
    """The server's "busy" error, also where exchangelib wrapped it: its version probe (the
    first request to a server whose version is not yet known) raises a plain
    TransportError while handling it, which would lose BackOffMilliseconds."""
    seen: BaseException | None = error
    for _ in range(4):  # the probe's wrapping is one level deep; a chain is short
        if seen is None:
            return None
        if type(seen).__name__ in _BUSY:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _is_tls(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("ssl", "certificate", "tls"))


def _grant_hint(access: str) -> str:
    if access == "impersonation":
        return "add it to the ApplicationImpersonation management scope"
    return "share the calendar with the service account (Add-MailboxFolderPermission)"


def as_utc(value: object) -> datetime | None:
    """An exchangelib EWSDateTime (or a date, for an all-day item) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):  # EWSDateTime refuses a stdlib zone in astimezone()
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return datetime.fromtimestamp(value.timestamp(), tz=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise TypeError(f"not a time: {type(value).__name__}")

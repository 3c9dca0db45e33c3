"""The schema of ``mentorpulse.yaml``: strict pydantic models, unknown keys rejected.

Durations are written as ``90m``, ``36h``, ``14d`` or ``2w`` and become ``timedelta``.
Rule kinds are a discriminated union on ``kind``, so a typo in a rule names the one rule
and key at fault instead of "not valid under any of the given schemas".
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import time, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar
from urllib.parse import urlsplit

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mentorpulse.model import known_zone, unknown_zone
from mentorpulse.text import has_control

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A century: longer than any window, cadence or silence means anything, and far below
# what makes ``timedelta`` (or a date plus it) overflow.
MAX_DURATION = timedelta(days=36500)
_TOO_LONG = "a duration of at most 36500d (100 years)"


class ConfigValueError(ValueError):
    """A validation failure that also says where, below the validated field, it lies.

    ``at`` is a key path relative to the field (``(2, "id")`` for ``programs[2].id``), so
    the loader can point at the line of the duplicate instead of the whole list.
    """

    def __init__(self, message: str, at: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.at = at


def parse_duration(value: object) -> timedelta:
    """``14d`` → 14 days; also accepts a ``timedelta`` as is."""
    if isinstance(value, timedelta):
        duration = value
    else:
        found = _DURATION.match(value) if isinstance(value, str) else None
        if found is None:
            raise ValueError("expected a duration like 14d (units: s, m, h, d, w)")
        digits, unit = found.groups()
        # Compare before building: 99999999999999999999d overflows timedelta.
        seconds = int(digits) * _UNIT_SECONDS[unit] if len(digits) <= 12 else None
        if seconds is None or seconds > MAX_DURATION.total_seconds():
            raise ValueError(_TOO_LONG)
        duration = timedelta(seconds=seconds)
    if not timedelta(0) <= duration <= MAX_DURATION:
        raise ValueError(_TOO_LONG)
    return duration


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+[smhdw]$", "examples": ["14d"]}),
]


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0 (e.g. 15m, 14d)")
    return value


# An interval, a timeout or a window, where 0 would mean "always" or "never".
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _at_most(limit: timedelta) -> AfterValidator:
    def check(value: timedelta) -> timedelta:
        if value > limit:
            raise ValueError(f"at most {format_duration(limit)}")
        return value

    return AfterValidator(check)


# A network wait: longer than an hour, a dead server holds a whole stage that long.
Timeout = Annotated[PositiveDuration, _at_most(timedelta(hours=1))]


def _identifier(value: str) -> str:
    if not 1 <= len(value) <= 100 or value != value.strip() or has_control(value):
        raise ValueError(
            "an id of 1 to 100 characters, without control characters or surrounding spaces"
        )
    return value


def _label(value: str) -> str:
    if len(value) > 200 or has_control(value):
        raise ValueError("at most 200 characters, without control characters")
    return value


# Ids are keys in the database (100 characters there) and in logs and metrics.
Identifier = Annotated[str, AfterValidator(_identifier)]
Label = Annotated[str, AfterValidator(_label)]


def _http_url(value: str) -> str:
    """An ``http(s)://host/…`` URL: any other scheme would only fail at the first sync."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError("not a valid URL (expected https://host/path)") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(f"expected an http:// or https:// URL, got {scheme}")
    if not parts.hostname:
        raise ValueError("the URL names no host (expected https://host/path)")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _http_url_or_path(value: str) -> str:
    """A calendar's full URL, or its path on the source's server."""
    return value if value.startswith("/") else _http_url(value)


# The databases we ship a driver for: SQLAlchemy's drivername before and after "+".
_DATABASES = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
_DATABASE_HINT = "sqlite:///path/to/mentorpulse.db or postgresql://user@host:5432/dbname"


def check_database_url(value: str) -> str:
    """A URL mentorpulse can open: parsed, a supported backend, a file for SQLite.

    Messages never quote the URL: it may carry a password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
        port = url.port
    except (ArgumentError, ValueError):
        raise ValueError(f"not a database URL; expected {_DATABASE_HINT}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in _DATABASES:
        hint = " (write postgresql://)" if backend == "postgres" else ""
        raise ValueError(
            f"unsupported database {backend!r}{hint}; mentorpulse runs on sqlite or postgresql"
        )
    if driver not in _DATABASES[backend]:
        raise ValueError(
            f"unsupported driver {driver!r} for {backend}; leave it out ({backend}://…) "
            f"or write {backend}+{_DATABASES[backend][1]}://…"
        )
    if backend == "sqlite" and (not url.database or url.database == ":memory:"):
        raise ValueError(
            "give SQLite a file (sqlite:///mentorpulse.db): an in-memory database "
            "is gone when the command ends"
        )
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the database port must be between 1 and 65535")
    return value


DATA_DIR_ENV = "MENTORPULSE_DATA_DIR"
_SourceT = TypeVar("_SourceT", bound="SourceBase")


def state_dir(base_dir: Path, configured: str | None) -> Path:
    """Where the relative paths of what mentorpulse *writes* live (the SQLite file and its
    lock files, the outbox folder, report files, token stores), so the config folder may
    be read-only: ``$MENTORPULSE_DATA_DIR`` (relative to the working directory), else the
    config's ``data_dir`` (relative to the config file's folder), else that folder itself.
    Inputs it only reads (roster, calendars, keys, templates) stay next to the config."""
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser().absolute()
    if configured:
        return resolve_path(base_dir, configured)
    return base_dir


def sqlite_path(url: str, base_dir: Path) -> Path | None:
    """The file of an SQLite URL (``~`` expanded, relative to the config's folder);
    None for another database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL: check_database_url says so
        return None
    if parsed.drivername.partition("+")[0] != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return resolve_path(base_dir, parsed.database)


def _check_zone(value: str) -> str:
    if known_zone(value) is None:
        raise ValueError(unknown_zone(value))
    return value


TimeZoneName = Annotated[str, BeforeValidator(lambda v: _check_zone(str(v)))]


def check_address(value: str) -> str:
    """An email address as a mail server reads it (email-validator's syntax; no DNS).

    A home-made pattern let ``[/]@x`` through (it then broke every render) and let
    ``=hyperlink(x)@x`` reach ``=hyperlink@x``. Special-use domains (``localhost``,
    ``corp.local``) are a policy, not syntax: an intranet relay may well use one, so they
    are checked as if they had one more label. Returns ``value`` unchanged.
    """
    domain = value.rpartition("@")[2].lower().rstrip(".")
    special = any(
        domain == name or domain.endswith("." + name)
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )
    try:
        email_validator.validate_email(
            f"{value}.example" if special else value,
            check_deliverability=False,
            globally_deliverable=False,
        )
    except email_validator.EmailNotValidError as error:
        raise ValueError(f"{value!r} is not an email address: {error}") from None
    return value


EmailAddress = Annotated[str, AfterValidator(check_address)]


def _check_receiver(value: str) -> str:
    """A receiver with an @ is an address (else a role or a contact name)."""
    return check_address(value) if "@" in value else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class PrivacyConfig(Strict):
    store_titles: bool = Field(False, description="Keep event titles in the database.")


class SourceBase(Strict):
    """What every calendar source has: an id, a sync window and a poll interval."""

    id: Identifier
    window_past: PositiveDuration = Field(
        timedelta(days=180), description="How far back to read (recurring events expanded)."
    )
    window_future: PositiveDuration = Field(timedelta(days=120), description="How far ahead.")
    poll_every: PositiveDuration = Field(timedelta(minutes=15), description="How often to read it.")

    def owners(self) -> tuple[str, ...]:
        """Whose calendars the config says this source reads (empty: not stated).

        The rules skip a pair whose calendars come from a stale source; this is how a
        source that holds no event of the pair yet still counts as covering it.
        """
        return ()


class IcsSource(SourceBase):
    """An iCalendar file, a folder of .ics files, or an http(s) feed."""

    kind: Literal["ics"]
    path: str | None = Field(None, description="A .ics file or a folder of them.")
    url: HttpUrl | None = Field(None, description="An http(s) iCalendar feed.")
    owner: str | None = Field(
        None,
        description="Whose calendar this is. For a folder, files named <email>.ics "
        "take their owner from the file name.",
    )
    timeout: Timeout = Field(
        timedelta(seconds=60), description="Total time to fetch a feed, redirects included."
    )
    max_bytes: int = Field(
        50_000_000,
        ge=1024,
        le=2**31,
        description="Largest feed or file read, in bytes; larger is an error.",
    )

    def owners(self) -> tuple[str, ...]:
        return (self.owner.lower(),) if self.owner else ()

    @model_validator(mode="after")
    def _one_location(self) -> IcsSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


# Calendars (users, mailboxes) per unit of sync work: a few seconds' worth (bench/README).
SHARD_SIZE = 200


class MailboxSource(SourceBase):
    """A source that reads the calendars of listed mailboxes (Microsoft 365, Exchange)."""

    mailboxes: tuple[str, ...] = Field(
        (), description="Mailboxes (primary SMTP address or UPN) to read, at least one."
    )
    shard_size: int = Field(
        SHARD_SIZE,
        ge=1,
        description="Mailboxes per shard: the unit of sync work a worker takes (sorted chunks).",
    )

    def owners(self) -> tuple[str, ...]:
        return self.mailboxes

    @field_validator("mailboxes")
    @classmethod
    def _lower_mailboxes(cls, mailboxes: tuple[str, ...]) -> tuple[str, ...]:
        lowered = tuple(m.strip().lower() for m in mailboxes)
        for index, mailbox in enumerate(lowered):
            if "@" not in mailbox:
                raise ConfigValueError(f"{mailbox!r} is not a mailbox address", at=(index,))
            if mailbox in lowered[:index]:
                raise ConfigValueError(f"duplicate mailbox {mailbox!r}", at=(index,))
        return lowered

    @model_validator(mode="after")
    def _some_mailboxes(self) -> Self:
        if not self.mailboxes:
            raise ValueError("list the mailboxes to read")
        return self


class MicrosoftSource(MailboxSource):
    """Microsoft 365 calendars through Microsoft Graph (``calendarView/delta`` per mailbox).

    ``auth: app`` (client credentials, app-only) reads every listed mailbox; ``auth:
    device_code`` uses the refresh token saved by ``mentorpulse auth microsoft``.
    """

    kind: Literal["microsoft"]
    tenant_id: str = Field(description="Directory (tenant) id or verified domain.")
    client_id: str = Field(description="Application (client) id of the app registration.")
    auth: Literal["app", "device_code"] = Field(
        "app", description="app: client credentials; device_code: a signed-in user."
    )
    client_secret: SecretStr | None = Field(
        None, description="Client secret for auth: app; write it as ${ENV_VAR}."
    )
    certificate_path: str | None = Field(
        None, description="PEM private key of the app's certificate (instead of a secret)."
    )
    certificate_thumbprint: str | None = Field(
        None, description="SHA-1 thumbprint (hex) of that certificate."
    )
    attendance: bool = Field(
        False, description="Read Teams attendance reports as evidence (extra permissions)."
    )
    token_store: str = Field(
        "tokens.json", description="Encrypted token file for auth: device_code."
    )
    page_size: int = Field(100, ge=1, le=1000, description="Prefer: odata.maxpagesize.")
    authority_host: HttpUrl = Field(
        "https://login.microsoftonline.com", description="Sign-in host (national clouds)."
    )
    graph_url: HttpUrl = Field(
        "https://graph.microsoft.com/v1.0", description="Graph endpoint (national clouds)."
    )
    ca_bundle: str | None = Field(
        None,
        description="CA bundle (PEM) to trust instead of the default, e.g. behind a "
        "TLS-inspecting proxy.",
    )

    @model_validator(mode="after")
    def _credentials(self) -> MicrosoftSource:
        if self.auth == "app":
            if (self.client_secret is None) == (self.certificate_path is None):
                raise ValueError("auth: app needs exactly one of client_secret or certificate_path")
            if self.certificate_path is not None and not self.certificate_thumbprint:
                raise ValueError("certificate_path needs certificate_thumbprint")
        return self


class GoogleSource(SourceBase):
    """Google Workspace calendars, read through the Calendar API (and Meet for attendance).

    Either a service account with domain-wide delegation reads each user's own primary
    calendar, or (small setups) one person signs in with ``mentorpulse auth google`` and
    the calendars listed must be shared with them.
    """

    kind: Literal["google"]
    users: tuple[str, ...] = Field(
        min_length=1, description="Email addresses whose primary calendars are read."
    )
    service_account_key: str | None = Field(
        None, description="The service account's JSON key file (domain-wide delegation)."
    )
    oauth_client: str | None = Field(
        None,
        description="The OAuth client JSON of an installed (desktop) app; sign in with "
        "`mentorpulse auth google` first.",
    )
    token_store: str = Field(
        "tokens.json", description="Encrypted sign-in tokens ($MENTORPULSE_SECRET_KEY)."
    )
    attendance: bool = Field(
        False, description="Read Google Meet attendance as evidence (adds the Meet scope)."
    )
    batch_size: int = Field(
        50,
        ge=1,
        le=1000,
        description="Calls per batch request (Google allows 1,000; big ones hit rate limits).",
    )
    shard_size: int = Field(
        SHARD_SIZE,
        ge=1,
        description="Calendars per shard: the unit of sync work a worker takes (sorted chunks).",
    )
    quota_share: float = Field(
        0.5, gt=0, le=1, description="Share of the API quotas this poller may use."
    )
    project_quota_per_minute: int = Field(10_000, ge=1, description="Project-wide quota.")
    user_quota_per_minute: int = Field(600, ge=1, description="Per-user quota.")
    api_root: HttpUrl | None = Field(
        None, description="Serve all APIs from this root URL (a proxy or a test double)."
    )
    timeout: Timeout = Field(timedelta(seconds=60), description="Per HTTP request.")

    def owners(self) -> tuple[str, ...]:
        return tuple(user.lower() for user in self.users)

    @model_validator(mode="after")
    def _one_credential(self) -> GoogleSource:
        if (self.service_account_key is None) == (self.oauth_client is None):
            raise ValueError("give exactly one of service_account_key or oauth_client")
        return self


class CaldavCalendar(Strict):
    """One calendar of a CalDAV source, by URL or by display name."""

    url: Annotated[str, AfterValidator(_http_url_or_path)] | None = Field(
        None, description="The calendar's URL, or its path on the server."
    )
    name: str | None = Field(None, description="The calendar's display name.")
    owner: str | None = Field(
        None, description="Whose calendar this is (an email); default: the source's owner."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> CaldavCalendar:
        if (self.url is None) == (self.name is None):
            raise ValueError("give exactly one of url or name")
        return self


class CaldavSource(SourceBase):
    """Calendars on a CalDAV server (Nextcloud, Fastmail, iCloud, SOGo, Radicale …)."""

    kind: Literal["caldav"]
    url: HttpUrl = Field(description="The server's CalDAV URL (its principal is discovered there).")
    username: str
    password: SecretStr = Field(
        description="Password or app password; write ${ENV_NAME}, never the value itself."
    )
    calendars: tuple[CaldavCalendar, ...] = Field(
        (),
        description="Which calendars to read; empty: every calendar of the user's principal. "
        "Calendars of other users the account may read are listed by URL.",
    )
    owner: str | None = Field(
        None, description="Whose calendars these are; default: the username if it is an email."
    )
    sync: Literal["auto", "sync-token", "etag"] = Field(
        "auto",
        description="auto: RFC 6578 sync-collection where the server has it, else CTag/ETag "
        "comparison; sync-token or etag force one method.",
    )
    auth: Literal["basic", "digest"] = Field(
        "basic", description="HTTP authentication scheme; basic saves a round trip per request."
    )
    verify_tls: bool = Field(True, description="Check the server's TLS certificate.")
    timeout: Timeout = Field(
        timedelta(seconds=60),
        description="Total time per HTTP request, the whole answer included (a redirect or an "
        "authentication retry is a request of its own).",
    )
    max_bytes: int = Field(
        50_000_000, ge=1024, le=2**31, description="Largest answer read per request, in bytes."
    )

    def owners(self) -> tuple[str, ...]:
        default = self.owner or (self.username if "@" in self.username else None)
        found = [c.owner or default for c in self.calendars] if self.calendars else [default]
        return tuple(dict.fromkeys(o.lower() for o in found if o))


# EWS schema versions by the Exchange release that introduced them (Subscription Edition
# speaks 2019's); the Exchange connector maps each to exchangelib's build.
ExchangeVersion = Literal["Exchange2013", "Exchange2013_SP1", "Exchange2016", "Exchange2019"]


class ExchangeSource(MailboxSource):
    """On-premises Exchange Server 2013 to Subscription Edition through EWS (exchangelib).

    Exchange Online refuses EWS to third-party apps since October 2026: Microsoft 365
    mailboxes are read with ``kind: microsoft``. EWS keeps no conference logs, so there
    is no ``attendance`` here.
    """

    kind: Literal["exchange"]
    url: HttpUrl | None = Field(
        None, description="The EWS endpoint, e.g. https://mail.example.org/EWS/Exchange.asmx."
    )
    autodiscover: bool = Field(
        False, description="Find the EWS endpoint by autodiscover instead of giving url."
    )
    autodiscover_email: EmailAddress | None = Field(
        None, description="Address to discover from; default: the username if it is one."
    )
    auth: Literal["ntlm", "basic"] = Field(
        "ntlm", description="HTTP authentication: ntlm (the on-premises default) or basic."
    )
    username: str = Field(description="The service account (DOMAIN\\user or user@domain).")
    password: SecretStr = Field(
        description="Its password; write ${ENV_NAME}, never the value itself."
    )
    access: Literal["impersonation", "delegate"] = Field(
        "impersonation",
        description="impersonation: ApplicationImpersonation scoped to the members; "
        "delegate: calendars shared with the service account.",
    )
    version: ExchangeVersion | None = Field(
        None, description="The server's EWS version; default: asked of the server."
    )
    ca_bundle: str | None = Field(
        None, description="CA bundle (PEM) that signed the server's certificate (internal CA)."
    )
    allow_insecure: bool = Field(
        False, description="Accept an http:// endpoint (the password then crosses in clear)."
    )
    view_limit: int = Field(
        1000,
        ge=2,
        le=1000,
        description="Most items one CalendarView may return (the server's EWSFindCountLimit); "
        "a fuller window is split.",
    )
    timeout: Timeout = Field(timedelta(seconds=60), description="Per HTTP request.")

    @model_validator(mode="after")
    def _endpoint(self) -> ExchangeSource:
        if (self.url is None) == (not self.autodiscover):
            raise ValueError("give exactly one of url or autodiscover: true")
        if self.autodiscover and self.autodiscover_email is None and "@" not in self.username:
            raise ValueError("autodiscover needs autodiscover_email (the username is no address)")
        insecure = self.url is not None and self.url.lower().startswith("http://")
        if insecure and not self.allow_insecure:
            raise ConfigValueError(
                "an http:// endpoint sends the password in clear; use https:// "
                "(ca_bundle for an internal CA) or set allow_insecure: true",
                at=("url",),
            )
        return self


Source = Annotated[
    IcsSource | CaldavSource | GoogleSource | MicrosoftSource | ExchangeSource,
    Field(discriminator="kind"),
]


class RosterConfig(Strict):
    path: str = Field("roster.csv", description="The roster CSV, relative to this file.")


class Cadence(Strict):
    every: PositiveDuration
    grace: Duration = timedelta(0)


class MatchCriteria(Strict):
    """What makes an event between a mentor and a mentee count as a session."""

    title_keywords: tuple[str, ...] = Field(
        (), description="Any of these words in the title (case-insensitive); empty: any title."
    )
    categories: tuple[str, ...] = Field((), description="Any of these categories; empty: any.")
    min_duration: Duration = timedelta(minutes=15)
    max_participants: int | None = Field(
        4,
        ge=2,
        description="With no title keyword or category to go by, a meeting of more people "
        "than this (rooms and resources not counted) is a group meeting, not a session; "
        "null: no cap.",
    )


Severity = Literal["info", "warning", "critical"]


class RuleBase(Strict):
    id: Identifier
    severity: Severity = "warning"
    for_: Duration = Field(timedelta(0), alias="for", description="Pending this long first.")
    programs: tuple[str, ...] = Field(
        (),
        description="Only in a top-level rule: program ids (or glob patterns) it applies to; "
        "empty: every program.",
    )
    pairings: tuple[str, ...] = Field(
        (),
        description="Only pairings matching one of these MENTOR:MENTEE glob patterns "
        "(e.g. '*@sales.example.org:*'); empty: every pairing.",
    )
    exclude: tuple[str, ...] = Field(
        (), description="Skip pairings matching one of these MENTOR:MENTEE glob patterns."
    )
    labels: dict[str, str] = Field(
        {}, description="Free labels notification routes can match on (e.g. team: sales)."
    )


# A count of sessions or cancellations: past a thousand a rule can never fire.
Count = Annotated[int, Field(ge=1, le=1000)]


class CadenceGapRule(RuleBase):
    """No attended session within cadence ``every`` + ``grace`` of the last one."""

    kind: Literal["cadence_gap"]
    every: PositiveDuration | None = Field(None, description="Overrides the program cadence.")
    grace: Duration | None = None


class FirstMeetingRule(RuleBase):
    """No attended session within ``within`` of the pairing's start."""

    kind: Literal["first_meeting"]
    within: PositiveDuration = Field(
        timedelta(days=21), description="Time allowed for a first meeting."
    )


class NoUpcomingRule(RuleBase):
    """Nothing scheduled within ``horizon`` from now."""

    kind: Literal["no_upcoming"]
    horizon: PositiveDuration = Field(timedelta(days=14), description="How far ahead to look.")


class ConsecutiveMissesRule(RuleBase):
    """The last ``count`` sessions were all missed or cancelled."""

    kind: Literal["consecutive_misses"]
    count: Count = 3


class PartyDisengagementRule(RuleBase):
    """One party declined, cancelled or no-showed ``count`` times within ``window``."""

    kind: Literal["party_disengagement"]
    count: Count = 3
    window: PositiveDuration = timedelta(days=90)


class LateCancellationsRule(RuleBase):
    """``count`` cancellations less than ``notice`` before the start within ``window``."""

    kind: Literal["late_cancellations"]
    count: Count = 2
    notice: PositiveDuration = Field(
        timedelta(hours=24), description="Less notice than this is late."
    )
    window: PositiveDuration = timedelta(days=90)


class AttendanceRateRule(RuleBase):
    """Attended / scheduled below ``threshold`` over ``window``, given ``min_sessions``."""

    kind: Literal["attendance_rate"]
    threshold: float = Field(0.5, gt=0, le=1, description="Fire below this ratio (0-1].")
    window: PositiveDuration = timedelta(days=90)
    min_sessions: Count = 3


class DecliningFrequencyRule(RuleBase):
    """Attended sessions in the last ``window`` fewer than ``ratio`` x the window before."""

    kind: Literal["declining_frequency"]
    window: PositiveDuration = timedelta(days=60)
    ratio: float = Field(0.5, gt=0, le=1)
    min_previous: Count = Field(2, description="Judge only when the earlier window had this many.")


# The kind (and implicit id) of the rule that flags disputed sessions: what routing and
# rendering recognise it by.
DISPUTE_KIND = "attendance_disputed"


class AttendanceDisputedRule(RuleBase):
    """The mentor and the mentee answered an attendance check differently, within
    ``window`` of the session's end. Implicit (id ``attendance_disputed``, to the program's
    admins) for a program with ``attendance_check``; declare it to change its settings."""

    kind: Literal["attendance_disputed"]
    window: PositiveDuration = Field(
        timedelta(days=30),
        description="A dispute about a session that ended longer ago than this is let go.",
    )


Rule = Annotated[
    CadenceGapRule
    | FirstMeetingRule
    | NoUpcomingRule
    | ConsecutiveMissesRule
    | PartyDisengagementRule
    | LateCancellationsRule
    | AttendanceRateRule
    | DecliningFrequencyRule
    | AttendanceDisputedRule,
    Field(discriminator="kind"),
]


class EvaluationConfig(Strict):
    """How the rules engine judges pairings."""

    stale_after: PositiveDuration = Field(
        timedelta(hours=6),
        description="A pairing whose calendar sources have not synced successfully for "
        "this long is not judged: its findings are suppressed.",
    )


class AttendanceCheck(Strict):
    """Ask the pair whether a past session took place (confirm by default, dispute by one
    click): one email per session per person asked, ever."""

    ask: tuple[Literal["mentor", "mentee"], ...] = Field(
        ("mentor",), min_length=1, description="Who is asked: [mentor] or [mentor, mentee]."
    )
    after: Duration = Field(
        timedelta(hours=2), description="How long after a session's end the question goes out."
    )
    answer_within: PositiveDuration = Field(
        timedelta(days=7),
        description="How long after a session's end an answer counts (and its links work); "
        "no answer by then leaves the session presumed held.",
    )
    digest: PositiveDuration | None = Field(
        None,
        description="Group each person's questions over this window into one email "
        "(e.g. 1d); none: one email per session.",
    )

    @property
    def margin(self) -> timedelta:
        """The least time a person gets to answer: a question that could not go out this
        long before its deadline (quiet hours, a digest) is not sent at all."""
        return min(timedelta(hours=12), self.answer_within / 10)

    @model_validator(mode="after")
    def _asks_before_closing(self) -> Self:
        held = self.after + (self.digest or timedelta(0))
        if held + self.margin > self.answer_within:
            what = "after + digest" if self.digest else "after"
            raise ConfigValueError(
                f"{what} must end at least {format_duration(self.margin)} before "
                "answer_within, or the question would arrive (nearly) closed",
                at=("after",),
            )
        if len(set(self.ask)) != len(self.ask):
            raise ConfigValueError("ask lists someone twice", at=("ask",))
        return self


class PairingOverride(Strict):
    """A different cadence for some pairings of a program, or a pause."""

    pair: str = Field(description="MENTOR:MENTEE emails, or a glob pattern of them.")
    every: PositiveDuration | None = Field(None, description="This pairing's cadence.")
    paused: bool = Field(False, description="Do not judge this pairing.")


class Program(Strict):
    id: Identifier
    name: Label | None = None
    match: MatchCriteria = MatchCriteria()
    cadence: Cadence
    rules: tuple[Rule, ...] = ()
    admins: tuple[Annotated[str, AfterValidator(_check_receiver)], ...] = Field(
        (), description="Contact names or email addresses."
    )
    overrides: tuple[PairingOverride, ...] = Field(
        (), description="Per-pairing cadence or pause (the roster's cadence column also works)."
    )
    attendance_check: AttendanceCheck | None = Field(
        None,
        description="Ask the pair after each session whether it took place (off by default).",
    )


class Contact(Strict):
    email: EmailAddress
    name: str | None = None
    timezone: TimeZoneName | None = None


class FileTransport(Strict):
    kind: Literal["file"]
    path: str = Field("outbox", description="Folder the .eml files are written to.")


class SmtpTransport(Strict):
    """An SMTP relay: STARTTLS (port 587), implicit TLS (465) or plain (local relays)."""

    kind: Literal["smtp"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (upgrade after connecting), tls (465) or none."
    )
    username: str | None = Field(None, description="AUTH user; omit for no AUTH.")
    password: str | None = Field(None, description="AUTH password, e.g. ${SMTP_PASSWORD}.")
    ca_file: str | None = Field(None, description="CA bundle to trust instead of the system's.")
    timeout: Timeout = Field(timedelta(seconds=30), description="Per connection and command.")
    # Quick retries hold the notify run while they wait (backoff doubled per retry):
    # bounded so one message waits at most 10s x (1+2+4+8+16), about 5 minutes.
    retries: int = Field(
        3, ge=0, le=5, description="Quick retries per message on 4xx/connection (0-5)."
    )
    backoff: Annotated[Duration, _at_most(timedelta(seconds=10))] = Field(
        timedelta(seconds=1), description="First quick-retry delay (at most 10s)."
    )

    @model_validator(mode="after")
    def _auth_pairs(self) -> SmtpTransport:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


Transport = Annotated[FileTransport | SmtpTransport, Field(discriminator="kind")]

Receiver = Annotated[
    str,
    AfterValidator(_check_receiver),
    Field(description="mentor, mentee, program_admin, hr, a contact name or an email address."),
]
ROLE_RECEIVERS = ("mentor", "mentee", "program_admin", "hr")


class RouteMatch(Strict):
    """Which findings a route takes; an empty list or map matches everything."""

    rules: tuple[str, ...] = Field((), description="Rule ids (or rule kinds).")
    severity: tuple[Severity, ...] = ()
    programs: tuple[str, ...] = Field((), description="Program ids.")
    labels: dict[str, str] = Field(
        {}, description="Every label must equal this (program, rule, kind, severity)."
    )


class EscalationStep(Strict):
    after: Duration = Field(description="How long after the finding started firing.")
    to: tuple[Receiver, ...] = Field(min_length=1)
    digest: PositiveDuration | None = Field(
        None, description="Group this step's mail per recipient."
    )


class Route(Strict):
    """Who hears about matching findings, when, and how often."""

    match: RouteMatch = RouteMatch()
    to: tuple[Receiver, ...] = Field(("mentor",), description="Told when it starts firing.")
    digest: PositiveDuration | None = Field(
        None, description="Group mail per recipient over this window (e.g. 1d)."
    )
    repeat_every: PositiveDuration | None = Field(
        None, description="Remind each step's recipients again while it keeps firing."
    )
    escalate: tuple[EscalationStep, ...] = ()
    send_resolved: bool = Field(False, description="Tell those who were told when it resolves.")
    continue_: bool = Field(
        False, alias="continue", description="Also try the routes after this one."
    )


class Inhibition(Strict):
    """While a finding of ``source`` fires for a pairing, ``target`` findings stay quiet."""

    source: str = Field(description="Rule id or rule kind that inhibits.")
    target: str = Field(description="Rule id or rule kind that is inhibited.")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SendWindow(Strict):
    """When mail may arrive, in each recipient's own zone; the rest are quiet hours."""

    start: time = Field(time(8, 0), description="Local time of day, e.g. 08:00.")
    end: time = Field(time(20, 0), description="Local time of day; before start = overnight.")
    days: tuple[Weekday, ...] = Field(
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun"), min_length=1
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: object) -> object:
        if isinstance(value, int):  # YAML 1.1 reads 08:00 as a sexagesimal number
            return time(value // 60 % 24, value % 60)
        return value


class NotifyConfig(Strict):
    sender: EmailAddress = "mentorpulse@localhost"
    transport: Transport = FileTransport(kind="file")
    every: PositiveDuration = timedelta(minutes=5)
    routes: tuple[Route, ...] = Field(
        (), description="First matching route wins; none: every firing finding to its mentor."
    )
    inhibit: tuple[Inhibition, ...] = (
        Inhibition(source="consecutive_misses", target="cadence_gap"),
    )
    send_window: SendWindow | None = Field(
        None, description="Quiet hours: mail due outside this window waits for it."
    )
    templates: str | None = Field(None, description="Folder of templates overriding ours.")
    hr: tuple[Receiver, ...] = Field(
        ("hr",), description="Who the hr receiver means: contact names or addresses."
    )
    lease: Duration = Field(
        timedelta(minutes=5), description="How long a worker may take to send one batch."
    )

    @property
    def send_budget(self) -> timedelta:
        """The longest one message may take to send, plus a margin: the dispatcher starts
        no send with less than this left of its lease (else another worker may take the
        row mid-send)."""
        seconds = SEND_MARGIN.total_seconds()
        transport = self.transport
        if isinstance(transport, SmtpTransport):
            tries = transport.retries + 1
            pauses = transport.backoff.total_seconds() * (2.0 ** min(tries - 1, 40) - 1) * 1.25
            seconds += tries * transport.timeout.total_seconds() + pauses
        return timedelta(seconds=min(seconds, 10.0**9))

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> NotifyConfig:
        """A lease shorter than one send hands every batch back unsent: nothing is ever
        delivered, and nothing fails loudly either."""
        if self.lease <= self.send_budget:
            why = "30s of margin"
            if isinstance(self.transport, SmtpTransport):
                why = (
                    f"{self.transport.retries + 1} tries of transport.timeout "
                    f"{format_duration(self.transport.timeout)} + retry pauses + {why}"
                )
            budget = timedelta(seconds=-(-self.send_budget.total_seconds() // 1))
            raise ConfigValueError(
                f"lease {format_duration(self.lease)} is not longer than one send can take "
                f"({format_duration(budget)}: {why}); set notify.lease "
                f"to {format_duration(_round_up(self.send_budget * 2))} or more, or lower "
                "transport.timeout / retries",
                at=("lease",),
            )
        return self


SEND_MARGIN = timedelta(seconds=30)


def _round_up(value: timedelta) -> timedelta:
    """Whole minutes, so a suggested lease reads like one an admin would write."""
    return timedelta(minutes=-(-value.total_seconds() // 60))


class ReportSchedule(Strict):
    """A report mailed when each period ends: the period just ended, to ``to``."""

    every: Literal["week", "month", "quarter"] = Field(
        description="week (Monday to Sunday), month or quarter, in the top-level timezone."
    )
    to: tuple[Receiver, ...] = Field(
        ("hr",), min_length=1, description="hr, program_admin, a contact name or an address."
    )
    formats: tuple[Literal["html", "csv", "xlsx"], ...] = Field(
        ("html", "csv"),
        min_length=1,
        description="The files attached to the email: html (with charts), csv, xlsx.",
    )

    @field_validator("formats")
    @classmethod
    def _once_each(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"{repeated[0]} is listed twice")
        return value


class ReportsConfig(Strict):
    out_dir: str = Field(".", description="Where scheduled reports are written.")
    send: tuple[ReportSchedule, ...] = Field(
        (), description="Reports mailed when a week, month or quarter ends (at most once)."
    )


class ScheduleConfig(Strict):
    evaluate_every: PositiveDuration = timedelta(minutes=15)
    misfire_grace: PositiveDuration = timedelta(hours=1)


class HttpConfig(Strict):
    """Where a long-running process serves /healthz, /readyz and /metrics."""

    enabled: bool = True
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(9464, ge=0, le=65535, description="TCP port; 0: any free one (logged).")
    public_url: HttpUrl | None = Field(
        None,
        description="The address people reach this service at, as links in emails use it "
        "(attendance answers, sign-in links), e.g. https://mentorpulse.example.org/; "
        "default: http://host:port/.",
    )

    @property
    def base_url(self) -> str:
        """Where links in emails point, ending in ``/``."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/") + "/"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def _tick(value: timedelta) -> timedelta:
    """A tick is a cron step: whole seconds dividing a minute, or whole minutes an hour."""
    seconds = int(value.total_seconds())
    if seconds < 60 and 60 % seconds == 0:
        return value
    if seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        return value
    raise ValueError("must divide a minute (1s to 30s) or an hour (1m to 30m, 1h), e.g. 15s")


class PoolConfig(Strict):
    """The worker pool (``mentorpulse run`` on PostgreSQL): how each worker shares the work."""

    tick: Annotated[PositiveDuration, AfterValidator(_tick)] = Field(
        timedelta(seconds=15),
        description="How often the pool looks for due work (shards whose source's poll_every "
        "has passed, evaluation buckets, the outbox); deferred once per tick however many "
        "workers run.",
    )
    concurrency: int = Field(
        2, ge=1, le=16, description="Jobs one worker runs at once (one thread each)."
    )
    buckets: int = Field(
        4,
        ge=1,
        le=256,
        description="Evaluation is split into this many buckets of pairings (pairing id "
        "modulo buckets), each a job of its own that any worker may take.",
    )
    stalled_after: Annotated[PositiveDuration, _at_most(timedelta(minutes=30))] = Field(
        timedelta(seconds=90),
        description="A worker whose heartbeat is older than this is presumed dead: its "
        "running jobs are retried by another worker at the next tick (so within "
        "stalled_after + tick: 1m45s by default).",
    )
    shutdown_grace: Annotated[PositiveDuration, _at_most(timedelta(hours=1))] = Field(
        timedelta(seconds=30),
        description="On SIGTERM, how long running jobs may take to finish before they "
        "hand their work back (stored pages stay stored; the rest is retried elsewhere).",
    )


def _network(value: str) -> str:
    """An IP address or a CIDR block (``10.0.0.0/8``): the peers a proxy header is taken from."""
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError("expected an IP address or a CIDR block such as 10.0.0.0/8") from None
    return value.strip()


class DashboardConfig(Strict):
    """The HR and program-admin dashboard, served by the HTTP service.

    Who may sign in: the addresses ``notify.hr`` names (every program) and each program's
    ``admins`` (that program only).
    """

    enabled: bool | None = Field(
        None, description="Serve the dashboard (default: whenever service.http is enabled)."
    )
    auth: Literal["magic_link", "trusted_header"] = Field(
        "magic_link",
        description="magic_link: a signed, single-use sign-in link by email; trusted_header: "
        "the email an SSO proxy (oauth2-proxy) puts in `header`, from trusted_proxies only.",
    )
    header: str = Field(
        "X-Forwarded-Email",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9-]+$",
        description="The request header holding the signed-in email (trusted_header).",
    )
    trusted_proxies: tuple[Annotated[str, AfterValidator(_network)], ...] = Field(
        (),
        description="IP addresses or CIDR blocks the header is accepted from (required for "
        "trusted_header); any other peer gets 403.",
    )
    insecure_cookies: bool = Field(
        False,
        description="Send cookies over plain http too (only for http://localhost use; "
        "otherwise cookies are Secure and need https).",
    )
    session_lifetime: Annotated[PositiveDuration, _at_most(timedelta(days=30))] = Field(
        timedelta(hours=12), description="How long a sign-in lasts (at most 30d)."
    )

    @model_validator(mode="after")
    def _proxies_for_header(self) -> DashboardConfig:
        if self.auth == "trusted_header" and not self.trusted_proxies:
            raise ConfigValueError(
                "auth: trusted_header needs trusted_proxies: the addresses of the SSO proxy "
                "(a header from anyone else would let them sign in as anybody)",
                at=("trusted_proxies",),
            )
        return self

    def proxies(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies]


class ServiceConfig(Strict):
    """How ``mentorpulse run`` runs unattended: its HTTP service, and the worker pool
    (PostgreSQL)."""

    http: HttpConfig = HttpConfig()
    pool: PoolConfig = Field(
        PoolConfig(), description="The worker pool, used when the database is PostgreSQL."
    )
    dashboard: DashboardConfig = Field(
        DashboardConfig(), description="The HR and program-admin dashboard (web pages)."
    )

    @property
    def dashboard_served(self) -> bool:
        """Whether the HTTP service serves the dashboard."""
        enabled = self.dashboard.enabled
        return self.http.enabled and (enabled is None or enabled)


class MentorpulseConfig(Strict):
    """The whole of mentorpulse.yaml."""

    database: Annotated[str, AfterValidator(check_database_url)] = Field(
        "sqlite:///mentorpulse.db",
        description="SQLAlchemy URL (sqlite or postgresql); a relative SQLite path is "
        "relative to data_dir, ~ is the home folder.",
    )
    data_dir: str | None = Field(
        None,
        description="Folder for what mentorpulse writes when its path is relative (the "
        "SQLite file, the outbox, reports, token stores); $MENTORPULSE_DATA_DIR overrides "
        "it. Default: this file's folder. Made on first use.",
    )
    timezone: TimeZoneName = "UTC"
    privacy: PrivacyConfig = PrivacyConfig()
    sources: tuple[Source, ...] = ()
    roster: RosterConfig = RosterConfig()
    programs: tuple[Program, ...] = ()
    contacts: dict[str, Contact] = {}
    notify: NotifyConfig = NotifyConfig()
    reports: ReportsConfig = ReportsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    service: ServiceConfig = Field(
        ServiceConfig(), description="How `mentorpulse run` serves (HTTP service, worker pool)."
    )
    rules: tuple[Rule, ...] = Field(
        (), description="Rules for several programs at once (select them with `programs`)."
    )
    evaluation: EvaluationConfig = EvaluationConfig()

    # Where the file was read from; relative paths in it are resolved against its folder.
    base_dir: Path = Field(Path("."), exclude=True, json_schema_extra={"hidden": True})

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: tuple[Source, ...]) -> tuple[Source, ...]:
        _no_duplicates("source id", [s.id for s in sources])
        return sources

    @field_validator("programs")
    @classmethod
    def _unique_programs(cls, programs: tuple[Program, ...]) -> tuple[Program, ...]:
        _no_duplicates("program id", [p.id for p in programs])
        for index, program in enumerate(programs):
            _no_duplicates(
                f"rule id in program {program.id}",
                [r.id for r in program.rules],
                at=(index, "rules"),
            )
        return programs

    @model_validator(mode="after")
    def _rule_selectors(self) -> MentorpulseConfig:
        """A top-level rule's ``programs`` must select something; ids stay unique."""
        for index, rule in enumerate(self.rules):
            where = ("rules", index)
            for p_index, pattern in enumerate(rule.programs):
                if not any(fnmatchcase(p.id, pattern) for p in self.programs):
                    known = ", ".join(p.id for p in self.programs) or "none"
                    raise ConfigValueError(
                        f"program selector {pattern!r} matches no program (programs: {known})",
                        at=(*where, "programs", p_index),
                    )
            for program in self.programs:
                if rule.id in {r.id for r in program.rules} and self.selects(rule, program.id):
                    raise ConfigValueError(
                        f"rule id {rule.id!r} is also a rule of program {program.id!r}",
                        at=(*where, "id"),
                    )
        for p_index, program in enumerate(self.programs):
            for r_index, rule in enumerate(program.rules):
                if rule.programs:
                    raise ConfigValueError(
                        "programs selects programs only in a top-level rule; "
                        "a program's own rules apply to that program",
                        at=("programs", p_index, "rules", r_index, "programs"),
                    )
        return self

    @staticmethod
    def selects(rule: RuleBase, program_id: str) -> bool:
        return not rule.programs or any(fnmatchcase(program_id, p) for p in rule.programs)

    def rules_for(self, program: Program) -> tuple[Rule, ...]:
        """The program's own rules, then the top-level rules that select it."""
        shared = tuple(r for r in self.rules if self.selects(r, program.id))
        rules: tuple[Rule, ...] = (*program.rules, *shared)
        if program.attendance_check is not None and not any(r.kind == DISPUTE_KIND for r in rules):
            rules = (*rules, IMPLICIT_DISPUTE_RULE)
        return rules

    @model_validator(mode="after")
    def _answers_are_served(self) -> MentorpulseConfig:
        """Attendance checks mail links to the answer pages: they must point where people
        reach the service. Each question is sent once, ever, so a dead link (the default
        http://127.0.0.1:9464/) would lose it for good."""
        if self.service.http.public_url is not None:
            return self
        for index, program in enumerate(self.programs):
            if program.attendance_check is not None:
                raise ConfigValueError(
                    "attendance checks email links to this service's answer pages, and each "
                    "question is sent only once: set service.http.public_url to where people "
                    "reach this service (e.g. https://mentorpulse.example.org/)",
                    at=("programs", index, "attendance_check"),
                )
        return self

    @model_validator(mode="after")
    def _admins_are_known(self) -> MentorpulseConfig:
        for p_index, program in enumerate(self.programs):
            for a_index, admin in enumerate(program.admins):
                if not self.names_someone(admin):
                    raise ConfigValueError(
                        f"undefined contact {admin!r} used in program {program.id!r} admins",
                        at=("programs", p_index, "admins", a_index),
                    )
        return self

    @model_validator(mode="after")
    def _receivers_are_known(self) -> MentorpulseConfig:
        def check(receiver: str, at: tuple[str | int, ...]) -> None:
            if receiver == "hr" and self.notify.hr == ("hr",) and "hr" not in self.contacts:
                raise ConfigValueError(
                    "receiver 'hr' needs a contact named hr, or notify.hr listing who HR is",
                    at=at,
                )
            if receiver in ROLE_RECEIVERS or self.names_someone(receiver):
                return
            raise ConfigValueError(
                f"undefined receiver {receiver!r} (use {', '.join(ROLE_RECEIVERS)}, "
                "a contact name or an email address)",
                at=at,
            )

        for index, name in enumerate(self.notify.hr):
            # The default, "hr", is a contact named hr if there is one.
            if name != "hr" and not self.names_someone(name):
                raise ConfigValueError(
                    f"notify.hr lists {name!r}: expected a contact name or an email address",
                    at=("notify", "hr", index),
                )
        for s_index, schedule in enumerate(self.reports.send):
            for index, receiver in enumerate(schedule.to):
                if receiver in ("mentor", "mentee"):
                    raise ConfigValueError(
                        "a report goes to hr, program_admin, a contact or an address, "
                        "not to each mentor or mentee",
                        at=("reports", "send", s_index, "to", index),
                    )
                check(receiver, ("reports", "send", s_index, "to", index))
        for r_index, route in enumerate(self.notify.routes):
            for index, receiver in enumerate(route.to):
                check(receiver, ("notify", "routes", r_index, "to", index))
            for s_index, step in enumerate(route.escalate):
                for index, receiver in enumerate(step.to):
                    check(receiver, ("notify", "routes", r_index, "escalate", s_index, "to", index))
        return self

    def names_someone(self, name: str) -> bool:
        """A contact name or an email address (what program admins and HR are given as)."""
        return "@" in name or name in self.contacts

    def resolve(self, path: str) -> Path:
        """A path mentorpulse reads, made absolute against the file's folder."""
        return resolve_path(self.base_dir, path)

    @property
    def state_dir(self) -> Path:
        """The data folder (:func:`state_dir`) of this config."""
        return state_dir(self.base_dir, self.data_dir)

    def resolve_state(self, path: str) -> Path:
        """A path mentorpulse writes, made absolute against the data folder."""
        return resolve_path(self.state_dir, path)

    def with_state_paths(self, source: _SourceT) -> _SourceT:
        """``source`` with its token store (the one file a connector writes) made absolute
        in the data folder; connectors resolve what they read against the config folder."""
        token_store = getattr(source, "token_store", None)
        if not isinstance(token_store, str):
            return source
        return source.model_copy(update={"token_store": str(self.resolve_state(token_store))})

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)

    def program_names(self) -> dict[str, str]:
        """Each program's name for people (its ``name``, else its id), by id: the one
        place reports and pages name programs."""
        return {p.id: p.name or p.id for p in self.programs}


# The dispute rule a program with ``attendance_check`` gets unless it declares its own.
IMPLICIT_DISPUTE_RULE = AttendanceDisputedRule(id=DISPUTE_KIND, kind=DISPUTE_KIND)


def resolve_path(base_dir: Path, path: str) -> Path:
    """A path from the config (``~`` expanded), relative to the config file's folder."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base_dir / candidate


def _no_duplicates(what: str, values: list[str], at: tuple[str | int, ...] = ()) -> None:
    """``at`` + (index, "id") of the second occurrence is where the loader points."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ConfigValueError(f"duplicate {what} {value!r}", at=(*at, index, "id"))
        seen.add(value)


def pair_matches(mentor: str, mentee: str, pattern: str) -> bool:
    """Whether a ``MENTOR:MENTEE`` glob (``*@sales.example.org:*``) names this pair; the
    one matcher of rule selectors, overrides and the config check."""
    return fnmatchcase(f"{mentor}:{mentee}", pattern.lower())

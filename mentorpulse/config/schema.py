"""The schema of ``mentorpulse.yaml``: strict pydantic models, unknown keys rejected.

Durations are written as ``90m``, ``36h``, ``14d`` or ``2w`` and become ``timedelta``.
Rule kinds are a discriminated union on ``kind``, so a typo in a rule names the one rule
and key at fault instead of "not valid under any of the given schemas".
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
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

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
        return value
    if isinstance(value, str):
        found = _DURATION.match(value)
        if found:
            return timedelta(seconds=int(found.group(1)) * _UNIT_SECONDS[found.group(2)])
    raise ValueError("expected a duration like 14d (units: s, m, h, d, w)")


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


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return value


TimeZoneName = Annotated[str, BeforeValidator(lambda v: _check_zone(str(v)))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrivacyConfig(Strict):
    store_titles: bool = Field(False, description="Keep event titles in the database.")


class IcsSource(Strict):
    """An iCalendar file, a folder of .ics files, or an http(s) feed."""

    id: str
    kind: Literal["ics"]
    path: str | None = Field(None, description="A .ics file or a folder of them.")
    url: str | None = Field(None, description="An http(s) iCalendar feed.")
    owner: str | None = Field(
        None,
        description="Whose calendar this is. For a folder, files named <email>.ics "
        "take their owner from the file name.",
    )
    window_past: Duration = Field(timedelta(days=180), description="How far back to expand.")
    window_future: Duration = Field(timedelta(days=120), description="How far ahead.")
    poll_every: Duration = timedelta(minutes=15)

    @model_validator(mode="after")
    def _one_location(self) -> IcsSource:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


class CaldavCalendar(Strict):
    """One calendar of a CalDAV source, by URL or by display name."""

    url: str | None = Field(None, description="The calendar's URL, or its path on the server.")
    name: str | None = Field(None, description="The calendar's display name.")
    owner: str | None = Field(
        None, description="Whose calendar this is (an email); default: the source's owner."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> CaldavCalendar:
        if (self.url is None) == (self.name is None):
            raise ValueError("give exactly one of url or name")
        return self


class CaldavSource(Strict):
    """Calendars on a CalDAV server (Nextcloud, Fastmail, iCloud, SOGo, Radicale …)."""

    id: str
    kind: Literal["caldav"]
    url: str = Field(description="The server's CalDAV URL (its principal is discovered there).")
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
    timeout: Duration = Field(timedelta(seconds=60), description="Per-request timeout.")
    window_past: Duration = Field(timedelta(days=180), description="How far back to expand.")
    window_future: Duration = Field(timedelta(days=120), description="How far ahead.")
    poll_every: Duration = timedelta(minutes=15)


Source = Annotated[IcsSource | CaldavSource, Field(discriminator="kind")]


class RosterConfig(Strict):
    path: str = Field("roster.csv", description="The roster CSV, relative to this file.")


class Cadence(Strict):
    every: Duration
    grace: Duration = timedelta(0)


class MatchCriteria(Strict):
    """What makes an event between a mentor and a mentee count as a session."""

    title_keywords: tuple[str, ...] = Field(
        (), description="Any of these words in the title (case-insensitive); empty: any title."
    )
    categories: tuple[str, ...] = Field((), description="Any of these categories; empty: any.")
    min_duration: Duration = timedelta(minutes=15)


Severity = Literal["info", "warning", "critical"]


class RuleBase(Strict):
    id: str
    severity: Severity = "warning"
    for_: Duration = Field(timedelta(0), alias="for", description="Pending this long first.")


class CadenceGapRule(RuleBase):
    """No attended session within cadence ``every`` + ``grace`` of the last one."""

    kind: Literal["cadence_gap"]
    every: Duration | None = Field(None, description="Overrides the program cadence.")
    grace: Duration | None = None


Rule = Annotated[CadenceGapRule, Field(discriminator="kind")]


class Program(Strict):
    id: str
    name: str | None = None
    match: MatchCriteria = MatchCriteria()
    cadence: Cadence
    rules: tuple[Rule, ...] = ()
    admins: tuple[str, ...] = Field((), description="Contact names or email addresses.")


class Contact(Strict):
    email: str
    name: str | None = None
    timezone: TimeZoneName | None = None


class FileTransport(Strict):
    kind: Literal["file"]
    path: str = Field("outbox", description="Folder the .eml files are written to.")


Transport = Annotated[FileTransport, Field(discriminator="kind")]


class NotifyConfig(Strict):
    sender: str = "mentorpulse@localhost"
    transport: Transport = FileTransport(kind="file")
    every: Duration = timedelta(minutes=5)


class ReportsConfig(Strict):
    out_dir: str = Field(".", description="Where scheduled reports are written.")


class ScheduleConfig(Strict):
    evaluate_every: Duration = timedelta(minutes=15)
    misfire_grace: Duration = timedelta(hours=1)


class MentorpulseConfig(Strict):
    """The whole of mentorpulse.yaml."""

    database: str = Field(
        "sqlite:///mentorpulse.db",
        description="SQLAlchemy URL; relative SQLite paths are relative to this file.",
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
    def _admins_are_known(self) -> MentorpulseConfig:
        for p_index, program in enumerate(self.programs):
            for a_index, admin in enumerate(program.admins):
                if "@" not in admin and admin not in self.contacts:
                    raise ConfigValueError(
                        f"undefined contact {admin!r} used in program {program.id!r} admins",
                        at=("programs", p_index, "admins", a_index),
                    )
        return self

    def resolve(self, path: str) -> Path:
        """A path from the file, made absolute against the file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)


def _no_duplicates(what: str, values: list[str], at: tuple[str | int, ...] = ()) -> None:
    """``at`` + (index, "id") of the second occurrence is where the loader points."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ConfigValueError(f"duplicate {what} {value!r}", at=(*at, index, "id"))
        seen.add(value)

"""The schema of ``mentorpulse.yaml``: strict pydantic models, unknown keys rejected.

Durations are written as ``90m``, ``36h``, ``14d`` or ``2w`` and become ``timedelta``.
Rule kinds are a discriminated union on ``kind``, so a typo in a rule names the one rule
and key at fault instead of "not valid under any of the given schemas".
"""

from __future__ import annotations

import re
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
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


Source = Annotated[IcsSource, Field(discriminator="kind")]


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


Count = Annotated[int, Field(ge=1)]


class CadenceGapRule(RuleBase):
    """No attended session within cadence ``every`` + ``grace`` of the last one."""

    kind: Literal["cadence_gap"]
    every: Duration | None = Field(None, description="Overrides the program cadence.")
    grace: Duration | None = None


class FirstMeetingRule(RuleBase):
    """No attended session within ``within`` of the pairing's start."""

    kind: Literal["first_meeting"]
    within: Duration = Field(timedelta(days=21), description="Time allowed for a first meeting.")


class NoUpcomingRule(RuleBase):
    """Nothing scheduled within ``horizon`` from now."""

    kind: Literal["no_upcoming"]
    horizon: Duration = Field(timedelta(days=14), description="How far ahead to look.")


class ConsecutiveMissesRule(RuleBase):
    """The last ``count`` sessions were all missed or cancelled."""

    kind: Literal["consecutive_misses"]
    count: Count = 3


class PartyDisengagementRule(RuleBase):
    """One party declined, cancelled or no-showed ``count`` times within ``window``."""

    kind: Literal["party_disengagement"]
    count: Count = 3
    window: Duration = timedelta(days=90)


class LateCancellationsRule(RuleBase):
    """``count`` cancellations less than ``notice`` before the start within ``window``."""

    kind: Literal["late_cancellations"]
    count: Count = 2
    notice: Duration = Field(timedelta(hours=24), description="Less notice than this is late.")
    window: Duration = timedelta(days=90)


class AttendanceRateRule(RuleBase):
    """Attended / scheduled below ``threshold`` over ``window``, given ``min_sessions``."""

    kind: Literal["attendance_rate"]
    threshold: float = Field(0.5, gt=0, le=1, description="Fire below this ratio (0-1].")
    window: Duration = timedelta(days=90)
    min_sessions: Count = 3


class DecliningFrequencyRule(RuleBase):
    """Attended sessions in the last ``window`` fewer than ``ratio`` x the window before."""

    kind: Literal["declining_frequency"]
    window: Duration = timedelta(days=60)
    ratio: float = Field(0.5, gt=0, le=1)
    min_previous: Count = Field(2, description="Judge only when the earlier window had this many.")


Rule = Annotated[
    CadenceGapRule
    | FirstMeetingRule
    | NoUpcomingRule
    | ConsecutiveMissesRule
    | PartyDisengagementRule
    | LateCancellationsRule
    | AttendanceRateRule
    | DecliningFrequencyRule,
    Field(discriminator="kind"),
]


class EvaluationConfig(Strict):
    """How the rules engine judges pairings."""

    stale_after: Duration = Field(
        timedelta(hours=6),
        description="A pairing whose calendar sources have not synced successfully for "
        "this long is not judged: its findings are suppressed.",
    )


class PairingOverride(Strict):
    """A different cadence for some pairings of a program, or a pause."""

    pair: str = Field(description="MENTOR:MENTEE emails, or a glob pattern of them.")
    every: Duration | None = Field(None, description="This pairing's cadence.")
    paused: bool = Field(False, description="Do not judge this pairing.")


class Program(Strict):
    id: str
    name: str | None = None
    match: MatchCriteria = MatchCriteria()
    cadence: Cadence
    rules: tuple[Rule, ...] = ()
    admins: tuple[str, ...] = Field((), description="Contact names or email addresses.")
    overrides: tuple[PairingOverride, ...] = Field(
        (), description="Per-pairing cadence or pause (the roster's cadence column also works)."
    )


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
    rules: tuple[Rule, ...] = Field(
        (), description="Rules for several programs at once (select them with `programs`)."
    )
    evaluation: EvaluationConfig = EvaluationConfig()

    # Where the file was read from; relative paths in it are resolved against its folder.
    base_dir: Path = Field(Path("."), exclude=True, json_schema_extra={"hidden": True})

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, sources: tuple[IcsSource, ...]) -> tuple[IcsSource, ...]:
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

    def rules_for(self, program: Program) -> tuple[RuleBase, ...]:
        """The program's own rules, then the top-level rules that select it."""
        shared = tuple(r for r in self.rules if self.selects(r, program.id))
        return (*program.rules, *shared)

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

"""The roster CSV: one row per mentor/mentee pairing in a program."""

from __future__ import annotations

import csv
import difflib
import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import structlog

from mentorpulse.config.schema import MentorpulseConfig, check_address, parse_duration
from mentorpulse.errors import ConfigError
from mentorpulse.model import known_zone
from mentorpulse.text import has_control

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RosterPairing:
    """A pairing as the admin wrote it in the roster; ``line`` is its CSV line number."""

    program: str
    mentor_email: str  # lower-cased
    mentee_email: str  # lower-cased
    started_on: date
    ended_on: date | None = None
    mentor_name: str | None = None
    mentee_name: str | None = None
    mentor_timezone: str | None = None
    mentee_timezone: str | None = None
    line: int = 0
    cadence: timedelta | None = None  # overrides the program's cadence for this pairing
    paused: bool = False  # not judged by the rules while paused

    @property
    def key(self) -> str:
        """Stable identity of the pairing across roster edits: program, mentor, mentee."""
        return f"{self.program}:{self.mentor_email}:{self.mentee_email}"


REQUIRED_COLUMNS = ("program", "mentor_email", "mentee_email", "started_on")
OPTIONAL_COLUMNS = (
    "ended_on",
    "mentor_name",
    "mentee_name",
    "mentor_timezone",
    "mentee_timezone",
    "cadence",
    "paused",
)
_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
NAME_MAX = 200  # Person.name's column: a longer name would fail every write on PostgreSQL
# NUL (refused by PostgreSQL), line breaks and other C0/C1 controls, Unicode line breaks.
_BOOLEAN = {
    "": False,
    "no": False,
    "false": False,
    "0": False,
    "yes": True,
    "true": True,
    "1": True,
}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_Bad = Callable[[str, str], None]  # reports (column, message) for the row being read


def load_roster(path: Path, config: MentorpulseConfig) -> list[RosterPairing]:
    """Parse and check the roster CSV; every problem is reported at once, with its line.

    Cells are echoed in messages (a roster holds names and addresses, not secrets), so
    the admin sees exactly what to fix.
    """
    text = _read(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[str] = []
    pairings: list[RosterPairing] = []
    columns: list[str] | None = None
    first_seen: dict[str, int] = {}
    line_after = 0
    # A mentor with several mentees is named on several lines: each address is checked
    # once per load (~0.05 ms each; 1,000 pairings name ~700 people in 2,000 cells).
    address_problem = functools.cache(_address_problem)
    try:
        for row in reader:
            line, line_after = line_after + 1, reader.line_num
            if _skipped(row):
                continue
            if columns is None:
                columns = _header(row, path, line, problems)
                if columns is None:
                    break
                continue
            pairing = _pairing(
                row,
                columns=columns,
                path=path,
                line=line,
                config=config,
                problems=problems,
                address_problem=address_problem,
            )
            if pairing is None:
                continue
            if pairing.key in first_seen:
                problems.append(
                    f"{path}:{line}: pair {pairing.mentor_email} → {pairing.mentee_email} is "
                    f"already listed in program {pairing.program!r} on line "
                    f"{first_seen[pairing.key]}"
                )
                continue
            first_seen[pairing.key] = line
            pairings.append(pairing)
    except csv.Error as error:
        problems.append(f"{path}:{reader.line_num}: not valid CSV: {error}")
    if columns is None and not problems:
        problems.append(
            f"{path}: empty roster; the first line must be a header like "
            f"{','.join(REQUIRED_COLUMNS)}"
        )
    if problems:
        log.debug("roster_invalid", path=str(path), problems=len(problems))
        raise ConfigError(problems)
    log.debug("roster_loaded", path=str(path), pairings=len(pairings))
    return pairings


def _read(path: Path) -> str:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such roster file"
        raise ConfigError(
            [
                f"{path}: {what}; write a CSV with the header "
                f"{','.join(REQUIRED_COLUMNS)} (see config/roster.csv), or set roster.path "
                f"in mentorpulse.yaml"
            ]
        )
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the roster: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {error.start}); export the roster as UTF-8 CSV"]
        ) from None


def _skipped(row: list[str]) -> bool:
    """Blank lines (also a row of empty cells, as spreadsheets export) and # comments."""
    if not any(cell.strip() for cell in row):
        return True
    return row[0].lstrip().startswith("#")


def _header(row: list[str], path: Path, line: int, problems: list[str]) -> list[str] | None:
    """The normalised column names, or None after reporting what is wrong with them."""
    columns = [cell.strip().lower() for cell in row]
    before = len(problems)
    for name in columns:
        if name and name not in _COLUMNS:
            message = f"{path}:{line}: unknown column {name!r}"
            close = difflib.get_close_matches(name, _COLUMNS, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{message}; columns are: {', '.join(_COLUMNS)}")
    for name in dict.fromkeys(columns):
        if name and columns.count(name) > 1:
            problems.append(f"{path}:{line}: column {name!r} appears more than once")
    problems.extend(
        f"{path}:{line}: missing required column {name!r}"
        for name in REQUIRED_COLUMNS
        if name not in columns
    )
    return columns if len(problems) == before else None


def _pairing(
    row: list[str],
    *,
    columns: list[str],
    path: Path,
    line: int,
    config: MentorpulseConfig,
    problems: list[str],
    address_problem: Callable[[str], str | None],
) -> RosterPairing | None:
    """The pairing of one data row, or None after reporting every problem in it."""
    before = len(problems)

    def bad(column: str, message: str) -> None:
        problems.append(f"{path}:{line}: {column}: {message}")

    cells = _cells(row, columns)
    if cells is None:
        problems.append(
            f"{path}:{line}: {len(row)} cells but the header has {len(columns)} columns "
            f'(a comma inside a value needs "quotes")'
        )
        return None
    for name in REQUIRED_COLUMNS:
        if not cells[name]:
            bad(name, "missing value")
    _check_program(cells["program"], config, bad)
    _check_addresses(cells, bad, address_problem)
    started = _date(cells["started_on"], "started_on", bad)
    ended = _date(cells["ended_on"], "ended_on", bad)
    if started and ended and ended < started:
        bad("ended_on", f"{ended.isoformat()} is before started_on {started.isoformat()}")
    _check_names_and_zones(cells, bad)
    cadence = _cadence(cells["cadence"], bad)
    paused = cells["paused"].lower()
    if paused not in _BOOLEAN:
        bad("paused", f"{cells['paused']!r} is not yes or no")
    if len(problems) > before or started is None:
        return None
    return RosterPairing(
        program=cells["program"],
        mentor_email=cells["mentor_email"].lower(),
        mentee_email=cells["mentee_email"].lower(),
        started_on=started,
        ended_on=ended,
        mentor_name=cells["mentor_name"] or None,
        mentee_name=cells["mentee_name"] or None,
        mentor_timezone=cells["mentor_timezone"] or None,
        mentee_timezone=cells["mentee_timezone"] or None,
        line=line,
        cadence=cadence,
        paused=_BOOLEAN.get(paused, False),
    )


def _cells(row: list[str], columns: list[str]) -> dict[str, str] | None:
    """Each known column's stripped cell ("" when absent); None when a value has no column."""
    cells = dict.fromkeys(_COLUMNS, "")
    for index, cell in enumerate(row):
        if index < len(columns) and columns[index]:
            cells[columns[index]] = cell.strip()
        elif cell.strip():
            return None
    return cells


def _check_program(program: str, config: MentorpulseConfig, bad: _Bad) -> None:
    if program and config.program(program) is None:
        known = ", ".join(p.id for p in config.programs) or "none"
        bad("program", f"unknown program {program!r} (programs in the config: {known})")


def _address_problem(value: str) -> str | None:
    """Why ``value`` is no email address, or None if it is one."""
    try:
        check_address(value)
    except ValueError as error:
        return str(error)
    return None


def _check_addresses(
    cells: dict[str, str], bad: _Bad, address_problem: Callable[[str], str | None]
) -> None:
    mentor = cells["mentor_email"].lower()
    mentee = cells["mentee_email"].lower()
    for name, email in (("mentor_email", mentor), ("mentee_email", mentee)):
        if email:
            problem = address_problem(cells[name])
            if problem is not None:
                bad(name, problem)
    if mentor and mentor == mentee:
        bad("mentee_email", f"{cells['mentee_email']!r} is the same person as mentor_email")


def _check_names_and_zones(cells: dict[str, str], bad: _Bad) -> None:
    for name in ("mentor_name", "mentee_name"):
        if has_control(cells[name]):
            shown = cells[name][:60] + ("…" if len(cells[name]) > 60 else "")
            bad(name, f"{shown!r} holds a control character (a NUL, tab or line break)")
        elif len(cells[name]) > NAME_MAX:
            bad(name, f"{len(cells[name])} characters; a name has at most {NAME_MAX}")
    for name in ("mentor_timezone", "mentee_timezone"):
        if cells[name] and known_zone(cells[name]) is None:
            bad(name, f"{cells[name]!r} is not a time zone (use an IANA name like Europe/Berlin)")


def _cadence(value: str, bad: _Bad) -> timedelta | None:
    if not value:
        return None
    try:
        return parse_duration(value)
    except (ValueError, OverflowError) as error:  # 10**20d: more days than timedelta has
        bad("cadence", f"{value!r}: {error}")
        return None


def _date(value: str, column: str, bad: _Bad) -> date | None:
    if not value:
        return None
    if _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    bad(column, f"{value!r} is not a date (use YYYY-MM-DD)")
    return None

"""Attended-vs-scheduled figures per pairing: computed from the report's rows, no rendering.

The rows come from a handful of aggregate queries (:mod:`mentorpulse.storage.reports`),
however many pairings there are, so an HR report over 10,000 pairings stays one round
trip per figure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.model import attended_day
from mentorpulse.storage import reports as queries
from mentorpulse.storage.reports import FigureRows

log = structlog.get_logger(__name__)

# Past sessions that were planned and not rebooked: what "scheduled" means to HR.
SCHEDULED = ("held", "presumed_held", "missed", "cancelled", "unknown")

COLUMNS: tuple[str, ...] = (
    "program",
    "program_name",
    "mentor_email",
    "mentee_email",
    "scheduled",
    "attended",
    "held",
    "confirmed",
    "presumed_held",
    "missed",
    "cancelled",
    "rescheduled",
    "attendance_rate",
    "last_attended",
    "next_scheduled",
    "open_findings",
)


@dataclass(frozen=True, slots=True)
class PairingFigures:
    """One pairing's row of the report; the first fields are exactly :data:`COLUMNS`."""

    program: str
    program_name: str  # Program.name (the config's), else the id
    mentor_email: str
    mentee_email: str
    scheduled: int
    attended: int
    held: int
    confirmed: int  # of held: a participant's answer to the attendance check decided it
    presumed_held: int
    missed: int
    cancelled: int
    rescheduled: int
    attendance_rate: float | None  # attended / scheduled; None when nothing was scheduled
    last_attended: date | None  # attended_day() of the latest attended session
    next_scheduled: datetime | None  # aware UTC
    open_findings: int
    # For display only (the HTML report); not part of the CSV columns.
    mentor_name: str | None = None
    mentee_name: str | None = None


@dataclass(frozen=True, slots=True)
class ProgramTotals:
    """Sums over a program's pairings, for the summary at the top of a report."""

    program: str
    program_name: str
    pairings: int
    scheduled: int
    attended: int
    held: int
    confirmed: int
    presumed_held: int
    missed: int
    cancelled: int
    rescheduled: int
    attendance_rate: float | None
    open_findings: int
    below_half: int  # pairings with an attendance rate under 50%


def pairing_figures(
    db: Db,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    programs: Collection[str] | None = None,
    program_names: Mapping[str, str] | None = None,
) -> list[PairingFigures]:
    """Figures for every active pairing over sessions starting in ``[start, end)``.

    ``start`` carries the report's zone (the one its days are whole days of), and
    ``last_attended`` is a day in that zone too (:func:`attended_day`). It looks back
    without a lower bound (up to ``end``), so a pair that did not meet in the period
    still shows when it last did; ``next_scheduled`` is the first upcoming session from
    ``now`` on, wherever it falls.
    """
    found = figure_rows(db, start=start, end=end, now=now, programs=programs)
    return figures_of(found, start=start, program_names=program_names)


def figure_rows(
    db: Db,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    programs: Collection[str] | None = None,
) -> FigureRows:
    """The stored rows the figures are computed from (checked: aware times only)."""
    for name, value in (("start", start), ("end", end), ("now", now)):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
    found = queries.figure_rows(db, start=start, end=end, now=now, programs=programs)
    log.info(
        "report_figures",
        pairings=len(found.pairings),
        start=start.isoformat(),
        end=end.isoformat(),
    )
    return found


def figures_of(
    found: FigureRows, *, start: datetime, program_names: Mapping[str, str] | None = None
) -> list[PairingFigures]:
    """One row of figures per pairing, in the order the pairings were read; days in
    ``start``'s zone. A program's name is ``program_names``' (the config's), else the
    stored one, else its id."""
    zone = start.tzinfo
    names = program_names or {}
    rows: list[PairingFigures] = []
    for pairing in found.pairings:
        by_outcome = found.counts.get(pairing.id, {})
        held = by_outcome.get("held", 0)
        presumed = by_outcome.get("presumed_held", 0)
        scheduled = sum(by_outcome.get(o, 0) for o in SCHEDULED)
        attended = held + presumed
        last = found.last_attended.get(pairing.id)
        rows.append(
            PairingFigures(
                program=pairing.program,
                program_name=names.get(pairing.program) or pairing.program_name or pairing.program,
                mentor_email=pairing.mentor_email,
                mentee_email=pairing.mentee_email,
                scheduled=scheduled,
                attended=attended,
                held=held,
                confirmed=found.confirmed.get(pairing.id, 0),
                presumed_held=presumed,
                missed=by_outcome.get("missed", 0),
                cancelled=by_outcome.get("cancelled", 0),
                rescheduled=by_outcome.get("rescheduled", 0),
                attendance_rate=attended / scheduled if scheduled else None,
                last_attended=attended_day(last, zone) if last else None,
                next_scheduled=_utc(found.next_scheduled.get(pairing.id)),
                open_findings=found.open_findings.get(pairing.id, 0),
                mentor_name=pairing.mentor_name,
                mentee_name=pairing.mentee_name,
            )
        )
    return rows


# The pair health grid colours a month by the first of these the pair had in it: did
# they meet, else did a session fail, else what else happened. Rescheduled sessions do
# not count (their replacement does), nor does a month with nothing.
HEALTH_ORDER = ("held", "presumed_held", "missed", "unknown", "cancelled", "upcoming")
# The outcomes the per-month chart stacks: the sessions "scheduled" counts, and upcoming.
MONTHLY_OUTCOMES = (*SCHEDULED, "upcoming")


@dataclass(frozen=True, slots=True)
class MonthlyFigures:
    """Per month of the report's zone: what the charts draw (the tables keep the rest)."""

    months: tuple[date, ...]  # the first day of each month the range touches
    # program → one mapping per month (outcome → sessions starting in it, in the range)
    by_program: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    # per row of the report (same order): per month the pair's outcome (HEALTH_ORDER), or None
    health: list[tuple[str | None, ...]] = field(default_factory=list)


def month_starts(start: datetime, end: datetime) -> tuple[date, ...]:
    """The first days of the months ``[start, end)`` touches, in ``start``'s zone."""
    zone = start.tzinfo
    first = start.astimezone(zone).date().replace(day=1)
    last = (end.astimezone(zone) - timedelta(microseconds=1)).date()
    months = []
    month = first
    while month <= last:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return tuple(months)


def monthly_figures(found: FigureRows, *, start: datetime, end: datetime) -> MonthlyFigures:
    """Sessions per program and month by outcome, and each pair's health per month.

    Months are those of ``start``'s zone: a session on the 1st at 00:30 in London counts
    in that month even though it started the month before in UTC.
    """
    zone = start.tzinfo
    months = month_starts(start, end)
    index = {month: i for i, month in enumerate(months)}
    program_of = {p.id: p.program for p in found.pairings}
    position = {p.id: i for i, p in enumerate(found.pairings)}
    by_program: dict[str, list[dict[str, int]]] = {
        program: [{} for _ in months] for program in dict.fromkeys(program_of.values())
    }
    seen: list[list[set[str]]] = [[set() for _ in months] for _ in found.pairings]
    for pairing_id, start_at, outcome in found.sessions:
        program = program_of.get(pairing_id)
        at = index.get(start_at.astimezone(zone).date().replace(day=1))
        if program is None or at is None:
            continue
        if outcome in MONTHLY_OUTCOMES:
            cell = by_program[program][at]
            cell[outcome] = cell.get(outcome, 0) + 1
        seen[position[pairing_id]][at].add(outcome)
    health = [
        tuple(next((o for o in HEALTH_ORDER if o in month), None) for month in pair)
        for pair in seen
    ]
    return MonthlyFigures(months, by_program, health)


@dataclass(frozen=True, slots=True)
class Report:
    """One report: the figures every renderer (CSV, HTML, XLSX, the dashboard) formats.

    ``start``/``end`` are the aware bounds of its whole local days in ``zone``.
    """

    rows: list[PairingFigures]
    totals: list[ProgramTotals]
    monthly: MonthlyFigures
    note: str | None  # why the figures cannot be complete (every format says it); None: they are
    start: datetime
    end: datetime
    zone: str
    generated_at: datetime
    title: str

    @property
    def first_day(self) -> date:
        return self.start.astimezone(ZoneInfo(self.zone)).date()

    @property
    def last_day(self) -> date:
        return (self.end.astimezone(ZoneInfo(self.zone)) - timedelta(days=1)).date()

    def rows_of(self, program: str) -> list[PairingFigures]:
        return [row for row in self.rows if row.program == program]


def covered_since(db: Db, windows: Mapping[str, timedelta]) -> dict[str, datetime | None]:
    """From when on each source's sessions are all stored; None: never read.

    ``windows`` maps source ids to their ``window_past``. A sync reads back that far from
    when it runs, and what older syncs stored is kept, so a source covers at least from
    its last successful sync minus the window, or from its earliest stored event when
    that is older (the window reached it once). Conservative: a report may be told it is
    incomplete when it is not, never the other way round.
    """
    synced = queries.last_successes(db, list(windows))
    earliest = queries.earliest_events(db, list(windows))
    covered: dict[str, datetime | None] = {}
    for source_id, past in windows.items():
        last = synced.get(source_id)
        if last is None:
            covered[source_id] = None
            continue
        since = last - past
        first = earliest.get(source_id)
        covered[source_id] = min(since, first) if first is not None else since
    return covered


def coverage_note(covered: Mapping[str, datetime | None], start: datetime) -> str | None:
    """The warning a report carries when its range starts before what the sources cover.

    Worded for HR, in the report's zone (``start``'s); None when the range is covered.
    """
    unread = sorted(source for source, since in covered.items() if since is None)
    if unread:
        return (
            f"Incomplete: source {', '.join(unread)} has not been read yet, so the sessions "
            "in its calendars are missing. Run `mentorpulse sync --once`, then the report again."
        )
    late = {source: since for source, since in covered.items() if since and since > start}
    if not late:
        return None
    since = max(v for v in late.values() if v is not None).astimezone(start.tzinfo)
    return (
        f"Incomplete: the calendars are read from {since:%Y-%m-%d %H:%M} on "
        f"(source {', '.join(sorted(late))}), but this report starts on {start:%Y-%m-%d}: "
        f"sessions before {since:%Y-%m-%d %H:%M} are missing. A source's window_past says "
        "how far back it reads."
    )


def program_totals(rows: Iterable[PairingFigures]) -> list[ProgramTotals]:
    """Per-program sums, sorted by program; the rate is over the sums, not a mean of rates."""
    grouped: dict[str, list[PairingFigures]] = defaultdict(list)
    for row in rows:
        grouped[row.program].append(row)
    totals = []
    for program in sorted(grouped):
        members = grouped[program]
        scheduled = sum(r.scheduled for r in members)
        attended = sum(r.attended for r in members)
        totals.append(
            ProgramTotals(
                program=program,
                program_name=members[0].program_name,
                pairings=len(members),
                scheduled=scheduled,
                attended=attended,
                held=sum(r.held for r in members),
                confirmed=sum(r.confirmed for r in members),
                presumed_held=sum(r.presumed_held for r in members),
                missed=sum(r.missed for r in members),
                cancelled=sum(r.cancelled for r in members),
                rescheduled=sum(r.rescheduled for r in members),
                attendance_rate=attended / scheduled if scheduled else None,
                open_findings=sum(r.open_findings for r in members),
                below_half=sum(
                    1 for r in members if r.attendance_rate is not None and r.attendance_rate < 0.5
                ),
            )
        )
    return totals


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None

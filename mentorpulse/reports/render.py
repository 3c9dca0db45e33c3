"""Renderers for the figures: CSV for spreadsheets, a self-contained HTML page for email.

Renderers only format; every number comes from :mod:`mentorpulse.reports.figures`, and
every date and time is written by the helpers here, so the CSV, the HTML and the XLSX
(:mod:`mentorpulse.reports.xlsx`) show the same ``2026-11-03 10:00`` for the same moment.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

import jinja2
import structlog

from mentorpulse.reports.figures import COLUMNS, PairingFigures, Report
from mentorpulse.text import local_time

if TYPE_CHECKING:  # the charts module draws with matplotlib, loaded only to draw
    from mentorpulse.reports.charts import Chart

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
LOW_RATE = 0.5  # below this, the HTML report highlights the rate
DAY_FORMAT = "%Y-%m-%d"
MOMENT_FORMAT = "%Y-%m-%d %H:%M"  # a local time in the report's zone, every renderer

log = structlog.get_logger(__name__)

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("mentorpulse.reports", "templates"),
    autoescape=True,  # names and emails come from a roster anyone may have edited
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# What a person reads above a column (HTML tables and XLSX headers), in one place.
LABELS = {
    "program": "Program",
    "program_name": "Program",
    "pairings": "Pairings",
    "mentor": "Mentor",
    "mentor_email": "Mentor email",
    "mentee": "Mentee",
    "mentee_email": "Mentee email",
    "scheduled": "Scheduled",
    "attended": "Attended",
    "held": "Held",
    "confirmed": "Confirmed",
    "presumed_held": "Presumed held",
    "missed": "Missed",
    "cancelled": "Cancelled",
    "rescheduled": "Rescheduled",
    "attendance_rate": "Attendance",
    "below_half": "Pairings below 50%",
    "last_attended": "Last attended",
    "next_scheduled": "Next scheduled",
    "open_findings": "Open findings",
}
# The counts of a pairing's row and of a program's totals, in the order every table has:
# the run of COLUMNS from scheduled to rescheduled.
COUNTS = COLUMNS[COLUMNS.index("scheduled") : COLUMNS.index("rescheduled") + 1]


def format_rate(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.2f}"


def format_percent(rate: float | None) -> str:
    """``0.75`` → ``75%``; a dash when nothing was scheduled."""
    return "\u2014" if rate is None else f"{rate:.0%}"


def format_day(value: date | None) -> str:
    return "" if value is None else value.strftime(DAY_FORMAT)


def format_local(value: datetime | None, zone: tzinfo) -> str:
    """``2026-11-03 10:00``: the moment on the clock of the report's zone, or empty."""
    return "" if value is None else value.astimezone(zone).strftime(MOMENT_FORMAT)


def format_range(first: date, last: date, zone: str) -> str:
    """``1 Sep \u2013 30 Nov 2026, Europe/London``: the report's days as a reader says them."""

    def day(value: date, *, month: bool = True, year: bool = True) -> str:
        text = str(value.day)
        if month:
            text += f" {value:%b}"
        if year:
            text += f" {value.year}"
        return text

    if first == last:
        span = day(first)
    elif (first.year, first.month) == (last.year, last.month):
        span = f"{day(first, month=False, year=False)} \u2013 {day(last)}"
    elif first.year == last.year:
        span = f"{day(first, year=False)} \u2013 {day(last)}"
    else:
        span = f"{day(first)} \u2013 {day(last)}"
    return f"{span}, {zone}"


def defuse(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that would run as a formula is quoted."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _cell(value: object, zone: tzinfo) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_rate(value)
    if isinstance(value, datetime):
        return format_local(value, zone)
    if isinstance(value, date):
        return format_day(value)
    return defuse(str(value))


def csv_row(row: PairingFigures, zone: tzinfo = UTC) -> list[str]:
    """One row of cells in :data:`COLUMNS` order, safe to open in a spreadsheet."""
    return [_cell(getattr(row, column), zone) for column in COLUMNS]


# The last CSV columns: the zone its times are in, then empty, or on every row the warning
# that the figures are incomplete. Columns, not comment lines above the header, so
# spreadsheets and CSV readers still find the header first, and a row copied or filtered
# out keeps its zone and its warning.
ZONE_COLUMN = "zone"
NOTE_COLUMN = "note"


def write_csv(
    rows: Iterable[PairingFigures],
    target: Path | str | TextIO,
    *,
    note: str | None = None,
    zone: tzinfo = UTC,
) -> int:
    """Write the header and one line per pairing; returns the number of pairings written."""
    if isinstance(target, str | Path):
        with Path(target).open("w", encoding="utf-8", newline="") as stream:
            return _write_csv(rows, stream, note, zone)
    return _write_csv(rows, target, note, zone)


def _write_csv(
    rows: Iterable[PairingFigures], stream: TextIO, note: str | None, zone: tzinfo
) -> int:
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow((*COLUMNS, ZONE_COLUMN, NOTE_COLUMN))
    zone_name = _zone_name(zone)
    count = 0
    for row in rows:
        writer.writerow([*csv_row(row, zone), zone_name, _cell(note, zone)])
        count += 1
    return count


def render_csv(report: Report) -> str:
    stream = io.StringIO(newline="")
    write_csv(report.rows, stream, note=report.note, zone=ZoneInfo(report.zone))
    return stream.getvalue()


def _zone_name(zone: tzinfo | None) -> str:
    return str(getattr(zone, "key", None) or zone or "UTC")


def render_html(report: Report, *, charts: bool = True) -> str:
    """A self-contained page (inline CSS and SVG, no script, no external asset) for email.

    Dates and times are local to the report's zone: the days the report covers, not the
    UTC instants they begin and end at. The note (a report that cannot be complete) comes
    first. With ``charts``, each program's section starts with its charts
    (:mod:`mentorpulse.reports.charts`, which loads matplotlib); the tables below keep
    every number, for the email clients that drop SVG.
    """
    zone = ZoneInfo(report.zone)
    drawn = report_charts(report) if charts and report.rows else {}
    template = _env.get_template("report.html.j2")
    return template.render(
        title=report.title,
        period=format_range(report.first_day, report.last_day, report.zone),
        generated_at=local_time(report.generated_at, zone),
        note=report.note,
        totals=report.totals,
        programs=[(t, report.rows_of(t.program), drawn.get(t.program, [])) for t in report.totals],
        counts=COUNTS,
        labels=LABELS,
        low_rate=LOW_RATE,
        pct=format_percent,
        day=format_day,
        local=lambda value: format_local(value, zone),
    )


def report_charts(report: Report) -> dict[str, list[Chart]]:
    """Each program's charts (the HTML report's and the dashboard's). A chart that fails
    to draw is logged and left out: the tables, which hold every number, still show."""
    from mentorpulse.reports.charts import program_charts

    drawn: dict[str, list[Chart]] = {}
    for totals in report.totals:
        try:
            drawn[totals.program] = list(program_charts(report, totals.program))
        except Exception:  # matplotlib fails in many ways; the tables stand
            log.exception("report_chart_failed", program=totals.program)
    return drawn

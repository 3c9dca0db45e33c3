"""Renderers for the figures: CSV for spreadsheets, a self-contained HTML page for email.

Renderers only format; every number comes from :mod:`mentorpulse.reports.figures`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TextIO

import jinja2

from mentorpulse.reports.figures import COLUMNS, PairingFigures, program_totals
from mentorpulse.text import local_time, rfc3339_utc

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
LOW_RATE = 0.5  # below this, the HTML report highlights the rate

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("mentorpulse.reports", "templates"),
    autoescape=True,  # names and emails come from a roster anyone may have edited
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def format_rate(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.2f}"


def format_percent(rate: float | None) -> str:
    """``0.75`` → ``75%``; a dash when nothing was scheduled."""
    return "\u2014" if rate is None else f"{rate:.0%}"


def format_utc(value: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z``, or empty."""
    return "" if value is None else rfc3339_utc(value)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_rate(value)
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def csv_row(row: PairingFigures) -> list[str]:
    """One row of cells in :data:`COLUMNS` order, safe to open in a spreadsheet."""
    return [_cell(getattr(row, column)) for column in COLUMNS]


# The last CSV column: empty, or on every row the warning that the figures are
# incomplete. A column, not a comment line above the header, so spreadsheets and CSV
# readers still find the header first, and a row copied or filtered out keeps its warning.
NOTE_COLUMN = "note"


def write_csv(
    rows: Iterable[PairingFigures], target: Path | str | TextIO, *, note: str | None = None
) -> int:
    """Write the header and one line per pairing; returns the number of pairings written."""
    if isinstance(target, str | Path):
        with Path(target).open("w", encoding="utf-8", newline="") as stream:
            return _write_csv(rows, stream, note)
    return _write_csv(rows, target, note)


def _write_csv(rows: Iterable[PairingFigures], stream: TextIO, note: str | None) -> int:
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow((*COLUMNS, NOTE_COLUMN))
    count = 0
    for row in rows:
        writer.writerow([*csv_row(row), _cell(note)])
        count += 1
    return count


def _zone_name(zone: tzinfo | None) -> str:
    return str(getattr(zone, "key", None) or zone or "UTC")


def render_html(
    rows: Iterable[PairingFigures],
    *,
    start: datetime,
    end: datetime,
    generated_at: datetime,
    title: str,
    note: str | None = None,
) -> str:
    """A self-contained page (inline CSS, no external assets) that survives email clients.

    Dates and times are local to ``start``'s zone, the report's: the days the report
    covers, not the UTC instants they begin and end at. ``note`` is shown above the
    figures (a report that cannot be complete says so first).
    """
    rows = list(rows)
    zone = start.tzinfo or UTC
    by_program: dict[str, list[PairingFigures]] = defaultdict(list)
    for row in rows:
        by_program[row.program].append(row)
    template = _env.get_template("report.html.j2")
    last_day = (end.astimezone(zone) - timedelta(days=1)).date()
    return template.render(
        title=title,
        first_day=start.astimezone(zone).date().isoformat(),
        last_day=last_day.isoformat(),
        zone_name=_zone_name(zone),
        generated_at=local_time(generated_at, zone),
        note=note,
        totals=program_totals(rows),
        by_program=dict(sorted(by_program.items())),
        low_rate=LOW_RATE,
        pct=format_percent,
        local=lambda value: local_time(value, zone),
    )

"""The report as an XLSX workbook (openpyxl): a summary sheet and one sheet per program.

Cells are typed, so a spreadsheet sorts and sums them: counts are integers, rates are
fractions shown as percentages, ``last_attended`` is a date and ``next_scheduled`` a
date and time on the report zone's clock (a spreadsheet has no time zones; the zone is
named above the table), in the same ``2026-11-03 10:00`` form the CSV and HTML use.
Each sheet has the report's title and days above its table, a frozen header row, an
autofilter and column widths that fit. Text from the roster is written as text, never
as a formula: a name starting with ``=``, ``+``, ``-`` or ``@`` is a string cell with
Excel's quote prefix, which shows it as it is and keeps it text when edited.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from mentorpulse.reports.figures import PairingFigures, ProgramTotals, Report
from mentorpulse.reports.render import COUNTS, LABELS, format_range
from mentorpulse.text import local_time

SUMMARY = "Summary"
HEADER_ROW = 4  # rows 1-3: the title, the days and zone, the note (if any)
PERCENT = "0%"
DAY = "yyyy-mm-dd"
MOMENT = "yyyy-mm-dd hh:mm"
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")
_MAX_SHEET_NAME = 31
_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="F0F4F8")
_NOTE_FONT = Font(bold=True, color="7C2D12")

# One column: its header, the value of a row, and its number format (None: general).
Column = tuple[str, Any, str | None]


def render_xlsx(report: Report) -> bytes:
    """The workbook's bytes."""
    zone = ZoneInfo(report.zone)
    book = Workbook()
    summary = book.active
    assert summary is not None  # a new workbook has its one sheet
    summary.title = SUMMARY
    _table(summary, report, report.title, _summary_columns(), report.totals)
    names = sheet_names([t.program_name for t in report.totals], taken=[SUMMARY])
    for totals, name in zip(report.totals, names, strict=True):
        sheet = book.create_sheet(name)
        _table(
            sheet,
            report,
            totals.program_name,
            _pairing_columns(zone),
            report.rows_of(totals.program),
        )
    book.properties.title = report.title
    book.properties.creator = "mentorpulse"
    book.properties.created = report.generated_at.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    stream = io.BytesIO()
    book.save(stream)
    return stream.getvalue()


def sheet_names(names: Sequence[str], *, taken: Sequence[str] = ()) -> list[str]:
    """Each name as Excel accepts it: no ``[]:*?/\\``, no apostrophe at either end, at
    most 31 characters, and unique ignoring case (a repeat gets `` (2)``, …)."""
    used = {name.lower() for name in taken}
    result = []
    for name in names:
        base = _BAD_SHEET_CHARS.sub("_", name).strip().strip("'") or "Program"
        candidate, n = base[:_MAX_SHEET_NAME], 1
        while candidate.lower() in used or candidate.lower() == "history":
            n += 1
            suffix = f" ({n})"
            candidate = base[: _MAX_SHEET_NAME - len(suffix)] + suffix
        used.add(candidate.lower())
        result.append(candidate)
    return result


def _summary_columns() -> list[Column]:
    return [
        (LABELS["program"], lambda t: t.program_name, None),
        (LABELS["pairings"], lambda t: t.pairings, None),
        *[(LABELS[c], lambda t, c=c: getattr(t, c), None) for c in COUNTS],
        (LABELS["attendance_rate"], lambda t: t.attendance_rate, PERCENT),
        (LABELS["below_half"], lambda t: t.below_half, None),
        (LABELS["open_findings"], lambda t: t.open_findings, None),
    ]


def _pairing_columns(zone: ZoneInfo) -> list[Column]:
    def local(row: PairingFigures) -> datetime | None:
        moment = row.next_scheduled
        return moment.astimezone(zone).replace(tzinfo=None) if moment else None

    return [
        (LABELS["mentor"], lambda r: r.mentor_name or "", None),
        (LABELS["mentor_email"], lambda r: r.mentor_email, None),
        (LABELS["mentee"], lambda r: r.mentee_name or "", None),
        (LABELS["mentee_email"], lambda r: r.mentee_email, None),
        *[(LABELS[c], lambda r, c=c: getattr(r, c), None) for c in COUNTS],
        (LABELS["attendance_rate"], lambda r: r.attendance_rate, PERCENT),
        (LABELS["last_attended"], lambda r: r.last_attended, DAY),
        (LABELS["next_scheduled"], local, MOMENT),
        (LABELS["open_findings"], lambda r: r.open_findings, None),
    ]


def _table(
    sheet: Worksheet,
    report: Report,
    heading: str,
    columns: list[Column],
    items: Sequence[ProgramTotals] | Sequence[PairingFigures],
) -> None:
    _text(_cell(sheet, 1, 1), heading).font = Font(bold=True, size=14)
    zone = ZoneInfo(report.zone)
    generated = local_time(report.generated_at, zone)
    span = format_range(report.first_day, report.last_day, report.zone)
    _text(_cell(sheet, 2, 1), f"{span} \u00b7 generated {generated}")
    if report.note:
        _text(_cell(sheet, 3, 1), report.note).font = _NOTE_FONT
    widths = [len(header) for header, _value, _fmt in columns]
    for index, (header, _value, _fmt) in enumerate(columns, start=1):
        cell = _text(_cell(sheet, HEADER_ROW, index), header)
        cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
    for offset, item in enumerate(items, start=1):
        for index, (_header, value_of, number_format) in enumerate(columns, start=1):
            value = value_of(item)
            cell = _cell(sheet, HEADER_ROW + offset, index)
            if isinstance(value, str):
                _text(cell, value)
            else:
                cell.value = value
            if number_format and value is not None:
                cell.number_format = number_format
            widths[index - 1] = max(widths[index - 1], _width(value, number_format))
    last = get_column_letter(len(columns))
    sheet.freeze_panes = f"A{HEADER_ROW + 1}"
    sheet.auto_filter.ref = f"A{HEADER_ROW}:{last}{HEADER_ROW + max(len(items), 1)}"
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = min(width + 2, 50)


def _cell(sheet: Worksheet, row: int, column: int) -> Cell:
    cell = sheet.cell(row, column)
    assert isinstance(cell, Cell)  # a merged cell only inside a merged range: none here
    return cell


def _text(cell: Cell, text: str) -> Cell:
    """A string cell, never a formula, whatever the text starts with."""
    cell.value = text
    cell.data_type = "s"  # openpyxl makes "=..." a formula; this keeps it text
    if text.startswith(("=", "+", "-", "@")):
        cell.quotePrefix = True  # Excel keeps it text when the cell is edited, too
    return cell


def _width(value: object, number_format: str | None) -> int:
    if value is None:
        return 0
    if number_format == MOMENT:
        return len("2026-11-03 10:00")
    if number_format == DAY:
        return len("2026-11-03")
    if number_format == PERCENT:
        return len("100%")
    return len(str(value))

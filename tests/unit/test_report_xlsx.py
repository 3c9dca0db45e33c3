"""The XLSX report as a spreadsheet reads it back: typed cells, frozen header, autofilter,
valid and unique sheet names, and roster text that never becomes a formula."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.worksheet import Worksheet

from mentorpulse.reports.export import day_range, render_report
from mentorpulse.reports.figures import MonthlyFigures, PairingFigures, Report, program_totals
from mentorpulse.reports.xlsx import HEADER_ROW, SUMMARY, sheet_names

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
EVIL = '=HYPERLINK("http://x.example","click")'


def pair(program: str, name: str, mentor: str, **figures: object) -> PairingFigures:
    values: dict[str, object] = {
        "scheduled": 4,
        "attended": 3,
        "held": 2,
        "confirmed": 1,
        "presumed_held": 1,
        "missed": 1,
        "cancelled": 0,
        "rescheduled": 0,
        "attendance_rate": 0.75,
        "last_attended": date(2026, 11, 20),
        # 10:00 UTC is 10:00 in London in winter, 11:00 in Berlin
        "next_scheduled": datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
        "open_findings": 0,
    }
    values.update(figures)
    return PairingFigures(
        program=program,
        program_name=name,
        mentor_email=f"{mentor.lower().strip('=+-@')}@demo.example",
        mentee_email="mentee@demo.example",
        mentor_name=mentor,
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture
def report() -> Report:
    rows = [
        pair("eng", "Engineering: [core]/platform*", "Ana"),
        pair(
            "eng",
            "Engineering: [core]/platform*",
            EVIL,
            attendance_rate=None,
            scheduled=0,
            attended=0,
            held=0,
            confirmed=0,
            presumed_held=0,
            missed=0,
            last_attended=None,
            next_scheduled=None,
        ),
        pair("lead", "A program with a name far longer than thirty-one", "-1 Dee", open_findings=2),
        pair("lead2", "A program with a name far longer than thirty-one", "@Eve"),
    ]
    start, end = day_range(date(2026, 9, 1), date(2026, 11, 30), "Europe/Berlin")
    return Report(
        rows=rows,
        totals=program_totals(rows),
        monthly=MonthlyFigures((), {}, []),
        note="Incomplete: a source was never read",
        start=start,
        end=end,
        zone="Europe/Berlin",
        generated_at=NOW,
        title="Mentoring sessions",
    )


def table(sheet: Worksheet) -> list[dict[str, object]]:
    header = [c.value for c in sheet[HEADER_ROW]]
    return [
        dict(zip(header, (c.value for c in row), strict=True))
        for row in sheet.iter_rows(min_row=HEADER_ROW + 1)
    ]


def test_a_summary_sheet_and_one_sheet_per_program_with_valid_names(report: Report) -> None:
    book = load_workbook(io.BytesIO(render_report(report, "xlsx")))
    assert book.sheetnames == [
        SUMMARY,
        "Engineering_ _core__platform_",
        "A program with a name far longe",
        "A program with a name far l (2)",
    ]
    assert all(len(name) <= 31 for name in book.sheetnames)
    summary = book[SUMMARY]
    assert summary["A1"].value == "Mentoring sessions"
    assert (
        summary["A2"].value
        == "1 Sep \u2013 30 Nov 2026, Europe/Berlin \u00b7 generated 2026-12-01 10:00 CET"
    )
    assert summary["A3"].value == "Incomplete: a source was never read"
    totals = table(summary)
    assert [t["Program"] for t in totals] == [
        "Engineering: [core]/platform*",
        "A program with a name far longer than thirty-one",
        "A program with a name far longer than thirty-one",
    ]
    assert totals[0]["Pairings"] == 2
    assert totals[0]["Scheduled"] == 4
    assert totals[0]["Confirmed"] == 1
    assert totals[1]["Open findings"] == 2


def test_cells_are_typed(report: Report) -> None:
    book = load_workbook(io.BytesIO(render_report(report, "xlsx")))
    sheet = book["Engineering_ _core__platform_"]
    ana, evil = table(sheet)
    assert ana["Scheduled"] == 4
    assert isinstance(ana["Scheduled"], int)
    assert ana["Attendance"] == 0.75
    assert ana["Last attended"] == datetime(2026, 11, 20)  # a date cell (Excel has no pure date)
    assert ana["Next scheduled"] == datetime(2026, 12, 4, 11, 0)  # on Berlin's clock
    assert evil["Attendance"] is None  # nothing scheduled: empty, not 0%
    row = HEADER_ROW + 1
    header = [c.value for c in sheet[HEADER_ROW]]
    cell = {name: sheet.cell(row, header.index(name) + 1) for name in header}
    assert cell["Attendance"].number_format == "0%"
    assert cell["Last attended"].is_date
    assert cell["Last attended"].number_format == "yyyy-mm-dd"
    assert cell["Next scheduled"].number_format == "yyyy-mm-dd hh:mm"
    assert cell["Scheduled"].data_type == "n"
    summary = book[SUMMARY]
    rate = table(summary)[0]["Attendance"]
    assert rate == 0.75
    assert summary.cell(HEADER_ROW + 1, 2 + 8 + 1).number_format == "0%"


def test_frozen_header_autofilter_and_widths(report: Report) -> None:
    book = load_workbook(io.BytesIO(render_report(report, "xlsx")))
    for sheet in book.worksheets:
        assert sheet.freeze_panes == f"A{HEADER_ROW + 1}"
        assert sheet.auto_filter.ref is not None
        assert sheet.auto_filter.ref.startswith(f"A{HEADER_ROW}:")
        assert sheet.column_dimensions["A"].width >= len("Program")
    eng = book["Engineering_ _core__platform_"]
    assert eng.auto_filter.ref == f"A{HEADER_ROW}:P{HEADER_ROW + 2}"  # 16 columns, 2 pairings
    assert eng.column_dimensions["B"].width >= len("ana@demo.example")


def test_roster_text_never_becomes_a_formula(report: Report) -> None:
    book = load_workbook(io.BytesIO(render_report(report, "xlsx")))
    cells = [
        cell
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str) and cell.value.startswith(("=", "-", "@", "+"))
    ]
    assert {c.value for c in cells} == {EVIL, "-1 Dee", "@Eve"}
    assert all(c.data_type == "s" for c in cells)  # text, not a formula
    assert all(c.quotePrefix for c in cells)  # and kept text when edited
    assert not any(
        cell.data_type == "f"
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
    )


def test_sheet_names_are_valid_and_unique() -> None:
    assert sheet_names(
        ["Summary", "summary", "a/b", "'quoted'", "", "History"], taken=["Summary"]
    ) == [
        "Summary (2)",
        "summary (3)",
        "a_b",
        "quoted",
        "Program",
        "History (2)",
    ]
    long = sheet_names(["x" * 40, "x" * 40])
    assert long == ["x" * 31, "x" * 27 + " (2)"]

"""One range of the demo organisation, three files: the CSV, the XLSX and the HTML say
the same numbers per pairing and per program.

The report command runs for real (CLI, store, the sessions stage) on SQLite and
PostgreSQL; a few sessions are then confirmed or disputed by their participants, as the
attendance check stores it (evidence ``participant_confirmation`` deciding the outcome).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import time_machine
from lxml import html
from openpyxl import load_workbook
from sqlalchemy import delete, select
from typer.testing import CliRunner, Result

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.reports.export import render_report
from mentorpulse.reports.xlsx import HEADER_ROW, SUMMARY
from mentorpulse.sample import write_demo
from mentorpulse.stages.reports import range_report
from mentorpulse.storage.models import Evidence, MentoringSession
from tests.loaded_modules import loaded_by
from tests.service_support import add_settings

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
RANGE = ["--from", "2026-09-01", "--to", "2026-11-30"]
COUNTS = {
    "scheduled": "Scheduled",
    "attended": "Attended",
    "held": "Held",
    "confirmed": "Confirmed",
    "presumed_held": "Presumed held",
    "missed": "Missed",
    "cancelled": "Cancelled",
    "rescheduled": "Rescheduled",
    "open_findings": "Open findings",
}


@pytest.fixture
def demo(tmp_path: Path, database_url: str) -> Path:
    """The demo, synced and evaluated; two sessions confirmed, one disputed."""
    write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    add_settings(config_file, {"database": database_url})
    ctx = stages.Context.open(config_file, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        stages.evaluate_rules(ctx)
        with ctx.db.begin() as db:
            presumed = db.scalars(
                select(MentoringSession)
                .where(
                    MentoringSession.outcome == "presumed_held",
                    MentoringSession.start >= datetime(2026, 10, 1, tzinfo=UTC),
                )
                .order_by(MentoringSession.start)
            ).all()
            for session, (outcome, answer) in zip(
                presumed, [("held", "yes"), ("held", "yes"), ("missed", "no")], strict=False
            ):
                session.outcome = outcome
                db.execute(delete(Evidence).where(Evidence.session_id == session.id))
                db.add_all(
                    [
                        Evidence(
                            session_id=session.id,
                            rank=0,
                            kind="participant_confirmation",
                            party="mentor",
                            detail=f"the mentor answered {answer}",
                        ),
                        Evidence(session_id=session.id, rank=1, kind="rsvp", detail="accepted"),
                    ]
                )
    finally:
        ctx.engine.dispose()
    return config_file


def report(config: Path, *args: str) -> Result:
    with time_machine.travel(NOW, tick=False):
        return CliRunner().invoke(app, ["report", "--config", str(config), *RANGE, *args])


def from_csv(path: Path) -> tuple[dict[tuple[str, str, str], dict[str, str]], dict[str, str]]:
    """The pairings' cells by (program name, mentor, mentee), and program id → name."""
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    cells = {
        (row["program_name"], row["mentor_email"], row["mentee_email"]): {
            **{key: row[key] for key in COUNTS},
            "rate": row["attendance_rate"],
            "last_attended": row["last_attended"],
            "next_scheduled": row["next_scheduled"],
        }
        for row in rows
    }
    return cells, {row["program"]: row["program_name"] for row in rows}


def from_xlsx(
    path: Path,
) -> tuple[dict[tuple[str, str, str], dict[str, object]], list[dict[str, object]]]:
    book = load_workbook(path)

    def table(name: str) -> list[dict[str, object]]:
        sheet = book[name]
        header = [c.value for c in sheet[HEADER_ROW]]
        return [
            dict(zip(header, (c.value for c in row), strict=True))
            for row in sheet.iter_rows(min_row=HEADER_ROW + 1)
        ]

    summary = table(SUMMARY)
    pairings = {}
    for name, totals in zip(book.sheetnames[1:], summary, strict=True):
        for row in table(name):
            pairings[
                (str(totals["Program"]), str(row["Mentor email"]), str(row["Mentee email"]))
            ] = row
    return pairings, summary


def from_html(
    path: Path,
) -> tuple[dict[tuple[str, str, str], dict[str, str]], list[dict[str, str]]]:
    tree = html.fromstring(path.read_text(encoding="utf-8"))

    def rows(table: html.HtmlElement) -> list[tuple[html.HtmlElement, dict[str, str]]]:
        header = [th.text_content().strip() for th in table.xpath("./thead/tr/th")]
        return [
            (
                tr,
                dict(
                    zip(header, (td.text_content().strip() for td in tr.xpath("./td")), strict=True)
                ),
            )
            for tr in table.xpath("./tbody/tr")
        ]

    (totals_table,) = tree.xpath('//table[@class="totals"]')
    totals = [cells for _tr, cells in rows(totals_table)]
    pairings = {}
    for section in tree.xpath('//section[@class="program"]'):
        name = section.xpath("string(./h2)")
        (table,) = section.xpath('.//table[@class="pairings"]')
        for tr, cells in rows(table):
            pairings[(name, tr.get("data-mentor"), tr.get("data-mentee"))] = cells
    return pairings, totals


def test_csv_xlsx_and_html_say_the_same_numbers(demo: Path, tmp_path: Path) -> None:
    for fmt in ("csv", "xlsx", "html"):
        done = report(demo, "--out", str(tmp_path / f"r.{fmt}"))
        assert done.exit_code == 0, done.output
    csv_rows, names = from_csv(tmp_path / "r.csv")
    xlsx_rows, xlsx_totals = from_xlsx(tmp_path / "r.xlsx")
    html_rows, html_totals = from_html(tmp_path / "r.html")
    assert set(csv_rows) == set(xlsx_rows) == set(html_rows)
    assert len(csv_rows) == 12
    assert sum(int(row["confirmed"]) for row in csv_rows.values()) == 2

    for key, cells in csv_rows.items():
        sheet, page = xlsx_rows[key], html_rows[key]
        for column, label in COUNTS.items():
            assert int(cells[column]) == sheet[label] == int(page[label]), (key, column)
        rate = sheet["Attendance"]
        if rate is None:
            assert (cells["rate"], page["Attendance"]) == ("", "\u2014")
        else:
            assert isinstance(rate, int | float)  # 100% is read back as the integer 1
            assert cells["rate"] == f"{rate:.2f}"
            assert page["Attendance"] == f"{rate:.0%}"
        last = sheet["Last attended"]
        assert cells["last_attended"] == (f"{last:%Y-%m-%d}" if last else "")
        assert page["Last attended"] == (cells["last_attended"] or "never")
        upcoming = sheet["Next scheduled"]
        assert cells["next_scheduled"] == (f"{upcoming:%Y-%m-%d %H:%M}" if upcoming else "")
        assert page["Next scheduled"] == (cells["next_scheduled"] or "nothing scheduled")

    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (program_name, _mentor, _mentee), cells in csv_rows.items():
        sums[program_name]["Pairings"] += 1
        for column, label in COUNTS.items():
            sums[program_name][label] += int(cells[column])
    assert [t["Program"] for t in xlsx_totals] == [t["Program"] for t in html_totals]
    assert [t["Program"] for t in xlsx_totals] == [names[p] for p in sorted(names)]
    for sheet_totals, page_totals in zip(xlsx_totals, html_totals, strict=True):
        expected = sums[str(sheet_totals["Program"])]
        for label in ("Pairings", *COUNTS.values()):
            assert sheet_totals[label] == int(page_totals[label]) == expected[label], label
        rate = expected["Attended"] / expected["Scheduled"]
        assert sheet_totals["Attendance"] == pytest.approx(rate)
        assert page_totals["Attendance"] == f"{rate:.0%}"


def test_the_html_header_names_local_days_and_programs(demo: Path, tmp_path: Path) -> None:
    assert report(demo, "--out", str(tmp_path / "r.html")).exit_code == 0
    tree = html.fromstring((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert (
        tree.xpath('string(//span[@class="period"])') == "1 Sep \u2013 30 Nov 2026, Europe/London"
    )
    assert tree.xpath("//section/h2/text()") == ["Engineering mentoring", "Leadership mentoring"]
    assert len(tree.xpath('//figure[contains(@class, "chart")]//svg')) == 6


def test_xlsx_goes_to_a_file_never_to_standard_output(demo: Path, tmp_path: Path) -> None:
    done = report(demo, "--format", "xlsx")
    assert done.exit_code == 2
    assert "--format xlsx writes a spreadsheet file: give --out FILE.xlsx" in done.output
    assert "Traceback" not in done.output
    mismatch = report(demo, "--format", "xlsx", "--out", str(tmp_path / "r.csv"))
    assert mismatch.exit_code == 2
    assert "does not match" in mismatch.output
    by_suffix = report(demo, "--out", str(tmp_path / "r.xlsx"))
    assert by_suffix.exit_code == 0, by_suffix.output
    assert (tmp_path / "r.xlsx").read_bytes()[:2] == b"PK"  # a zip: the workbook
    assert (tmp_path / "r.xlsx").stat().st_mode & 0o777 == 0o600


def test_one_program_only(demo: Path, tmp_path: Path) -> None:
    done = report(demo, "--program", "leadership", "--out", str(tmp_path / "r.csv"))
    assert done.exit_code == 0, done.output
    rows, names = from_csv(tmp_path / "r.csv")
    assert names == {"leadership": "Leadership mentoring"}
    assert len(rows) == 4
    # The stage the dashboard calls: the same figures, named as the config names them.
    ctx = stages.Context.open(demo, clock=lambda: NOW, write=False)
    try:
        scoped = range_report(
            ctx, first=date(2026, 9, 1), last=date(2026, 11, 30), programs=["leadership"]
        )
    finally:
        ctx.engine.dispose()
    assert render_report(scoped, "csv") == (tmp_path / "r.csv").read_bytes()
    unknown = report(demo, "--program", "nope", "--out", str(tmp_path / "r.csv"))
    assert unknown.exit_code == 2
    assert "--program nope: no such program" in unknown.output


def test_a_csv_report_loads_neither_matplotlib_nor_openpyxl(demo: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "r.csv")
    args = ["report", "--config", str(demo), *RANGE, "--out", out]
    code, loaded = loaded_by(args, ("matplotlib", "openpyxl"))
    assert (code, loaded) == (0, [])
    code, loaded = loaded_by([*args[:-1], str(tmp_path / "r.html")], ("matplotlib",))
    assert (code, loaded) == (0, ["matplotlib"])

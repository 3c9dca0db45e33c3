"""The report's charts: valid inline SVG, one shape per data point, nothing to run or fetch.

The reports here are built from figures directly (the renderers are pure over a
:class:`Report`); test_report_formats.py renders the demo organisation's.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from lxml import etree, html
from structlog.testing import capture_logs

from mentorpulse.reports.charts import (
    MAX_PAIRS,
    Chart,
    chart_id,
    health_chart,
    health_order,
    outcomes_chart,
    program_charts,
    rates_chart,
)
from mentorpulse.reports.export import day_range
from mentorpulse.reports.figures import MonthlyFigures, PairingFigures, Report, program_totals
from mentorpulse.reports.render import render_html

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
MONTHS = (date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1))
SVG = "{http://www.w3.org/2000/svg}"


def pair(n: int, program: str, scheduled: int, attended: int, **names: str) -> PairingFigures:
    return PairingFigures(
        program=program,
        program_name=names.get("program_name", program.title()),
        mentor_email=f"mentor{n}@demo.example",
        mentee_email=f"mentee{n}@demo.example",
        scheduled=scheduled,
        attended=attended,
        held=0,
        confirmed=0,
        presumed_held=attended,
        missed=scheduled - attended,
        cancelled=0,
        rescheduled=0,
        attendance_rate=attended / scheduled if scheduled else None,
        last_attended=None,
        next_scheduled=None,
        open_findings=0,
        mentor_name=names.get("mentor_name"),
    )


def make_report(rows: list[PairingFigures], by_program: dict[str, list[dict[str, int]]]) -> Report:
    start, end = day_range(MONTHS[0], date(2026, 11, 30), "Europe/London")
    health: list[tuple[str | None, ...]] = [
        ("held", None, "missed") if i % 2 else ("presumed_held", "cancelled", None)
        for i in range(len(rows))
    ]
    return Report(
        rows=rows,
        totals=program_totals(rows),
        monthly=MonthlyFigures(MONTHS, by_program, health),
        note=None,
        start=start,
        end=end,
        zone="Europe/London",
        generated_at=NOW,
        title="Mentoring sessions",
    )


@pytest.fixture(scope="module")
def report() -> Report:
    rows = [
        pair(1, "eng", 4, 4),
        pair(2, "eng", 4, 1),
        pair(3, "eng", 0, 0),
        pair(4, "eng", 10, 7),
        pair(5, "eng", 3, 3, mentor_name="$x^2$ {unbalanced $"),  # mathtext must not run
    ]
    by_program = {
        "eng": [
            {"presumed_held": 5, "missed": 2},
            {"held": 1, "presumed_held": 4, "cancelled": 1},
            {"presumed_held": 5, "upcoming": 3},
        ]
    }
    return make_report(rows, by_program)


def parse(svg: str) -> etree._Element:
    root = etree.fromstring(svg.encode())
    assert root.tag == f"{SVG}svg"
    return root


def groups(root: etree._Element, prefix: str) -> list[str]:
    return [g.get("id") for g in root.iter(f"{SVG}g") if (g.get("id") or "").startswith(prefix)]


def test_outcomes_has_one_bar_per_month_and_outcome(report: Report) -> None:
    chart = outcomes_chart(report, "eng")
    root = parse(chart.svg)
    bars = groups(root, "chart-outcomes-eng-")
    assert sorted(bars) == sorted(
        [
            "chart-outcomes-eng-presumed_held-2026-09",
            "chart-outcomes-eng-missed-2026-09",
            "chart-outcomes-eng-held-2026-10",
            "chart-outcomes-eng-presumed_held-2026-10",
            "chart-outcomes-eng-cancelled-2026-10",
            "chart-outcomes-eng-presumed_held-2026-11",
            "chart-outcomes-eng-upcoming-2026-11",
        ]
    )
    assert chart.id == "chart-outcomes-eng"
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Eng: sessions per month by outcome"
    assert "Sep 2026: 5 presumed held, 2 missed" in chart.description
    assert "Nov 2026: 5 presumed held, 3 upcoming" in chart.description


def test_rates_has_one_bar_per_filled_bin(report: Report) -> None:
    chart = rates_chart(report, "eng")
    bins = groups(parse(chart.svg), "chart-rates-eng-bin-")
    # 100%, 25%, 70%, 100%: bins 90-100 (twice), 20-30, 70-80; the pair with nothing
    # scheduled has no rate.
    assert sorted(bins) == [
        "chart-rates-eng-bin-20",
        "chart-rates-eng-bin-70",
        "chart-rates-eng-bin-90",
    ]
    assert "4 pairings with scheduled sessions: 1 below 50%, 1 from 50% to 79%" in chart.description
    assert "1 with nothing scheduled" in chart.description


def test_health_grid_has_a_cell_per_pair_and_month(report: Report) -> None:
    chart = health_chart(report, "eng")
    cells = groups(parse(chart.svg), "chart-health-eng-cell-")
    assert len(cells) == 5 * len(MONTHS)
    assert "And" not in chart.description


def test_health_grid_caps_the_pairs_shown_and_says_how_many_more() -> None:
    rows = [pair(n, "big", 4, n % 5) for n in range(MAX_PAIRS + 7)]
    report = make_report(rows, {"big": [{}, {}, {}]})
    chart = health_chart(report, "big")
    cells = groups(parse(chart.svg), "chart-health-big-cell-")
    assert len(cells) == MAX_PAIRS * len(MONTHS)
    assert "And 7 more pairings not shown" in chart.description
    # The pairs at risk are the ones shown: every hidden pair attends at least as well.
    order = health_order(list(enumerate(rows)))
    shown = [r.attendance_rate or 0.0 for _i, r in order[:MAX_PAIRS]]
    hidden = [r.attendance_rate or 0.0 for _i, r in order[MAX_PAIRS:]]
    assert max(shown) <= min(hidden)


def test_charts_are_inline_safe_and_the_same_bytes_each_time(report: Report) -> None:
    first = [chart.svg for chart in program_charts(report, "eng")]
    again = [chart.svg for chart in program_charts(report, "eng")]
    assert first == again  # fixed hash salt, no date: deterministic
    for svg in first:
        assert svg.startswith("<svg ")
        assert "<script" not in svg.lower()
        assert "<text" not in svg  # text as paths: no font needed by the reader
        assert "<image" not in svg  # vector, no embedded raster
        links = re.findall(r'(?:xlink:)?href="([^"]*)"', svg)
        assert links  # the glyphs, drawn once and used by reference
        assert all(link.startswith("#") for link in links)
        assert "http://" not in svg.replace("http://www.w3.org/", "")


def test_names_in_any_script_draw_without_a_warning() -> None:
    rows = [pair(1, "intl", 2, 1, mentor_name="\u5c71\u7530 \u592a\u90ce"), pair(2, "intl", 2, 2)]
    report = make_report(rows, {"intl": [{"held": 1}, {}, {"missed": 1}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chart = health_chart(report, "intl")
    assert len(groups(parse(chart.svg), "chart-health-intl-cell-")) == 2 * len(MONTHS)


def test_chart_ids_are_stable_and_safe_for_any_program_id() -> None:
    assert chart_id("outcomes", "engineering") == "chart-outcomes-engineering"
    odd = chart_id("rates", '=HYPERLINK("x")')
    assert re.fullmatch(r"chart-rates-[a-z0-9-]+", odd)
    assert chart_id("rates", "R&D") != chart_id("rates", "r-d")


def test_the_html_report_inlines_each_chart_in_its_figure(report: Report) -> None:
    page = render_html(report)
    tree = html.fromstring(page)
    figures = tree.xpath('//figure[contains(concat(" ", @class, " "), " chart ")]')
    assert [f.get("id") for f in figures] == [
        "chart-outcomes-eng",
        "chart-rates-eng",
        "chart-health-eng",
    ]
    for figure in figures:
        assert figure.get("aria-label")
        assert len(figure.xpath(".//svg")) == 1
        assert figure.xpath("string(.//figcaption)").strip()
    assert "<script" not in page.lower()
    assert page.count("<table") == 2  # the numbers stay, for clients that drop SVG


def test_a_csv_report_does_not_load_matplotlib() -> None:
    probe = (
        "import sys\n"
        "from mentorpulse.reports import export\n"
        "print('matplotlib' in sys.modules, 'openpyxl' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_a_chart_that_fails_leaves_the_report_and_its_numbers(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_report: Report, program: str) -> Iterator[Chart]:
        raise ValueError(f"cannot draw {program}")

    monkeypatch.setattr("mentorpulse.reports.charts.program_charts", broken)
    with capture_logs() as logs:
        page = render_html(report)
    assert "<figure" not in page
    assert page.count("<table") == 2
    assert [(e["event"], e["program"]) for e in logs] == [("report_chart_failed", "eng")]


def test_a_program_of_one_pair_gets_a_health_grid_with_room_to_draw() -> None:
    """One pair is one row, but the grid's title, month labels and legend still need their
    room: with too small a figure matplotlib gives up its layout and the legend covers
    the cells."""
    one = make_report([pair(1, "solo", 4, 3)], {"solo": [{"presumed_held": 3}, {}, {}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied …" among them
        chart = health_chart(one, "solo")
    assert len(parse(chart.svg).findall(f".//{SVG}g[@id='{chart.id}-cell-0-2026-09']")) == 1

"""The HTML report's charts as a browser draws them: headless Chromium (Debian's package,
the browser tests' one ``page`` fixture) takes a screenshot of each chart's box, and the box
holds the chart's colours.

No comparison with a stored image (fonts and anti-aliasing differ between machines):
only that the SVG drew, in the colours of what it shows.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from lxml import html
from PIL import Image

from mentorpulse import stages
from mentorpulse.reports.charts import COLOURS, OK_COLOUR
from mentorpulse.reports.export import build_report, render_report
from mentorpulse.sample import write_demo
from tests.service_support import add_settings

if TYPE_CHECKING:
    from playwright.sync_api import Page

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)


def pixels_near(image: Image.Image, colour: str, tolerance: int = 12) -> int:
    want = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    close = np.abs(np.asarray(image, dtype=int) - want) <= tolerance
    return int(close.all(axis=2).sum())


def test_every_chart_draws_in_its_box(tmp_path: Path, page: Page) -> None:
    write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    add_settings(config_file, {"database": f"sqlite:///{tmp_path / 'demo.db'}"})
    ctx = stages.Context.open(config_file, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            report = build_report(
                db, first=date(2026, 9, 1), last=date(2026, 11, 30), zone="UTC", now=NOW
            )
    finally:
        ctx.engine.dispose()
    report_html = render_report(report, "html").decode()
    figures = html.fromstring(report_html).xpath('//figure[contains(@class, "chart")]')
    assert len(figures) == 6
    # What each kind must show in the demo: presumed held sessions, pairs at 80% or more.
    expected = {
        "outcomes": COLOURS["presumed_held"],
        "rates": OK_COLOUR,
        "health": COLOURS["presumed_held"],
    }
    page.set_viewport_size({"width": 1000, "height": 900})
    page.set_content(report_html)
    for figure in figures:
        shot = page.locator(f"#{figure.get('id')}").screenshot()
        kind = figure.get("class").split()[1]
        drawn = pixels_near(Image.open(io.BytesIO(shot)).convert("RGB"), expected[kind])
        assert drawn > 400, f"{figure.get('id')}: {drawn} pixels of {expected[kind]}"

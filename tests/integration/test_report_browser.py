"""The HTML report's charts as a browser draws them: headless Chromium (Debian's package)
takes a screenshot of each chart's box, and the box holds the chart's colours.

No comparison with a stored image (fonts and anti-aliasing differ between machines):
only that the SVG drew, in the colours of what it shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from lxml import html
from PIL import Image

from mentorpulse import stages
from mentorpulse.reports.charts import COLOURS, OK_COLOUR
from mentorpulse.reports.export import build_report, render_report
from mentorpulse.sample import write_demo

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        message = "the browser tests need Chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def screenshot(browser: str, page: Path, out: Path) -> Image.Image:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={page.parent / 'profile'}",
            "--window-size=1000,900",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Image.open(out).convert("RGB")


def pixels_near(image: Image.Image, colour: str, tolerance: int = 12) -> int:
    want = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    close = np.abs(np.asarray(image, dtype=int) - want) <= tolerance
    return int(close.all(axis=2).sum())


def test_every_chart_draws_in_its_box(tmp_path: Path) -> None:
    browser = chromium()
    write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["database"] = f"sqlite:///{tmp_path / 'demo.db'}"
    config_file.write_text(yaml.safe_dump(config))
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
    page = render_report(report, "html").decode()
    style = re.search(r"<style>.*?</style>", page, re.DOTALL)
    assert style is not None
    figures = html.fromstring(page).xpath('//figure[contains(@class, "chart")]')
    assert len(figures) == 6
    # What each kind must show in the demo: presumed held sessions, pairs at 80% or more.
    expected = {
        "outcomes": COLOURS["presumed_held"],
        "rates": OK_COLOUR,
        "health": COLOURS["presumed_held"],
    }
    for figure in figures:
        alone = tmp_path / f"{figure.get('id')}.html"
        alone.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style.group(0)}</head>"
            f"<body>{html.tostring(figure, encoding='unicode')}</body></html>",
            encoding="utf-8",
        )
        shot = screenshot(browser, alone, tmp_path / f"{figure.get('id')}.png")
        kind = figure.get("class").split()[1]
        drawn = pixels_near(shot, expected[kind])
        assert drawn > 400, f"{figure.get('id')}: {drawn} pixels of {expected[kind]}"

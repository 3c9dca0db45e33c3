"""The report for a range of days, in the program's time zone: built once, rendered as
CSV, HTML or XLSX.

:func:`build_report` computes every figure (the CLI, the scheduled reports and the
dashboard call it), :func:`render_report` formats one :class:`Report` in any format, so
the same range shows the same numbers in every file.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import SourceBase
from mentorpulse.reports.figures import (
    Report,
    coverage_note,
    covered_since,
    figure_rows,
    figures_of,
    monthly_figures,
    program_totals,
)
from mentorpulse.reports.render import render_csv, render_html

log = structlog.get_logger(__name__)

TITLE = "Mentoring sessions"
PRIVATE_FILE = 0o600
Format = Literal["csv", "html", "xlsx"]
FORMATS: tuple[Format, ...] = ("html", "csv", "xlsx")  # every format a report comes in
CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "html": "text/html",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

__all__ = ["Report", "build_report", "render_report", "write_report"]


def day_range(first: date, last: date, zone: str) -> tuple[datetime, datetime]:
    """[first 00:00, the day after last 00:00) in ``zone``: whole local days, DST included."""
    tz = ZoneInfo(zone)
    start = datetime.combine(first, time.min, tzinfo=tz)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def report_note(db: Db, sources: Iterable[SourceBase], start: datetime) -> str | None:
    """The coverage warning for a report whose range starts at ``start``, if it needs one."""
    windows = {source.id: source.window_past for source in sources}
    return coverage_note(covered_since(db, windows), start) if windows else None


def build_report(
    db: Db,
    *,
    first: date,
    last: date,
    zone: str,
    now: datetime,
    sources: Iterable[SourceBase] = (),
    programs: Collection[str] | None = None,
    program_names: Mapping[str, str] | None = None,
    title: str = TITLE,
) -> Report:
    """Every figure of the report on the days ``first`` to ``last`` of ``zone``.

    ``programs`` limits it to those program ids (a program admin's own); ``program_names``
    (the config's ``Program.name``) name them, else their stored names, else their ids.
    With the configured ``sources``, a range that starts before what they cover carries a
    note that every format shows.
    """
    start, end = day_range(first, last, zone)
    found = figure_rows(db, start=start, end=end, now=now, programs=programs)
    rows = figures_of(found, start=start, program_names=program_names)
    note = report_note(db, sources, start)
    if note:
        log.warning("report_incomplete", first=first.isoformat(), note=note)
    return Report(
        rows=rows,
        totals=program_totals(rows),
        monthly=monthly_figures(found, start=start, end=end),
        note=note,
        start=start,
        end=end,
        zone=zone,
        generated_at=now,
        title=title,
    )


def render_report(report: Report, fmt: Format, *, charts: bool = True) -> bytes:
    """The report as a file's bytes: ``csv`` and ``html`` in UTF-8, ``xlsx`` a workbook.

    ``charts`` (HTML only) draws the inline SVG charts, which loads matplotlib.
    """
    if fmt == "csv":
        return render_csv(report).encode()
    if fmt == "html":
        return render_html(report, charts=charts).encode()
    if fmt == "xlsx":
        from mentorpulse.reports.xlsx import render_xlsx  # openpyxl loads for XLSX only

        return render_xlsx(report)
    raise ValueError(f"unknown report format {fmt!r}")


def write_report(
    database: sessionmaker[Db],
    *,
    first: date,
    last: date,
    zone: str,
    now: datetime,
    fmt: Format,
    out: Path | None,
    sources: Iterable[SourceBase] = (),
    programs: Collection[str] | None = None,
    program_names: Mapping[str, str] | None = None,
    charts: bool = True,
) -> Report:
    """Build the report and write it as ``fmt`` to ``out`` (or standard output).

    XLSX is a binary file: it needs ``out``. The returned report's ``note`` says, for the
    caller to show, why the figures cannot be complete.
    """
    if fmt == "xlsx" and out is None:
        raise ValueError("an XLSX report is written to a file, not to standard output")
    with database() as db:
        report = build_report(
            db,
            first=first,
            last=last,
            zone=zone,
            now=now,
            sources=sources,
            programs=programs,
            program_names=program_names,
        )
    data = render_report(report, fmt, charts=charts)
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write(out, data)
    return report


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temporary file beside ``path``: a reader never sees half a report.

    The file is private (0600, whatever the umask: a report names people and their
    attendance), and the temporary file is gone whatever fails.
    """
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), PRIVATE_FILE)
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Write the pairing report for a range of days, in the program's time zone."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import SourceBase
from mentorpulse.reports.figures import (
    PairingFigures,
    coverage_note,
    covered_since,
    pairing_figures,
)
from mentorpulse.reports.render import render_html, write_csv

log = structlog.get_logger(__name__)

TITLE = "Mentoring sessions"
PRIVATE_FILE = 0o600


def day_range(first: date, last: date, zone: str) -> tuple[datetime, datetime]:
    """[first 00:00, the day after last 00:00) in ``zone``: whole local days, DST included."""
    tz = ZoneInfo(zone)
    start = datetime.combine(first, time.min, tzinfo=tz)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def report_text(
    rows: Sequence[PairingFigures],
    *,
    fmt: str,
    start: datetime,
    end: datetime,
    now: datetime,
    title: str = TITLE,
    note: str | None = None,
) -> str:
    """The report as one string: ``csv`` (for spreadsheets) or ``html`` (to read)."""
    if fmt == "html":
        return render_html(rows, start=start, end=end, generated_at=now, title=title, note=note)
    stream = io.StringIO(newline="")
    write_csv(rows, stream, note=note)
    return stream.getvalue()


@dataclass(frozen=True, slots=True)
class Report:
    rows: list[PairingFigures]
    note: str | None  # why the figures cannot be complete (also in the file); None: they are


def report_note(db: Db, sources: Iterable[SourceBase], start: datetime) -> str | None:
    """The coverage warning for a report whose range starts at ``start``, if it needs one."""
    windows = {source.id: source.window_past for source in sources}
    return coverage_note(covered_since(db, windows), start) if windows else None


def write_report(
    database: sessionmaker[Db],
    *,
    first: date,
    last: date,
    zone: str,
    now: datetime,
    fmt: str,
    out: Path | None,
    sources: Iterable[SourceBase] = (),
) -> Report:
    """Compute the figures and write them as CSV or HTML to ``out`` (or standard output).

    With the configured ``sources``, a range that starts before what they cover carries
    a warning in the file, and the returned note says it for the caller to show.
    """
    start, end = day_range(first, last, zone)
    with database() as db:
        rows = pairing_figures(db, start=start, end=end, now=now)
        note = report_note(db, sources, start)
    if note:
        log.warning("report_incomplete", first=first.isoformat(), note=note)
    text = report_text(rows, fmt=fmt, start=start, end=end, now=now, note=note)
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write(out, text)
    return Report(rows, note)


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file beside ``path``: a reader never sees half a report.

    The file is private (0600, whatever the umask: a report names people and their
    attendance), and the temporary file is gone whatever fails.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            os.fchmod(stream.fileno(), PRIVATE_FILE)
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

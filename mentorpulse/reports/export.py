"""Write the pairing report for a range of days, in the program's time zone."""

from __future__ import annotations

import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session, sessionmaker

from mentorpulse.reports.figures import PairingFigures, pairing_figures
from mentorpulse.reports.render import render_html, write_csv


def day_range(first: date, last: date, zone: str) -> tuple[datetime, datetime]:
    """[first 00:00, the day after last 00:00) in ``zone``: whole local days, DST included."""
    tz = ZoneInfo(zone)
    start = datetime.combine(first, time.min, tzinfo=tz)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def write_report(
    sessions: sessionmaker[Session],
    *,
    first: date,
    last: date,
    zone: str,
    now: datetime,
    fmt: str,
    out: Path | None,
) -> list[PairingFigures]:
    """Compute the figures and write them as CSV or HTML to ``out`` (or standard output)."""
    start, end = day_range(first, last, zone)
    with sessions() as db:
        rows = pairing_figures(db, start=start, end=end, now=now)
    if fmt == "html":
        page = render_html(rows, start=start, end=end, generated_at=now, title="Mentoring sessions")
        if out is None:
            sys.stdout.write(page)
        else:
            _atomic_write(out, page)
    elif out is None:
        write_csv(rows, sys.stdout)
    else:
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as stream:
            write_csv(rows, stream)
        tmp.replace(out)
    return rows


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)

"""Scheduled reports: when a week, month or quarter ends, HR gets attended vs scheduled.

Each schedule in ``reports.send`` reports the period that ended last (a new deployment
does not mail a backlog of older ones) to each recipient once: the outbox key names the
schedule's period and the recipient, and the row is at-most-once, so an email whose
sending was interrupted becomes ``unknown`` rather than going out twice. A report waits
while any source's data cannot be trusted (the test the rules use to suppress findings):
HR never gets figures from a half-finished sync. The files are also kept in
``reports.out_dir`` as ``report-<period>.csv`` and ``.html`` (and ``.xlsx`` when a
schedule asks for it).

The attachments travel in the outbox row's payload, rendered when the report is queued:
text files as text, the XLSX as base64. Rendering them at send time from stored figures
instead would mail figures that changed since the period was queued (a late sync), make
notify depend on reports (the layers keep the two apart), and render once per recipient
and retry. The price is the row's size, so it is bounded: :data:`MAX_ATTACHMENTS` in
all, and a file that would pass it is left out of the email, which then says so and
where the file is kept.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.config.schema import MentorpulseConfig, ReportSchedule
from mentorpulse.notify.outbox import enqueue, sender_domain
from mentorpulse.notify.route import Notification, Recipient, Router
from mentorpulse.notify.timing import next_send_time, zone
from mentorpulse.reports.export import (
    CONTENT_TYPES,
    TITLE,
    Format,
    Report,
    atomic_write,
    build_report,
    render_report,
)
from mentorpulse.reports.render import format_percent
from mentorpulse.stages.context import Context
from mentorpulse.stages.source_health import stale_sources
from mentorpulse.storage import outbox as stored_outbox

log = structlog.get_logger(__name__)

TEMPLATE = "report"
# The files every scheduled report is kept as in reports.out_dir, and the most the
# attachments of one email may weigh as stored (base64 counted): an SMTP server commonly
# refuses a message of 10-25 MB, and the row is copied for each recipient.
KEPT_FORMATS: tuple[Format, ...] = ("html", "csv")
MAX_ATTACHMENTS = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Period:
    """Whole local days from ``first`` to ``last``; ``label`` names it in keys and files."""

    every: str
    label: str  # 2026-W47, 2026-10, 2026-Q3
    title: str  # week 47 of 2026, October 2026, Q3 2026
    first: date
    last: date


def period_before(every: str, today: date) -> Period:
    """The last whole week (Monday to Sunday), month or quarter that ended before ``today``."""
    if every == "week":
        first = today - timedelta(days=today.weekday() + 7)
        year, week, _ = first.isocalendar()
        return Period(
            every, f"{year}-W{week:02d}", f"week {week} of {year}", first, first + timedelta(days=6)
        )
    if every == "month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(
            every,
            f"{last:%Y-%m}",
            f"{last:%B %Y}",
            last.replace(day=1),
            last,
        )
    if every == "quarter":
        quarter_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        last = quarter_start - timedelta(days=1)
        first = date(last.year, 3 * ((last.month - 1) // 3) + 1, 1)
        quarter = (last.month - 1) // 3 + 1
        return Period(every, f"{last.year}-Q{quarter}", f"Q{quarter} {last.year}", first, last)
    raise ValueError(f"unknown report period {every!r}")


def report_key(period: Period, address: str) -> str:
    """One email per schedule period and recipient, whatever schedule asked for it."""
    digest = hashlib.sha256(address.lower().encode()).hexdigest()[:12]
    return f"{_prefix(period)}{digest}"


def current_report_prefixes(config: MentorpulseConfig, now: datetime) -> list[str]:
    """Key prefixes of the reports that are still the latest: purging their rows would
    let the report be sent again."""
    today = _today(config, now)
    return [_prefix(period_before(s.every, today)) for s in config.reports.send]


def _prefix(period: Period) -> str:
    return f"report:{period.every}:{period.label}:"


def _today(config: MentorpulseConfig, now: datetime) -> date:
    return now.astimezone(ZoneInfo(config.timezone)).date()


def queue_reports(
    config: MentorpulseConfig,
    router: Router,
    db: Db,
    now: datetime,
    *,
    out_dir: Path | None,
) -> int:
    """Queue the reports whose period has ended and that are not queued yet.

    In the caller's transaction, like every outbox decision; with ``out_dir`` the report
    files are written there first (a crash before the commit rewrites them next time).
    Returns how many emails were queued.
    """
    due = _unsent(config, router, db, now)
    if not due:
        return 0
    stale = stale_sources(db, config, now)
    if stale:
        log.warning(
            "report_deferred",
            periods=sorted({period.label for period, _schedule, _people in due}),
            reason="source data cannot be trusted yet",
            sources=sorted(stale),
        )
        return 0
    wanted = _wanted(due)
    periods: dict[Period, list[Format]] = {}  # each period's files: kept, and mailed
    for period, _person, formats in wanted.values():
        needed = periods.setdefault(period, list(KEPT_FORMATS))
        needed.extend(f for f in formats if f not in needed)
    payloads: dict[tuple[Period, tuple[Format, ...]], dict[str, object]] = {}
    notes: dict[str, Notification] = {}
    for period, needed in periods.items():
        report = _report(config, db, period, now)
        rendered = {fmt: render_report(report, fmt) for fmt in needed}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for fmt, data in rendered.items():
                atomic_write(out_dir / _file_name(period, fmt), data)
        for key, (due_period, person, formats) in wanted.items():
            if due_period != period:
                continue
            chosen = (period, tuple(formats))
            if chosen not in payloads:
                payloads[chosen] = _payload(config, report, period, formats, rendered)
            notes[key] = Notification(
                recipient=person.email,
                template=TEMPLATE,
                idempotency_key=key,
                payload={**payloads[chosen], "recipient_name": person.name},
                due=next_send_time(now, zone(person.timezone, config.timezone), router.send_window),
                at_most_once=True,
            )
    queued = enqueue(db, notes.values(), now=now, domain=sender_domain(config.notify.sender))
    log.info("reports_queued", periods=sorted(p.label for p in periods), emails=queued)
    return queued


def _wanted(
    due: list[tuple[Period, ReportSchedule, list[Recipient]]],
) -> dict[str, tuple[Period, Recipient, list[Format]]]:
    """Per outbox key: the period, the recipient and the files they get. Two schedules
    of one period may name the same person: one email, with the files both ask for."""
    wanted: dict[str, tuple[Period, Recipient, list[Format]]] = {}
    for period, schedule, people in due:
        for person in people:
            key = report_key(period, person.email)
            _period, _person, formats = wanted.setdefault(key, (period, person, []))
            formats.extend(f for f in schedule.formats if f not in formats)
    return wanted


def _unsent(
    config: MentorpulseConfig, router: Router, db: Db, now: datetime
) -> list[tuple[Period, ReportSchedule, list[Recipient]]]:
    """Each schedule's last period with the recipients not yet queued for it."""
    today = _today(config, now)
    due: list[tuple[Period, ReportSchedule, list[Recipient]]] = []
    for schedule in config.reports.send:
        period = period_before(schedule.every, today)
        people = {report_key(period, p.email): p for p in router.report_recipients(schedule.to)}
        queued = stored_outbox.queued_keys(db, list(people))
        missing = [p for key, p in people.items() if key not in queued]
        if missing:
            due.append((period, schedule, missing))
    return due


def range_report(
    ctx: Context,
    *,
    first: date,
    last: date,
    programs: Collection[str] | None = None,
    zone: str | None = None,
) -> Report:
    """The report on any days, as the config names things: what the dashboard shows and
    offers as HTML, CSV and XLSX (``render_report``). ``programs`` limits it (a program
    admin's own); ``zone`` defaults to the top-level ``timezone``."""
    with ctx.db() as db:
        return report_of(
            ctx.config, db, first=first, last=last, now=ctx.clock(), programs=programs, zone=zone
        )


def report_of(
    config: MentorpulseConfig,
    db: Db,
    *,
    first: date,
    last: date,
    now: datetime,
    programs: Collection[str] | None = None,
    zone: str | None = None,
    title: str = TITLE,
) -> Report:
    """:func:`build_report` with the config's zone, program names and sources."""
    return build_report(
        db,
        first=first,
        last=last,
        zone=zone or config.timezone,
        now=now,
        sources=config.sources,
        programs=programs,
        program_names=config.program_names(),
        title=title,
    )


def _report(config: MentorpulseConfig, db: Db, period: Period, now: datetime) -> Report:
    title = f"{TITLE}, {period.title}"
    return report_of(config, db, first=period.first, last=period.last, now=now, title=title)


def _file_name(period: Period, fmt: str) -> str:
    return f"report-{period.label}.{fmt}"


def _payload(
    config: MentorpulseConfig,
    report: Report,
    period: Period,
    formats: Sequence[Format],
    rendered: dict[Format, bytes],
) -> dict[str, object]:
    """The summary the email shows and the files it carries, as JSON values."""
    attachments: list[dict[str, str]] = []
    left_out: list[str] = []
    weight = 0
    for fmt in formats:
        name, data = _file_name(period, fmt), rendered[fmt]
        item = {"filename": name, "content_type": CONTENT_TYPES[fmt]}
        if fmt == "xlsx":
            item["base64"] = base64.b64encode(data).decode("ascii")
            size = len(item["base64"])
        else:
            item["text"] = data.decode("utf-8")
            size = len(data)
        if weight + size > MAX_ATTACHMENTS:
            left_out.append(name)
            log.warning("report_attachment_left_out", period=period.label, file=name, bytes=size)
            continue
        weight += size
        attachments.append(item)
    programs = [
        {
            "program": t.program,
            "program_name": t.program_name,
            "pairings": t.pairings,
            "scheduled": t.scheduled,
            "attended": t.attended,
            "confirmed": t.confirmed,
            "rate": format_percent(t.attendance_rate),
            "below_half": t.below_half,
            "open_findings": t.open_findings,
        }
        for t in report.totals
    ]
    scheduled = sum(t.scheduled for t in report.totals)
    attended = sum(t.attended for t in report.totals)
    return {
        "period": period.label,
        "period_title": period.title,
        "first_day": period.first.isoformat(),
        "last_day": period.last.isoformat(),
        "programs": programs,
        "pairings": sum(t.pairings for t in report.totals),
        "scheduled": scheduled,
        "attended": attended,
        "confirmed": sum(t.confirmed for t in report.totals),
        "rate": format_percent(attended / scheduled if scheduled else None),
        "note": report.note,  # the figures are incomplete (the attachments say so too)
        "attachments": attachments,
        "attached": [_FORMAT_NAMES[f] for f in formats if _file_name(period, f) not in left_out],
        "left_out": left_out,  # too large to mail: kept in reports.out_dir only
        "out_dir": config.reports.out_dir,
    }


_FORMAT_NAMES = {
    "html": "HTML with charts to read",
    "csv": "CSV for spreadsheets",
    "xlsx": "XLSX workbook (one sheet per program)",
}

"""Scheduled reports: when a week, month or quarter ends, HR gets attended vs scheduled.

Each schedule in ``reports.send`` reports the period that ended last (a new deployment
does not mail a backlog of older ones) to each recipient once: the outbox key names the
schedule's period and the recipient, and the row is at-most-once, so an email whose
sending was interrupted becomes ``unknown`` rather than going out twice. A report waits
while any source's data cannot be trusted (the test the rules use to suppress findings):
HR never gets figures from a half-finished sync. The files are also kept in
``reports.out_dir`` as ``report-<period>.csv`` and ``.html``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.notify.outbox import enqueue, sender_domain
from mentorpulse.notify.route import Notification, Recipient, Router
from mentorpulse.notify.timing import next_send_time, zone
from mentorpulse.reports.export import (
    TITLE,
    atomic_write,
    day_range,
    report_note,
    report_text,
)
from mentorpulse.reports.figures import pairing_figures, program_totals
from mentorpulse.reports.render import format_percent
from mentorpulse.stages.source_health import stale_sources
from mentorpulse.storage import outbox as stored_outbox

log = structlog.get_logger(__name__)

TEMPLATE = "report"


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
            periods=sorted({p.label for p, _ in due}),
            reason="source data cannot be trusted yet",
            sources=sorted(stale),
        )
        return 0
    payloads: dict[Period, dict[str, object]] = {}
    notes: dict[str, Notification] = {}  # two schedules may name the same person
    for period, people in due:
        if period not in payloads:
            payloads[period] = _payload(config, db, period, now, out_dir)
        for person in people:
            key = report_key(period, person.email)
            notes[key] = Notification(
                recipient=person.email,
                template=TEMPLATE,
                idempotency_key=key,
                payload={**payloads[period], "recipient_name": person.name},
                due=next_send_time(now, zone(person.timezone, config.timezone), router.send_window),
                at_most_once=True,
            )
    queued = enqueue(db, notes.values(), now=now, domain=sender_domain(config.notify.sender))
    log.info("reports_queued", periods=sorted(p.label for p in payloads), emails=queued)
    return queued


def _unsent(
    config: MentorpulseConfig, router: Router, db: Db, now: datetime
) -> list[tuple[Period, list[Recipient]]]:
    """Each schedule's last period with the recipients not yet queued for it."""
    today = _today(config, now)
    due: list[tuple[Period, list[Recipient]]] = []
    for schedule in config.reports.send:
        period = period_before(schedule.every, today)
        people = {report_key(period, p.email): p for p in router.report_recipients(schedule.to)}
        queued = stored_outbox.queued_keys(db, list(people))
        missing = [p for key, p in people.items() if key not in queued]
        if missing:
            due.append((period, missing))
    return due


def _payload(
    config: MentorpulseConfig,
    db: Db,
    period: Period,
    now: datetime,
    out_dir: Path | None,
) -> dict[str, object]:
    """The summary the email shows and the full report it carries, as JSON values."""
    start, end = day_range(period.first, period.last, config.timezone)
    rows = pairing_figures(db, start=start, end=end, now=now)
    note = report_note(db, config.sources, start)
    if note:
        log.warning("report_incomplete", period=period.label, note=note)
    title = f"{TITLE}, {period.title}"
    files = [
        (
            f"report-{period.label}.{fmt}",
            f"text/{fmt}",
            report_text(rows, fmt=fmt, start=start, end=end, now=now, title=title, note=note),
        )
        for fmt in ("html", "csv")
    ]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, _type, text in files:
            atomic_write(out_dir / name, text)
    totals = program_totals(rows)
    names = {p.id: p.name or p.id for p in config.programs}
    programs = [
        {
            "program": t.program,
            "program_name": names.get(t.program, t.program),
            "pairings": t.pairings,
            "scheduled": t.scheduled,
            "attended": t.attended,
            "rate": format_percent(t.attendance_rate),
            "below_half": t.below_half,
            "open_findings": t.open_findings,
        }
        for t in totals
    ]
    scheduled = sum(t.scheduled for t in totals)
    attended = sum(t.attended for t in totals)
    return {
        "period": period.label,
        "period_title": period.title,
        "first_day": period.first.isoformat(),
        "last_day": period.last.isoformat(),
        "programs": programs,
        "pairings": sum(t.pairings for t in totals),
        "scheduled": scheduled,
        "attended": attended,
        "rate": format_percent(attended / scheduled if scheduled else None),
        "note": note,  # the figures are incomplete (the attachments say so too)
        "attachments": [
            {"filename": name, "content_type": content_type, "text": text}
            for name, content_type, text in files
        ],
    }

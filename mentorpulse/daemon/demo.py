"""`mentorpulse demo`: a sample organisation, run through every stage on SQLite."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from rich.table import Table
from sqlalchemy import func, select

from mentorpulse.daemon import jobs
from mentorpulse.demo import write_demo
from mentorpulse.reports.export import write_report
from mentorpulse.storage.models import Finding

DEMO_SPAN = timedelta(days=91)  # the report covers the generated window, both sides of today


@dataclass
class DemoSummary:
    workdir: Path
    pairs: int
    outcomes: dict[str, int]
    findings: dict[str, int]
    emails_sent: int
    emails_total: int
    sync_errors: int
    reports: list[Path] = field(default_factory=list)

    def table(self) -> Table:
        table = Table(title=f"mentorpulse demo in {self.workdir}", show_header=False)
        table.add_column("what")
        table.add_column("value", overflow="fold")
        table.add_row("pairs", str(self.pairs))
        for outcome, count in sorted(self.outcomes.items()):
            table.add_row(f"sessions {outcome}", str(count))
        for state, count in sorted(self.findings.items()):
            table.add_row(f"findings {state}", str(count))
        table.add_row("emails written this run", str(self.emails_sent))
        table.add_row("emails in outbox/", str(self.emails_total))
        table.add_row("calendar items rejected", str(self.sync_errors))
        for path in self.reports:
            table.add_row("report", str(path))
        return table


def run_demo(workdir: Path, *, today: date) -> DemoSummary:
    """Write the sample deployment into ``workdir`` and run sync → … → report on it.

    Deterministic for a given day: a second run on the same day changes nothing and
    sends nothing twice.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    truth = write_demo(workdir, today=today)
    ctx = jobs.Context.open(workdir / "mentorpulse.yaml")
    try:
        synced = jobs.sync_sources(ctx)
        sessions = jobs.rebuild_sessions(ctx)
        jobs.evaluate_rules(ctx)
        sent = jobs.send_notifications(ctx)
        # The monthly HR report the notify stage just mailed, and the whole span's.
        reports = sorted(ctx.config.resolve(ctx.config.reports.out_dir).glob("report-*"))
        for fmt in ("csv", "html"):
            path = workdir / f"report.{fmt}"
            write_report(
                ctx.sessions,
                first=today - DEMO_SPAN,
                last=today + DEMO_SPAN,
                zone=ctx.config.timezone,
                now=ctx.clock(),
                fmt=fmt,
                out=path,
            )
            reports.append(path)
        with ctx.sessions() as db:
            findings: dict[str, int] = dict(
                db.execute(select(Finding.state, func.count()).group_by(Finding.state)).all()
            )
    finally:
        ctx.engine.dispose()
    transport = ctx.config.notify.transport
    assert transport.kind == "file"  # the demo writes its own config
    outbox = ctx.config.resolve(transport.path)
    return DemoSummary(
        workdir=workdir,
        pairs=len(truth.pairings),
        outcomes=sessions.outcomes,
        findings=findings,
        emails_sent=sent.sent,
        emails_total=len(list(outbox.glob("*.eml"))) if outbox.exists() else 0,
        sync_errors=sum(r.item_errors for r in synced),
        reports=reports,
    )

"""The notify stage: findings → outbox rows (exactly once each) → delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.notify.dispatch import DispatchCounts, dispatch
from mentorpulse.notify.outbox import (
    cancel_stale,
    claim_due,
    compose_digests,
    enqueue,
    sender_domain,
    told,
)
from mentorpulse.notify.render import RenderError, render
from mentorpulse.notify.route import INTERNAL_FACTS, Alert, Router
from mentorpulse.notify.transport import build_transport
from mentorpulse.stages.answers import queue_attendance_checks
from mentorpulse.stages.context import Context
from mentorpulse.stages.reports import queue_reports
from mentorpulse.storage import outbox as stored_outbox

log = structlog.get_logger(__name__)

# A finding resolved longer ago than this gets no "resolved" notice any more (a daemon
# that was down for a month does not send a month of old news).
RESOLVED_HORIZON = timedelta(days=7)


@dataclass
class NotifyStats:
    queued: int
    sent: int
    failed: int
    retried: int
    released: int = 0  # claimed but handed back unsent: the lease is too short to send


@dataclass(frozen=True)
class Preview:
    """One email a dry run would send now."""

    recipient: str
    subject: str
    template: str
    idempotency_key: str
    items: int  # notifications it carries (more than one for a digest)


def send_notifications(ctx: Context) -> NotifyStats:
    """Turn findings into outbox rows (exactly once each), then deliver what is due."""
    now = ctx.clock()
    with ctx.db.begin() as db:
        queued = queue_notifications(ctx, db, now)
    transport = build_transport(ctx.config.notify, ctx.config.base_dir, ctx.config.state_dir)
    counts: DispatchCounts = dispatch(
        ctx.db,
        transport,
        sender=ctx.config.notify.sender,
        now=now,
        lease=ctx.config.notify.lease,
        template_dir=template_dir(ctx),
        domain=_domain(ctx),
        clock=ctx.clock,
        send_budget=ctx.config.notify.send_budget,
    )
    log.info(
        "notifications_done",
        queued=queued,
        sent=counts.sent,
        failed=counts.failed,
        released=counts.released,
    )
    return NotifyStats(
        queued=queued,
        sent=counts.sent,
        failed=counts.failed,
        retried=counts.retried,
        released=counts.released,
    )


def queue_notifications(ctx: Context, db: Db, now: datetime, *, files: bool = True) -> int:
    """The routing decision and its outbox rows, in the caller's transaction, and the
    scheduled reports that are due (their files kept in ``reports.out_dir`` with ``files``)."""
    router = Router.from_config(ctx.config)
    alerts = _alerts(ctx, db, now)
    cancel_stale(db, router.live_episodes(alerts))
    notes = router.notifications(alerts, now=now)
    resolved = [a for a in alerts if a.state == "resolved"]
    if resolved:
        notes += router.resolved_notices(resolved, told(db, [a.episode for a in resolved]), now=now)
    out_dir = ctx.config.resolve_state(ctx.config.reports.out_dir) if files else None
    queued = enqueue(db, notes, now=now, domain=_domain(ctx))
    queued += queue_attendance_checks(ctx, db, now)
    return queued + queue_reports(ctx.config, router, db, now, out_dir=out_dir)


def preview(ctx: Context) -> list[Preview]:
    """What ``notify`` would send right now, without sending or keeping anything.

    The real decision runs (routing, enqueue, digests, claim) inside a transaction that is
    rolled back, so the preview cannot drift from what a real run does. Rendering happens
    after the rollback: a dry run does not hold the database's write lock while it renders.
    """
    now = ctx.clock()
    with ctx.db() as db:
        try:
            queue_notifications(ctx, db, now, files=False)
            compose_digests(db, now=now, domain=_domain(ctx))
            rows = claim_due(db, now=now, lease=ctx.config.notify.lease, limit=10_000)
            for row in rows:
                db.expunge(row)  # loaded copies outlive the rollback
        finally:
            db.rollback()
    out: list[Preview] = []
    for row in rows:
        try:
            message = render(row, sender=ctx.config.notify.sender, template_dir=template_dir(ctx))
            subject = str(message["Subject"])
        except RenderError as exc:
            subject = f"(cannot render: {exc})"
        items = row.payload.get("items")
        out.append(
            Preview(
                recipient=row.recipient,
                subject=subject,
                template=row.template,
                idempotency_key=row.idempotency_key,
                items=len(items) if isinstance(items, list) else 1,
            )
        )
    return out


def template_dir(ctx: Context) -> Path | None:
    folder = ctx.config.notify.templates
    return ctx.config.resolve(folder) if folder else None


def _domain(ctx: Context) -> str:
    return sender_domain(ctx.config.notify.sender)


def _alerts(ctx: Context, db: Db, now: datetime) -> list[Alert]:
    wants_resolved = any(r.send_resolved for r in ctx.config.notify.routes)
    rows = stored_outbox.findings_to_notify(
        db, resolved_since=now - RESOLVED_HORIZON if wants_resolved else None
    )
    alerts = []
    for finding, pairing, program, mentor_row, mentee_row in rows:
        if finding.state == "firing" and not pairing.active:
            continue
        config = ctx.config.program(program.id)
        rules = ctx.config.rules_for(config) if config else ()
        rule = next((r for r in rules if r.id == finding.rule_id), None)
        alerts.append(
            Alert(
                fingerprint=finding.fingerprint,
                rule_id=finding.rule_id,
                severity=finding.severity,
                state=finding.state,
                firing_since=finding.firing_since,
                facts={k: str(v) for k, v in finding.facts.items() if k not in INTERNAL_FACTS},
                program=program.id,
                program_name=program.name or program.id,
                mentor_email=mentor_row.email,
                mentor_name=mentor_row.name,
                mentee_email=mentee_row.email,
                mentee_name=mentee_row.name,
                mentor_timezone=mentor_row.timezone,
                mentee_timezone=mentee_row.timezone,
                silenced=finding.silence_id is not None,  # set by the evaluate stage
                pairing_key=pairing.key,
                rule_kind=rule.kind if rule else "",
                until=finding.until,
                rule_labels=dict(rule.labels) if rule else {},
            )
        )
    return alerts


__all__ = ["NotifyStats", "Preview", "preview", "send_notifications"]

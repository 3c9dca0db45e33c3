"""The stages of the flow, each one idempotent and runnable alone.

sync (connectors → events) → sessions (events → sessions with verdicts) → evaluate
(sessions → findings) → notify (findings → outbox → transport) → report. The CLI runs one
stage; the daemon runs them on a timer. What has been done lives in the database, so
running a stage twice changes nothing the second time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import aliased, sessionmaker

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import RosterPairing, load_roster
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.connectors.base import AuthError, ConnectorError, EventRecord, TransientError
from mentorpulse.connectors.registry import build_connector
from mentorpulse.notify.dispatch import DispatchCounts, dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import Alert, notifications_for
from mentorpulse.notify.transport import build_transport
from mentorpulse.rules.engine import (
    FIRING,
    PENDING,
    RESOLVED,
    FindingState,
    advance,
    evaluate,
    fingerprint,
)
from mentorpulse.rules.kinds import SessionFact, Timeline
from mentorpulse.storage import repository
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.migrate import upgrade
from mentorpulse.storage.models import (
    Evidence,
    Finding,
    Pairing,
    Person,
    Program,
    Source,
)
from mentorpulse.storage.models import Session as SessionRow
from mentorpulse.tracking.attendance import Outcome, Verdict, judge, mark_rescheduled, session_key
from mentorpulse.tracking.match import Matcher, PairingRef

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What every stage needs: the validated config, the roster, the database, a clock."""

    config: MentorpulseConfig
    roster: list[RosterPairing]
    engine: Engine
    sessions: sessionmaker[DbSession]
    clock: Clock = utcnow

    @classmethod
    def open(cls, config_path: Path, *, clock: Clock = utcnow, migrate: bool = True) -> Context:
        config = load_config(config_path)
        roster = load_roster(config.resolve(config.roster.path), config)
        engine = make_engine(config.database, config.base_dir)
        if migrate:
            upgrade(engine)
        context = cls(config, roster, engine, session_factory(engine), clock)
        with context.sessions.begin() as db:
            repository.apply_roster(db, config, roster)
        return context

    def matcher(self) -> Matcher:
        refs = []
        for entry in self.roster:
            program = self.config.program(entry.program)
            assert program is not None  # the roster loader checked program ids
            refs.append(PairingRef.from_roster(entry, program.match))
        return Matcher(refs)


# ---------------------------------------------------------------- sync


@dataclass
class SourceResult:
    source_id: str
    ok: bool
    pages: int = 0
    stored: int = 0
    unchanged: int = 0
    dropped: int = 0
    deleted: int = 0
    item_errors: int = 0
    error: str | None = None


def sync_sources(ctx: Context, only: Sequence[str] | None = None) -> list[SourceResult]:
    """Pull every configured source; each page is stored with its cursor in one commit."""
    results = []
    matcher = ctx.matcher()
    fingerprint_now = repository.roster_fingerprint(ctx.roster)
    for source_config in ctx.config.sources:
        if only and source_config.id not in only:
            continue
        results.append(
            _sync_one(ctx, source_config.id, source_config.kind, matcher, fingerprint_now)
        )
    return results


def _sync_one(
    ctx: Context, source_id: str, kind: str, matcher: Matcher, roster_fp: str
) -> SourceResult:
    now = ctx.clock()
    result = SourceResult(source_id=source_id, ok=True)
    source_config = next(s for s in ctx.config.sources if s.id == source_id)
    with ctx.sessions.begin() as db:
        source = repository.ensure_source(db, source_id, kind)
        if source.roster_fingerprint != roster_fp:
            # Events were filtered against another roster: read everything again.
            source.cursor = None
            source.roster_fingerprint = roster_fp
        cursor = source.cursor
        was_healthy = source.healthy
        source.last_attempt_at = now
    connector = build_connector(
        source_config, base_dir=ctx.config.base_dir, now=now, default_zone=ctx.config.timezone
    )
    ids = None
    try:
        for page in connector.sync(cursor):
            with ctx.sessions.begin() as db:
                if ids is None:
                    ids = repository.pairing_ids(db)
                source = db.get_one(Source, source_id)
                stats = repository.store_page(
                    db,
                    source,
                    page,
                    match=matcher.match,
                    pairing_ids=ids,
                    store_titles=ctx.config.privacy.store_titles,
                )
            result.pages += 1
            result.stored += stats.stored
            result.unchanged += stats.unchanged
            result.dropped += stats.dropped
            result.deleted += stats.deleted
            result.item_errors += len(page.errors)
    except ConnectorError as error:
        result.ok = False
        result.error = error.message
        with ctx.sessions.begin() as db:
            source = db.get_one(Source, source_id)
            source.healthy = False
            source.last_error = error.message
        if was_healthy:
            event = "source_auth_failed" if isinstance(error, AuthError) else "source_failed"
            log.error(
                event,
                source=source_id,
                error=error.message,
                retriable=isinstance(error, TransientError),
            )
        return result
    with ctx.sessions.begin() as db:
        source = db.get_one(Source, source_id)
        source.healthy = True
        source.last_error = None
        source.last_success_at = now
    if not was_healthy:
        log.info("source_recovered", source=source_id)
    log.info(
        "source_synced",
        source=source_id,
        pages=result.pages,
        stored=result.stored,
        deleted=result.deleted,
        dropped=result.dropped,
        item_errors=result.item_errors,
    )
    return result


# ---------------------------------------------------------------- sessions


@dataclass
class SessionStats:
    pairings: int = 0
    changed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def rebuild_sessions(ctx: Context) -> SessionStats:
    """Fold event copies into sessions and judge them, for the pairings that need it.

    A pairing needs it when its events changed, or when one of its sessions was upcoming
    and has ended since (time alone changes its verdict).
    """
    now = ctx.clock()
    stats = SessionStats()
    with ctx.sessions.begin() as db:
        due = set(db.scalars(select(Pairing.id).where(Pairing.events_changed)))
        due |= set(
            db.scalars(
                select(SessionRow.pairing_id).where(
                    SessionRow.outcome == Outcome.UPCOMING.value, SessionRow.end <= now
                )
            )
        )
        pairings = {p.id: p for p in db.scalars(select(Pairing).where(Pairing.id.in_(due)))}
        emails = dict(db.execute(select(Person.id, Person.email)).all())
        copies = repository.events_of_pairings(db, sorted(due))
        for pairing_id, records in copies.items():
            pairing = pairings[pairing_id]
            program = ctx.config.program(pairing.program_id)
            # A replacement booked within half a cadence interval is a rescheduling;
            # the next regular meeting is not.
            every = program.cadence.every if program else timedelta(days=14)
            changed = _rebuild_pairing(
                db,
                pairing,
                records,
                mentor=emails[pairing.mentor_id],
                mentee=emails[pairing.mentee_id],
                reschedule_window=every / 2,
                now=now,
            )
            pairing.events_changed = False
            if changed:
                pairing.sessions_changed = True
                stats.changed += changed
            stats.pairings += 1
    with ctx.sessions() as db:
        for outcome, count in db.execute(
            select(SessionRow.outcome, func.count()).group_by(SessionRow.outcome)
        ):
            stats.outcomes[outcome] = count
    log.info("sessions_rebuilt", pairings=stats.pairings, changed=stats.changed)
    return stats


def _rebuild_pairing(
    db: DbSession,
    pairing: Pairing,
    records: list[EventRecord],
    *,
    mentor: str,
    mentee: str,
    reschedule_window: timedelta,
    now: datetime,
) -> int:
    groups: dict[str, list[EventRecord]] = defaultdict(list)
    for record in records:
        groups[session_key(record)].append(record)
    verdicts: dict[str, tuple[datetime, Verdict, EventRecord]] = {}
    for key, copies in groups.items():
        verdict = judge(copies, mentor=mentor, mentee=mentee, now=now)
        newest = max(copies, key=_newest)
        verdicts[key] = (newest.start, verdict, newest)
    for key, replacement in mark_rescheduled(
        [(k, start, v) for k, (start, v, _r) in verdicts.items()], window=reschedule_window
    ).items():
        start, _old, newest = verdicts[key]
        verdicts[key] = (start, replacement, newest)

    existing = {
        s.key: s for s in db.scalars(select(SessionRow).where(SessionRow.pairing_id == pairing.id))
    }
    changed = 0
    for key, (_start, verdict, newest) in verdicts.items():
        row = existing.pop(key, None)
        values = {
            "start": newest.start,
            "end": newest.end,
            "zone": newest.zone,
            "outcome": verdict.outcome.value,
            "confidence": verdict.confidence,
            "cancelled_by": verdict.cancelled_by,
            "cancelled_hours_before": verdict.cancelled_hours_before,
        }
        if row is not None and all(getattr(row, k) == v for k, v in values.items()):
            continue
        if row is None:
            row = SessionRow(pairing_id=pairing.id, key=key, updated_at=now, **values)
            db.add(row)
            db.flush()
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now
            for old in db.scalars(select(Evidence).where(Evidence.session_id == row.id)):
                db.delete(old)
        for rank, proof in enumerate(verdict.evidence):
            db.add(
                Evidence(
                    session_id=row.id,
                    rank=rank,
                    kind=proof.kind,
                    party=proof.party,
                    detail=proof.detail,
                )
            )
        changed += 1
    for row in existing.values():
        # Its event copies are gone. A future meeting was called off; a past one fell
        # out of the sync window or was tidied away: its history is kept as judged.
        if row.start >= now:
            db.delete(row)
            changed += 1
    return changed


def _newest(record: EventRecord) -> tuple[int, datetime]:
    return (record.sequence, record.updated or datetime.min.replace(tzinfo=UTC))


# ---------------------------------------------------------------- evaluate


@dataclass
class EvaluationStats:
    pairings: int = 0
    firing: int = 0
    pending: int = 0
    resolved: int = 0
    changed: int = 0

    def count(self, state: str) -> None:
        if state == FIRING:
            self.firing += 1
        elif state == PENDING:
            self.pending += 1
        else:
            self.resolved += 1


def evaluate_rules(ctx: Context) -> EvaluationStats:
    """Run every program's rules over each pairing's session timeline.

    A finding row is written only when its state changes, so evaluating twice writes
    nothing the second time. Open findings that no rule produces any more (the pairing
    ended or left the roster, the rule was removed) are resolved with the reason.
    """
    now = ctx.clock()
    stats = EvaluationStats()
    with ctx.sessions.begin() as db:
        mentor = aliased(Person)
        mentee = aliased(Person)
        rows = db.execute(
            select(Pairing, mentor, mentee)
            .join(mentor, mentor.id == Pairing.mentor_id)
            .join(mentee, mentee.id == Pairing.mentee_id)
        )
        findings: dict[int | None, dict[str, Finding]] = defaultdict(dict)
        for finding in db.scalars(select(Finding)):
            findings[finding.pairing_id][finding.fingerprint] = finding
        sessions: dict[int, list[SessionFact]] = defaultdict(list)
        for s in db.scalars(select(SessionRow).order_by(SessionRow.start)):
            sessions[s.pairing_id].append(
                SessionFact(key=s.key, start=s.start, end=s.end, outcome=Outcome(s.outcome))
            )
        for pairing, mentor_row, mentee_row in rows:
            program = ctx.config.program(pairing.program_id)
            mine = findings[pairing.id]
            seen: set[str] = set()
            deadlines: list[datetime] = []
            if pairing.active and program is not None:
                stats.pairings += 1
                timeline = Timeline(
                    pairing_key=pairing.key,
                    program=pairing.program_id,
                    mentor=mentor_row.email,
                    mentee=mentee_row.email,
                    started_on=pairing.started_on,
                    ended_on=pairing.ended_on,
                    zone=mentor_row.timezone or ctx.config.timezone,
                    sessions=tuple(sessions.get(pairing.id, ())),
                )
                for condition in evaluate(timeline, program, now):
                    rule = next(r for r in program.rules if r.id == condition.rule_id)
                    key = fingerprint(condition.rule_id, pairing.key)
                    seen.add(key)
                    if condition.next_deadline is not None:
                        deadlines.append(condition.next_deadline)
                    row = mine.get(key)
                    previous = _state(row) if row is not None else None
                    state = advance(
                        previous, condition, pairing_key=pairing.key, for_=rule.for_, now=now
                    )
                    if state is None:
                        if row is not None:  # pending, cleared before it fired: nobody knew
                            db.delete(row)
                            del mine[key]
                            stats.changed += 1
                        continue
                    if state != previous:
                        if row is None:
                            row = mine[key] = Finding(fingerprint=key, pairing_id=pairing.id)
                            db.add(row)
                        _write_state(row, state, now)
                        stats.changed += 1
                    stats.count(state.state)
            reason = "rule no longer applies to this pairing"
            if not pairing.active:
                reason = "pairing left the roster"
            for key, row in mine.items():
                if key not in seen and row.state in (PENDING, FIRING):
                    row.state, row.until, row.reason = RESOLVED, now, reason
                    row.last_evaluated_at = now
                    stats.changed += 1
            pairing.sessions_changed = False
            pairing.next_deadline = min(deadlines, default=None)
    log.info(
        "rules_evaluated",
        pairings=stats.pairings,
        firing=stats.firing,
        pending=stats.pending,
        changed=stats.changed,
    )
    return stats


def _state(row: Finding) -> FindingState:
    return FindingState(
        fingerprint=row.fingerprint,
        rule_id=row.rule_id,
        pairing_key=row.facts.get("pairing", ""),
        severity=row.severity,
        state=row.state,
        since=row.since,
        firing_since=row.firing_since,
        until=row.until,
        facts={k: v for k, v in row.facts.items() if k != "pairing"},
    )


def _write_state(row: Finding, state: FindingState, now: datetime) -> None:
    row.rule_id = state.rule_id
    row.severity = state.severity
    row.state = state.state
    row.since = state.since
    row.firing_since = state.firing_since
    row.until = state.until
    row.facts = {**state.facts, "pairing": state.pairing_key}
    row.reason = None
    row.last_evaluated_at = now


# ---------------------------------------------------------------- notify


@dataclass
class NotifyStats:
    queued: int
    sent: int
    failed: int
    retried: int


def send_notifications(ctx: Context) -> NotifyStats:
    """Turn firing findings into outbox rows (exactly once each), then deliver them."""
    now = ctx.clock()
    with ctx.sessions.begin() as db:
        queued = enqueue(
            db,
            notifications_for(_alerts(db)),
            now=now,
            domain=ctx.config.notify.sender.rpartition("@")[2],
        )
    transport = build_transport(ctx.config.notify, ctx.config.base_dir)
    counts: DispatchCounts = dispatch(
        ctx.sessions, transport, sender=ctx.config.notify.sender, now=now
    )
    log.info("notifications_done", queued=queued, sent=counts.sent, failed=counts.failed)
    return NotifyStats(
        queued=queued, sent=counts.sent, failed=counts.failed, retried=counts.retried
    )


def _alerts(db: DbSession) -> list[Alert]:
    mentor = aliased(Person)
    mentee = aliased(Person)
    rows = db.execute(
        select(Finding, Program, mentor, mentee)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(Program, Program.id == Pairing.program_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(Finding.state == "firing", Pairing.active)
    )
    return [
        Alert(
            fingerprint=finding.fingerprint,
            rule_id=finding.rule_id,
            severity=finding.severity,
            state=finding.state,
            firing_since=finding.firing_since,
            facts={k: str(v) for k, v in finding.facts.items() if k != "pairing"},
            program=program.id,
            program_name=program.name or program.id,
            mentor_email=mentor_row.email,
            mentor_name=mentor_row.name,
            mentee_email=mentee_row.email,
            mentee_name=mentee_row.name,
            mentor_timezone=mentor_row.timezone,
        )
        for finding, program, mentor_row, mentee_row in rows
    ]


def mark_all_changed(ctx: Context) -> None:
    """Force the next stages to redo every pairing (after a config change, say)."""
    with ctx.sessions.begin() as db:
        db.execute(update(Pairing).values(events_changed=True, sessions_changed=True))

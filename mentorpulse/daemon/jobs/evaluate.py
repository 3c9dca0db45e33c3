"""The evaluate stage: each pairing's session timeline → findings, by the program's rules."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.orm import aliased

from mentorpulse.daemon.jobs.context import Context
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
from mentorpulse.storage.models import (
    Finding,
    Pairing,
    Person,
)
from mentorpulse.storage.models import Session as SessionRow
from mentorpulse.tracking.attendance import Outcome

log = structlog.get_logger(__name__)


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

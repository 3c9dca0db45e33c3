"""The evaluate stage: each pairing's session timeline → findings, by the program's rules.

Incremental: only pairings whose sessions changed, whose next deadline has passed, or
whose data went stale or recovered are judged; a changed rules configuration judges all
of them once. ``full=True`` judges every pairing and must give the same result.

Staleness: the sources that *cover* a pairing are those that hold one of its events,
plus those whose configured ``owner`` is its mentor or mentee; a pairing with none of
those (it never met, and no source names its people) is covered by every source, so a
broken calendar can never make a pair look lapsed. A source is stale when it is
unhealthy, never synced, or last succeeded longer than ``evaluation.stale_after`` ago.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig, Program
from mentorpulse.model import Outcome
from mentorpulse.rules.engine import (
    ERROR,
    FIRING,
    OPEN,
    PENDING,
    RESOLVED,
    SUPPRESSED,
    FindingState,
    fingerprint,
    judge,
    pair_matches,
)
from mentorpulse.rules.kinds import SessionFact, Timeline
from mentorpulse.stages.context import Context
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.models import (
    Event,
    EventPairing,
    Evidence,
    Finding,
    JobRun,
    MentoringSession,
    Pairing,
    Person,
    Silence,
    Source,
)

log = structlog.get_logger(__name__)

SOURCE_STALE = "source_stale"  # operator finding: a source feeding pairings is stale
RULE_ERROR = "rule_error"  # operator finding: a rule raised on some pairings
_CONFIG_RUN = "evaluate-config:"  # job_runs name prefix remembering the judged config


@dataclass
class EvaluationStats:
    pairings: int = 0
    firing: int = 0
    pending: int = 0
    resolved: int = 0
    suppressed: int = 0
    errors: int = 0
    changed: int = 0

    def count(self, state: str) -> None:
        if state == FIRING:
            self.firing += 1
        elif state == PENDING:
            self.pending += 1
        elif state == SUPPRESSED:
            self.suppressed += 1
        elif state == ERROR:
            self.errors += 1
        else:
            self.resolved += 1


def evaluate_rules(ctx: Context, *, full: bool = False) -> EvaluationStats:
    """Judge the pairings that are due (all of them with ``full``) and store findings.

    A finding row is written only when its state changes, so evaluating twice writes
    nothing the second time. Open findings that no rule produces any more (the pairing
    ended, was paused or left the roster, the rule was removed) are resolved with the
    reason. Silences are applied to open findings on every run.
    """
    now = ctx.clock()
    stats = EvaluationStats()
    config = ctx.config
    with ctx.db.begin() as db:
        full = _config_changed(db, config, ctx.roster, now) or full
        stale = stale_sources(db, config, now)
        query = _pairings_with_people()
        if not full:
            query = query.where(
                or_(
                    Pairing.sessions_changed,
                    Pairing.next_deadline <= now,
                    Pairing.id.in_(_staleness_changed(stale)),
                )
            )
        rows = list(db.execute(query))
        ids = [p.id for p, _m, _e in rows]
        people = {p.id: (m.email, e.email) for p, m, e in rows}
        coverage = _coverage(db, config, people) if stale else {}
        findings: dict[int, dict[str, Finding]] = defaultdict(dict)
        sessions: dict[int, list[SessionFact]] = defaultdict(list)
        for chunk in chunks(ids):
            for finding in db.scalars(select(Finding).where(Finding.pairing_id.in_(chunk))):
                findings[finding.pairing_id or 0][finding.fingerprint] = finding
            for pairing_id, fact in _session_facts(db, chunk):
                sessions[pairing_id].append(fact)
        roster = {entry.key: entry for entry in ctx.roster}
        suppressed_by: dict[str, int] = defaultdict(int)
        for pairing, mentor_row, mentee_row in rows:
            entry = roster.get(pairing.key)
            _judge_one(
                db,
                config,
                _Row(pairing, mentor_row, mentee_row, entry),
                sessions.get(pairing.id, []),
                findings[pairing.id],
                # No known source of its own: every source covers it.
                stale={s: stale[s] for s in coverage.get(pairing.id) or stale if s in stale},
                suppressed_by=suppressed_by,
                stats=stats,
                now=now,
            )
        stats.changed += _operator_findings(db, config, stale, suppressed_by, now)
        stats.changed += apply_silences(db, now)
    log.info(
        "rules_evaluated",
        full=full,
        pairings=stats.pairings,
        firing=stats.firing,
        pending=stats.pending,
        suppressed=stats.suppressed,
        errors=stats.errors,
        changed=stats.changed,
    )
    return stats


@dataclass(frozen=True, slots=True)
class _Row:
    pairing: Pairing
    mentor: Person
    mentee: Person
    entry: RosterPairing | None


def _judge_one(
    db: Db,
    config: MentorpulseConfig,
    row: _Row,
    sessions: list[SessionFact],
    mine: dict[str, Finding],
    *,
    stale: dict[str, str],
    suppressed_by: dict[str, int],
    stats: EvaluationStats,
    now: datetime,
) -> None:
    """Judge one pairing and write the findings whose state changed."""
    pairing = row.pairing
    program = config.program(pairing.program_id)
    seen: set[str] = set()
    pairing.next_deadline = None
    timeline = timeline_for(row, sessions, config)
    if timeline is not None and program is not None:
        stats.pairings += 1
        reason = "; ".join(f"source {s}: {why}" for s, why in sorted(stale.items())) or None
        previous = {f.rule_id: _state(f) for f in mine.values()}
        verdict = judge(timeline, program, config.rules_for(program), now, previous, stale=reason)
        pairing.next_deadline = verdict.next_deadline
        for rule_id, state in verdict.states.items():
            key = fingerprint(rule_id, pairing.key)
            seen.add(key)
            finding = mine.get(key)
            if state is None:
                if finding is not None:  # pending, cleared before it fired: nobody knew
                    db.delete(finding)
                    del mine[key]
                    stats.changed += 1
                continue
            if finding is None or state != previous.get(rule_id):
                if finding is None:
                    finding = mine[key] = Finding(fingerprint=key, pairing_id=pairing.id)
                    db.add(finding)
                _write_state(finding, state, now)
                stats.changed += 1
            if state.state == SUPPRESSED:
                for source in stale:
                    suppressed_by[source] += 1
            stats.count(state.state)
    for key, finding in mine.items():
        if key not in seen and finding.state in OPEN:  # rare: worked out only here
            why = _why_not_judged(pairing, program, _override(program, row.entry)[1])
            finding.state, finding.until, finding.reason = RESOLVED, now, why
            finding.last_evaluated_at = now
            stats.changed += 1
    pairing.sessions_changed = False


def timeline_for(
    row: _Row, sessions: Sequence[SessionFact], config: MentorpulseConfig
) -> Timeline | None:
    """The pairing as the rules see it; None when it is not judged (inactive, paused)."""
    program = config.program(row.pairing.program_id)
    cadence, paused = _override(program, row.entry)
    if not row.pairing.active or program is None or paused:
        return None
    return Timeline(
        pairing_key=row.pairing.key,
        program=row.pairing.program_id,
        mentor=row.mentor.email,
        mentee=row.mentee.email,
        started_on=row.pairing.started_on,
        ended_on=row.pairing.ended_on,
        zone=row.mentor.timezone or config.timezone,
        sessions=tuple(sorted(sessions, key=lambda s: s.start)),
        cadence=cadence,
    )


def load_timelines(
    db: Db,
    config: MentorpulseConfig,
    roster: Sequence[RosterPairing],
    pairing_ids: Sequence[int] | None = None,
) -> list[tuple[Pairing, Timeline | None]]:
    """Pairings (all, or the ids given) with their timelines, for backtest and explain."""
    query = _pairings_with_people().order_by(Pairing.key)
    if pairing_ids is not None:
        query = query.where(Pairing.id.in_(pairing_ids))
    rows = list(db.execute(query))
    sessions: dict[int, list[SessionFact]] = defaultdict(list)
    for chunk in chunks([p.id for p, _m, _e in rows]):
        for pairing_id, fact in _session_facts(db, chunk):
            sessions[pairing_id].append(fact)
    entries = {e.key: e for e in roster}
    return [
        (p, timeline_for(_Row(p, m, e, entries.get(p.key)), sessions[p.id], config))
        for p, m, e in rows
    ]


def _session_facts(db: Db, ids: Sequence[int]) -> Iterator[tuple[int, SessionFact]]:
    """Sessions of the pairings with what the rules need, including who missed a session
    (the party of the evidence that decided a ``missed`` verdict, looked up for those
    few sessions only)."""
    rows = db.execute(
        select(
            MentoringSession.id,
            MentoringSession.pairing_id,
            MentoringSession.key,
            MentoringSession.start,
            MentoringSession.end,
            MentoringSession.outcome,
            MentoringSession.cancelled_by,
            MentoringSession.cancelled_hours_before,
        ).where(MentoringSession.pairing_id.in_(ids))
    ).all()
    missed = [row[0] for row in rows if row[5] == Outcome.MISSED.value]
    missed_by: dict[int, str | None] = {}
    for chunk in chunks(missed):
        deciders = db.execute(
            select(Evidence.session_id, Evidence.party).where(
                Evidence.session_id.in_(chunk), Evidence.rank == 0
            )
        )
        for session_id, party in deciders:
            missed_by[session_id] = party
    outcomes = {o.value: o for o in Outcome}
    for session_id, pairing_id, key, start, end, outcome_text, by, hours in rows:
        yield (
            pairing_id,
            SessionFact(
                key=key,
                start=start,
                end=end,
                outcome=outcomes[outcome_text],
                cancelled_by=by,
                cancelled_hours_before=hours,
                missed_by=missed_by.get(session_id),
            ),
        )


def _override(
    program: Program | None, entry: RosterPairing | None
) -> tuple[timedelta | None, bool]:
    """This pairing's own cadence and pause: the roster row, else a matching YAML override."""
    cadence = entry.cadence if entry is not None else None
    paused = entry.paused if entry is not None else False
    if program is not None and entry is not None:
        for override in program.overrides:
            if pair_matches(entry.mentor_email, entry.mentee_email, override.pair):
                cadence = cadence or override.every
                paused = paused or override.paused
    return cadence, paused


def _why_not_judged(pairing: Pairing, program: Program | None, paused: bool) -> str:
    if not pairing.active:
        return "pairing left the roster"
    if program is None:
        return "program no longer configured"
    if paused:
        return "pairing paused"
    return "rule no longer applies to this pairing"


def _config_changed(
    db: Db, config: MentorpulseConfig, roster: Sequence[RosterPairing], now: datetime
) -> bool:
    """Whether the rules (or per-pairing overrides) differ from the last evaluation's."""
    described = {
        "programs": [p.model_dump(mode="json", exclude={"admins"}) for p in config.programs],
        "rules": [r.model_dump(mode="json") for r in config.rules],
        "stale_after": config.evaluation.stale_after.total_seconds(),
        # Roster edits that change how a pairing is judged without touching its sessions
        # (dates and membership already flag the pairing itself).
        "roster": sorted((e.key, str(e.cadence), e.paused, e.mentor_timezone) for e in roster),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    name = _CONFIG_RUN + digest
    runs = list(db.scalars(select(JobRun).where(JobRun.name.startswith(_CONFIG_RUN))))
    if [r.name for r in runs] == [name]:
        return False
    for run in runs:
        db.delete(run)
    db.add(JobRun(name=name, last_run_at=now))
    db.flush()
    return True


def stale_sources(db: Db, config: MentorpulseConfig, now: datetime) -> dict[str, str]:
    """Configured sources whose data cannot be trusted now, with the reason."""
    rows = {s.id: s for s in db.scalars(select(Source))}
    limit = now - config.evaluation.stale_after
    stale: dict[str, str] = {}
    for source in config.sources:
        row = rows.get(source.id)
        if row is None or row.last_success_at is None:
            stale[source.id] = "never synced successfully"
        elif row.held_deletions is not None:
            stale[source.id] = f"deletions held for confirmation ({row.last_error})"
        elif row.resync_started_at is not None:
            stale[source.id] = (
                f"a full resync started at {row.resync_started_at:%Y-%m-%d %H:%M} UTC "
                "has not completed"
            )
        elif not row.healthy:
            stale[source.id] = (
                f"failing since its last success at {row.last_success_at:%Y-%m-%d %H:%M} UTC"
                + (f" ({row.last_error})" if row.last_error else "")
            )
        elif row.last_success_at < limit:
            stale[source.id] = f"no successful sync since {row.last_success_at:%Y-%m-%d %H:%M} UTC"
    return stale


def _coverage(
    db: Db, config: MentorpulseConfig, people: Mapping[int, tuple[str, str]]
) -> dict[int, set[str]]:
    """The sources covering each pairing (``people``: id → mentor and mentee emails; see
    the module docstring); absent: all of them."""
    covered: dict[int, set[str]] = defaultdict(set)
    for chunk in chunks(list(people)):
        rows = db.execute(
            select(EventPairing.pairing_id, Event.source_id)
            .join(Event, Event.id == EventPairing.event_id)
            .where(EventPairing.pairing_id.in_(chunk))
            .distinct()
        )
        for pairing_id, source_id in rows:
            covered[pairing_id].add(source_id)
    owners: dict[str, set[str]] = defaultdict(set)
    for source in config.sources:
        for owner in source.owners():
            owners[owner].add(source.id)
    for pairing_id, (mentor_email, mentee_email) in people.items():
        own = owners.get(mentor_email, set()) | owners.get(mentee_email, set())
        if own:
            covered[pairing_id] |= own
    return covered


def _pairings_with_people() -> Select[Pairing, Person, Person]:
    """Pairings with their mentor and mentee rows."""
    mentor = aliased(Person)
    mentee = aliased(Person)
    return (
        select(Pairing, mentor, mentee)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
    )


def _staleness_changed(stale: dict[str, str]) -> Select[Any]:
    """Pairings to judge because their data went stale or recovered since last time (a
    subquery: there may be more of them than one statement takes parameters)."""
    states = [PENDING, FIRING, SUPPRESSED] if stale else [SUPPRESSED]
    return select(Finding.pairing_id).where(Finding.state.in_(states))


def _operator_findings(
    db: Db,
    config: MentorpulseConfig,
    stale: dict[str, str],
    suppressed_by: dict[str, int],
    now: datetime,
) -> int:
    """One finding per stale source, one per failing rule; resolved when they recover."""
    wanted: dict[str, tuple[str, str, dict[str, str]]] = {}
    for source_id, why in stale.items():
        key = fingerprint(SOURCE_STALE, f"source:{source_id}")
        wanted[key] = (SOURCE_STALE, "critical", {"source": source_id, "problem": why})
    failing = db.execute(
        select(Finding.rule_id, Pairing.program_id, Finding.reason)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .where(Finding.state == ERROR)
    )
    for rule_id, program_id, reason in failing:
        key = fingerprint(RULE_ERROR, f"rule:{program_id}:{rule_id}")
        facts = {"program": program_id, "rule": rule_id, "error": reason or ""}
        wanted.setdefault(key, (RULE_ERROR, "critical", facts))
    changed = 0
    existing = {
        f.fingerprint: f
        for f in db.scalars(
            select(Finding).where(
                Finding.pairing_id.is_(None), Finding.rule_id.in_([SOURCE_STALE, RULE_ERROR])
            )
        )
    }
    for key, (rule_id, severity, facts) in wanted.items():
        row = existing.get(key)
        if row is not None and row.state == FIRING:
            if row.facts != facts:
                row.facts = facts
                changed += 1
            continue
        if row is None:
            row = Finding(fingerprint=key, pairing_id=None)
            db.add(row)
        row.rule_id, row.severity, row.state = rule_id, severity, FIRING
        row.since = row.firing_since = now
        row.until, row.reason, row.facts, row.last_evaluated_at = None, None, facts, now
        log.error("operator_finding", finding=rule_id, **facts)
        changed += 1
    for key, row in existing.items():
        if key not in wanted and row.state == FIRING:
            row.state, row.until, row.last_evaluated_at = RESOLVED, now, now
            log.info("operator_finding_resolved", finding=row.rule_id, **row.facts)
            changed += 1
    if suppressed_by:
        log.warning("findings_suppressed", by_source=dict(suppressed_by))
    return changed


def active_silences(db: Db, now: datetime) -> list[Silence]:
    return list(
        db.scalars(
            select(Silence)
            .where(Silence.starts_at <= now, Silence.ends_at > now)
            .order_by(Silence.id)
        )
    )


def silence_matches(silence: Silence, program_id: str, mentor: str, mentee: str) -> bool:
    if silence.program_id is not None and silence.program_id != program_id:
        return False
    if silence.mentor_email is not None and silence.mentor_email != mentor:
        return False
    return silence.mentee_email is None or silence.mentee_email == mentee


def apply_silences(db: Db, now: datetime) -> int:
    """Set ``silence_id`` on every open finding an active silence covers; clear it on
    findings whose silence ended. Returns the number of findings changed."""
    silences = active_silences(db, now)
    mentor = aliased(Person)
    mentee = aliased(Person)
    rows = db.execute(
        select(Finding, Pairing.program_id, mentor.email, mentee.email)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(
            or_(Finding.state.in_(sorted(OPEN)), Finding.silence_id.is_not(None))
            if silences
            # No silence is active: only findings still marked silenced can change.
            else Finding.silence_id.is_not(None)
        )
    )
    changed = 0
    for finding, program_id, mentor_email, mentee_email in rows:
        wanted = None
        if finding.state in OPEN:
            wanted = next(
                (
                    s.id
                    for s in silences
                    if silence_matches(s, program_id, mentor_email, mentee_email)
                ),
                None,
            )
        if finding.silence_id != wanted:
            finding.silence_id = wanted
            changed += 1
    return changed


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
        reason=row.reason,
    )


def _write_state(row: Finding, state: FindingState, now: datetime) -> None:
    row.rule_id = state.rule_id
    row.severity = state.severity
    row.state = state.state
    row.since = state.since
    row.firing_since = state.firing_since
    row.until = state.until
    row.facts = {**state.facts, "pairing": state.pairing_key}
    row.reason = state.reason
    row.last_evaluated_at = now

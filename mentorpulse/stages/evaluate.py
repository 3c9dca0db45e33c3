"""The evaluate stage: each pairing's session timeline → findings, by the program's rules.

Incremental: only pairings whose sessions changed, whose next deadline has passed, or
whose data went stale or recovered are judged; a changed rules configuration judges all
of them once. ``full=True`` judges every pairing and must give the same result.

Which sources cover a pairing and when they are stale: :mod:`.source_health`; which
findings a silence covers: :mod:`.silences`; the timeline itself: :mod:`.timelines`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig, Program, RuleBase
from mentorpulse.model import (
    ERROR,
    FIRING,
    OPEN,
    PENDING,
    SUPPRESSED,
    FindingState,
)
from mentorpulse.rules.engine import fingerprint, judge, sessions_read_since
from mentorpulse.stages.context import Context
from mentorpulse.stages.sessions import Bucket, in_bucket
from mentorpulse.stages.silences import apply_silences
from mentorpulse.stages.source_health import coverage, operator_findings, stale_sources
from mentorpulse.stages.timelines import (
    Judged,
    override,
    sessions_read,
    timelines,
    why_not_judged,
)
from mentorpulse.storage import findings as stored
from mentorpulse.storage import timelines as stored_timelines
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.timelines import PairingRow

log = structlog.get_logger(__name__)

_CONFIG_RUN = "evaluate-config:"  # job_runs name prefix remembering the judged config
_BUCKET_CONFIG_RUN = "evaluate-bucket-config:"  # the same, per bucket of the worker pool


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


# Pairings judged per batch: the batch's sessions are the evaluation's largest working
# set, so memory stays flat as the organisation and its history grow (peak RSS 88 -> 91
# MB from 200 to 2,000 pairings; 1,000 a batch gave 88 -> 109). The sessions stage uses
# the same size.
_BATCH = 250


def evaluate_rules(
    ctx: Context, *, full: bool = False, bucket: Bucket | None = None
) -> EvaluationStats:
    """Judge the pairings that are due (all of them with ``full``) and store findings.

    A finding row is written only when its state changes, so evaluating twice writes
    nothing the second time. Open findings that no rule produces any more (the pairing
    ended, was paused or left the roster, the rule was removed) are resolved with the
    reason. Silences are applied to open findings on every run.

    ``bucket`` (the worker pool) judges only its share of the pairings; the findings
    about the whole organisation (stale sources, silences) are bucket 0's.
    """
    now = ctx.clock()
    with ctx.db.begin() as db:
        full = _config_changed(db, ctx.config, ctx.roster, now, bucket) or full
        stale = stale_sources(db, ctx.config, now)
        # Data that went stale or recovered re-judges the pairings it suppressed or let fire.
        states = [PENDING, FIRING, SUPPRESSED] if stale else [SUPPRESSED]
        due = stored_timelines.pairing_ids_due(db, now, everything=full, judged_states=states)
        due = in_bucket(due, bucket)
        run = _Run(db, ctx.config, now, sessions_read_since(ctx.config, now))
        for batch in chunks(due, _BATCH):
            _judge_batch(run, batch, ctx.roster, stale)
        if bucket is None or bucket.index == 0:
            run.stats.changed += operator_findings(db, stale, run.suppressed_by, now)
            run.stats.changed += apply_silences(db, now)
    stats = run.stats
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


@dataclass
class _Batch:
    """What one batch of pairings writes: finding changes, and each pairing's deadline."""

    findings: stored.FindingWrites = field(default_factory=stored.FindingWrites)
    deadlines: list[tuple[PairingRow, datetime | None]] = field(default_factory=list)


@dataclass
class _Run:
    """One evaluation: where it writes, what it judges by, and what it counted."""

    db: Db
    config: MentorpulseConfig
    now: datetime
    since: datetime | None  # sessions that ended earlier are read only as anchors
    stats: EvaluationStats = field(default_factory=EvaluationStats)
    suppressed_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batch: _Batch = field(default_factory=_Batch)
    _rules: dict[str, tuple[RuleBase, ...]] = field(default_factory=dict)

    def rules_of(self, program: Program) -> tuple[RuleBase, ...]:
        """The rules judging ``program``'s pairings, worked out once per run."""
        rules = self._rules.get(program.id)
        if rules is None:
            rules = self._rules[program.id] = self.config.rules_for(program)
        return rules


def _judge_batch(
    run: _Run,
    ids: Sequence[int],
    roster: Sequence[RosterPairing],
    stale: Mapping[str, str],
) -> None:
    """Load what a batch of pairings' timelines are made of, one query per kind of row,
    judge each pairing, and write the batch's changes in bulk."""
    rows = stored_timelines.pairings(run.db, ids)
    people = {row.id: (row.mentor_email, row.mentee_email) for row in rows}
    covered = coverage(run.db, run.config, people) if stale else {}
    findings = stored.finding_states_of(run.db, ids)
    sessions = sessions_read(run.db, ids, run.since, run.now)
    batch = run.batch = _Batch()
    for judged in timelines(rows, sessions, run.config, roster):
        pairing_id = judged.pairing.id
        # No known source of its own: every source covers it.
        mine = {s: stale[s] for s in covered.get(pairing_id) or stale if s in stale}
        _judge_one(run, judged, findings.get(pairing_id, {}), stale=mine)
    stored.write_findings(run.db, batch.findings, run.now)
    stored_timelines.mark_judged(run.db, batch.deadlines)


def _judge_one(
    run: _Run,
    judged: Judged,
    mine: Mapping[str, stored.StoredFinding],
    *,
    stale: Mapping[str, str],
) -> None:
    """Judge one pairing and note the findings whose state changed (``mine``: its
    findings by fingerprint)."""
    pairing = judged.pairing
    program = run.config.program(pairing.program_id)
    seen: set[str] = set()
    next_deadline = None
    if judged.timeline is not None and program is not None:
        seen, next_deadline = _store_verdict(run, judged, program, mine, stale)
    for key, finding in mine.items():
        if key not in seen and finding.state.state in OPEN:  # rare: worked out only here
            why = why_not_judged(pairing, program, override(program, judged.entry)[1])
            run.batch.findings.resolve(finding.id, run.now, why)
            run.stats.changed += 1
    run.batch.deadlines.append((pairing, next_deadline))


def _store_verdict(
    run: _Run,
    judged: Judged,
    program: Program,
    mine: Mapping[str, stored.StoredFinding],
    stale: Mapping[str, str],
) -> tuple[set[str], datetime | None]:
    """Judge the timeline and note each rule's finding; the fingerprints judged, and
    when to look at the pairing again."""
    timeline = judged.timeline
    assert timeline is not None
    run.stats.pairings += 1
    reason = None
    if stale:
        reason = "; ".join(f"source {s}: {why}" for s, why in sorted(stale.items()))
    previous = {f.state.rule_id: f.state for f in mine.values()}
    verdict = judge(timeline, program, run.rules_of(program), run.now, previous, stale=reason)
    seen: set[str] = set()
    for rule_id, state in verdict.states.items():
        if state is None and rule_id not in previous:
            continue  # no finding before nor after (most rules on most pairings)
        key = fingerprint(rule_id, timeline.pairing_key)
        seen.add(key)
        before = (mine.get(key), previous.get(rule_id))
        _store_state(run, (key, judged.pairing.id), state, before)
        if state is None:
            continue
        if state.state == SUPPRESSED:
            for source in stale:
                run.suppressed_by[source] += 1
        run.stats.count(state.state)
    return seen, verdict.next_deadline


def _store_state(
    run: _Run,
    identity: tuple[str, int],
    state: FindingState | None,
    before: tuple[stored.StoredFinding | None, FindingState | None],
) -> None:
    """Note one finding's new state, if it changed (None: there is no finding);
    ``identity``: its fingerprint and pairing id; ``before``: its row and the rule's
    previous state."""
    key, pairing_id = identity
    row, previous = before
    if state is None:
        if row is not None:  # pending, cleared before it fired: nobody knew
            run.batch.findings.remove(row.id)
            run.stats.changed += 1
        return
    if row is None:
        run.batch.findings.add(key, pairing_id, state, run.now)
        run.stats.changed += 1
    elif state != previous:
        run.batch.findings.change(row.id, state, run.now)
        run.stats.changed += 1


def _config_changed(
    db: Db,
    config: MentorpulseConfig,
    roster: Sequence[RosterPairing],
    now: datetime,
    bucket: Bucket | None = None,
) -> bool:
    """Whether the rules (or per-pairing overrides) differ from the last evaluation's
    (of this bucket: each judges its own pairings in full once after a change)."""
    described = {
        "programs": [p.model_dump(mode="json", exclude={"admins"}) for p in config.programs],
        "rules": [r.model_dump(mode="json") for r in config.rules],
        "stale_after": config.evaluation.stale_after.total_seconds(),
        # Roster edits that change how a pairing is judged without touching its sessions
        # (dates and membership already flag the pairing itself).
        "roster": sorted((e.key, str(e.cadence), e.paused, e.mentor_timezone) for e in roster),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    prefix = _CONFIG_RUN if bucket is None else f"{_BUCKET_CONFIG_RUN}{bucket}:"
    return stored.remember_config(db, prefix, prefix + digest, now)

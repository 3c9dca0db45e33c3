"""The explain stage: why a pairing is (or is not) flagged, as data.

Its sessions with the evidence behind each outcome, each rule's verdict now, the stored
finding it belongs to (and the silence covering it), and when the verdict could next
change. Read only; one query per kind of row however many pairings and sessions there
are. The CLI prints it as tables or JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session as Db

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.errors import UserError
from mentorpulse.model import ParticipantAnswer
from mentorpulse.rules.engine import evaluate
from mentorpulse.stages.context import Context
from mentorpulse.stages.source_health import sources_feeding, stale_sources
from mentorpulse.stages.timelines import Judged, timelines
from mentorpulse.storage import answers as stored_answers
from mentorpulse.storage import findings as stored
from mentorpulse.storage import timelines as stored_timelines
from mentorpulse.storage.models import Finding, Silence
from mentorpulse.storage.timelines import SessionRow


@dataclass(frozen=True, slots=True)
class SilenceView:
    id: int
    until: datetime


@dataclass(frozen=True, slots=True)
class FindingView:
    """A stored finding: its state and the moments of its episode."""

    state: str
    since: datetime
    firing_since: datetime | None
    until: datetime | None
    reason: str | None
    silence: SilenceView | None


@dataclass(frozen=True, slots=True)
class RuleView:
    """One rule on the pairing: its verdict now (holds, clear, error, not judged)."""

    rule: str
    verdict: str
    finding: FindingView | None
    facts: dict[str, str]
    error: str | None = None  # what the rule raised, when its verdict is ``error``


@dataclass(frozen=True, slots=True)
class SessionView:
    start: datetime
    outcome: str
    confidence: float
    evidence: tuple[str, ...]  # strongest first
    id: int = 0  # the stored session's (the dashboard's pairing page names its rows by it)
    # The pair's answers to its attendance check (shown even where a log outranks them).
    answers: tuple[ParticipantAnswer, ...] = ()


@dataclass(frozen=True, slots=True)
class PairingView:
    id: int
    key: str
    program: str
    started_on: date
    ended_on: date | None
    state: str  # active, left the roster, paused (not judged)
    pairing_zone: str | None
    cadence: timedelta | None  # its own, from the roster or an override
    sessions: tuple[SessionView, ...]  # by start
    rules: tuple[RuleView, ...]
    next_deadline: datetime | None


@dataclass(frozen=True, slots=True)
class Explanation:
    stale_sources: dict[str, str]  # of the sources feeding these pairings: id → why its
    # data cannot be trusted now
    pairings: tuple[PairingView, ...]


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What the pairings' views are made of, loaded one query per kind of row."""

    judged: list[Judged]
    sessions: Mapping[int, Sequence[SessionRow]]
    evidence: Mapping[int, Sequence[str]]
    answers: Mapping[int, Sequence[ParticipantAnswer]]
    findings: Mapping[int, Mapping[str, Finding]]
    silences: Mapping[int, Silence]


def explain(ctx: Context, pair: str) -> Explanation:
    """Explain the pairings ``pair`` names: ``MENTOR:MENTEE`` (one per program) or an id."""
    now = ctx.clock()
    with ctx.db() as db:
        loaded = _load(db, ctx.config, ctx.roster, pairing_ids(db, pair, ctx.roster))
        feeding = sources_feeding(db, ctx.config, [judged.row for judged in loaded.judged])
        stale = {k: v for k, v in stale_sources(db, ctx.config, now).items() if k in feeding}
    views = tuple(_pairing_view(ctx.config, judged, loaded, now) for judged in loaded.judged)
    return Explanation(stale, views)


def _load(
    db: Db, config: MentorpulseConfig, roster: Sequence[RosterPairing], ids: Sequence[int]
) -> _Loaded:
    rows = stored_timelines.pairings(db, ids)
    ids = [row.id for row in rows]
    sessions = stored_timelines.sessions_of(db, ids)
    session_ids = [s.id for of_pairing in sessions.values() for s in of_pairing]
    findings = stored.findings_of_pairings(db, ids)
    silenced = {f.silence_id for of_pairing in findings.values() for f in of_pairing.values()}
    return _Loaded(
        judged=timelines(rows, sessions, config, roster),
        sessions=sessions,
        evidence=stored_timelines.evidence_of(db, session_ids),
        answers=stored_answers.answers(db, sessions=session_ids),
        findings=findings,
        silences=stored.silences_by_id(db, {i for i in silenced if i is not None}),
    )


def _pairing_view(
    config: MentorpulseConfig, judged: Judged, loaded: _Loaded, now: datetime
) -> PairingView:
    pairing, timeline = judged.pairing, judged.timeline
    state = "active" if pairing.active else "left the roster"
    if pairing.active and timeline is None:
        state = "paused (not judged)"
    sessions = sorted(loaded.sessions.get(pairing.id, ()), key=lambda s: s.start)
    return PairingView(
        id=pairing.id,
        key=pairing.key,
        program=pairing.program_id,
        started_on=pairing.started_on,
        ended_on=pairing.ended_on,
        state=state,
        pairing_zone=timeline.zone if timeline else None,
        cadence=timeline.cadence if timeline else None,
        sessions=tuple(
            SessionView(
                s.start,
                s.outcome,
                s.confidence,
                tuple(loaded.evidence.get(s.id, ())),
                id=s.id,
                answers=tuple(loaded.answers.get(s.id, ())),
            )
            for s in sessions
        ),
        rules=_rule_views(config, judged, loaded, now),
        next_deadline=pairing.next_deadline,
    )


def _rule_views(
    config: MentorpulseConfig, judged: Judged, loaded: _Loaded, now: datetime
) -> tuple[RuleView, ...]:
    """Each rule's verdict now with its stored finding; a pairing the rules do not judge
    shows its stored findings alone."""
    found = loaded.findings.get(judged.pairing.id, {}).values()
    by_rule = {f.rule_id: _finding_view(f, loaded.silences) for f in found}
    timeline = judged.timeline
    program = config.program(judged.pairing.program_id)
    if timeline is None or program is None:
        return tuple(RuleView(rule_id, "not judged", f, {}) for rule_id, f in by_rule.items())
    return tuple(
        RuleView(c.rule_id, c.verdict, by_rule.get(c.rule_id), dict(c.facts), error=c.error)
        for c in evaluate(timeline, program, now, config.rules_for(program))
    )


def _finding_view(finding: Finding, silences: Mapping[int, Silence]) -> FindingView:
    silence = silences.get(finding.silence_id) if finding.silence_id is not None else None
    return FindingView(
        state=finding.state,
        since=finding.since,
        firing_since=finding.firing_since,
        until=finding.until,
        reason=finding.reason,
        silence=None if silence is None else SilenceView(silence.id, silence.ends_at),
    )


def pairing_ids(db: Db, pair: str, roster: Sequence[RosterPairing]) -> list[int]:
    """The pairings the database holds for ``pair`` (explain only reads: a pair added to
    the roster since the last writing run is named as such, not written)."""
    if pair.isdigit():
        if not stored_timelines.pairing_exists(db, int(pair)):
            raise UserError(f"no pairing with id {pair}")
        return [int(pair)]
    mentor_email, _, mentee_email = pair.lower().partition(":")
    if not mentee_email:
        raise UserError(f"{pair!r}: expected MENTOR:MENTEE email addresses or a pairing id")
    found = stored_timelines.pairing_ids_of(db, mentor_email, mentee_email)
    if not found and any(
        (e.mentor_email, e.mentee_email) == (mentor_email, mentee_email) for e in roster
    ):
        raise UserError(
            f"mentor {mentor_email} with mentee {mentee_email} is in the roster but not yet "
            "in the database: run `mentorpulse evaluate` (the daemon adds it when it next starts)"
        )
    if not found:
        raise UserError(f"no pairing of mentor {mentor_email} with mentee {mentee_email}")
    return found

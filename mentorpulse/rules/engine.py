"""The rules engine: evaluate a program's rules on a pairing, and advance findings.

Both halves are pure: :func:`evaluate` maps a timeline to conditions, :func:`advance`
maps the stored finding and a fresh condition to the next finding state. The caller
loads and stores; running either twice on the same input gives the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from mentorpulse.config.schema import MentorpulseConfig, Program, RuleBase, pair_matches
from mentorpulse.model import ERROR, FIRING, PENDING, RESOLVED, SUPPRESSED, FindingState
from mentorpulse.rules.kinds import (
    Condition,
    RuleKind,
    Timeline,
    TimelineView,
    kind_for,
    read_since,
    start_of,
    view_of,
)

log = structlog.get_logger(__name__)

# (program, rule, error type) already logged: a broken rule fails on every pairing and
# every tick, and one log line says as much as thousands.
_reported_failures: set[tuple[str, str, str]] = set()


# Memoized: the engine and the evaluate stage both ask for each finding's fingerprint, one
# right after the other; a small cache answers the second from the first.
@lru_cache(maxsize=4096)
def fingerprint(rule_id: str, pairing_key: str) -> str:
    """Stable identity of a finding across evaluations, restarts and workers."""
    return hashlib.sha256(f"{rule_id}\x00{pairing_key}".encode()).hexdigest()[:16]


def is_active(timeline: Timeline, now: datetime) -> bool:
    """Whether the pairing runs on ``now``'s date in its own zone (both ends inclusive)."""
    today = now.astimezone(ZoneInfo(timeline.zone)).date()
    if timeline.started_on > today:
        return False
    return timeline.ended_on is None or timeline.ended_on >= today


def selects(rule: RuleBase, timeline: Timeline) -> bool:
    """Whether the rule's ``pairings`` / ``exclude`` patterns let it judge this pairing."""
    who = (timeline.mentor, timeline.mentee)
    if rule.pairings and not any(pair_matches(*who, p) for p in rule.pairings):
        return False
    return not any(pair_matches(*who, p) for p in rule.exclude)


def evaluate(
    timeline: Timeline,
    program: Program,
    now: datetime,
    rules: Sequence[RuleBase] | None = None,
) -> list[Condition]:
    """Every rule (default: the program's own) on one pairing; none if it is not running.

    A rule that raises yields an errored condition (:attr:`Condition.error`), so one
    broken rule never hides the verdicts of the others.
    """
    return _conditions(timeline, program, now, program.rules if rules is None else rules)[0]


def _conditions(
    timeline: Timeline, program: Program, now: datetime, rules: Sequence[RuleBase]
) -> tuple[list[Condition], TimelineView | None]:
    """The selected rules' conditions, and the one view of the timeline they shared (None
    when no rule judged it)."""
    if not is_active(timeline, now):
        return [], None
    selected = [rule for rule in rules if selects(rule, timeline)]
    if not selected:
        return [], None
    view = view_of(timeline, now)
    return [_judged_by(rule, program, view) for rule in selected], view


# Kind instances by (rule, program) identity, with the rule and program they were made of
# (kept alive, so an id is never reused while cached): one instance per rule and run, not
# one per rule and pairing. Cleared when a new configuration fills it.
_kinds: dict[tuple[int, int], tuple[RuleBase, Program, RuleKind[Any]]] = {}


def _kind_of(rule: RuleBase, program: Program) -> RuleKind[Any]:
    """The kind instance judging ``rule`` of ``program`` (see :func:`kind_for`)."""
    cached = _kinds.get((id(rule), id(program)))
    if cached is not None and cached[0] is rule and cached[1] is program:
        return cached[2]
    if len(_kinds) >= 1024:
        _kinds.clear()
    kind = kind_for(rule, program)
    _kinds[(id(rule), id(program))] = (rule, program, kind)
    return kind


def sessions_read_since(config: MentorpulseConfig, now: datetime) -> datetime | None:
    """The earliest end of a session any configured rule may read at ``now`` beyond the
    view's anchors (see :func:`~mentorpulse.rules.kinds.holds_anchors`): evaluation need not
    load the sessions that ended earlier. None when a rule may read them all, or its kind
    cannot be made (judging it reports that).
    """
    try:
        kinds = [
            _kind_of(rule, program)
            for program in config.programs
            for rule in config.rules_for(program)
        ]
        return read_since(kinds, now)
    except Exception:  # a plug-in kind's bug: read everything, let judging report it
        return None


def _judged_by(rule: RuleBase, program: Program, view: TimelineView) -> Condition:
    """One rule's condition; a rule that raises gives an errored one, logged once."""
    try:
        return _kind_of(rule, program).evaluate(view)
    except Exception as exc:  # a rule bug must not stop the other rules
        marker = (program.id, rule.id, type(exc).__name__)
        if marker not in _reported_failures:
            _reported_failures.add(marker)
            log.exception(
                "rule_failed",
                program=program.id,
                rule=rule.id,
                pairing=view.timeline.pairing_key,
            )
        return Condition(
            rule_id=rule.id,
            severity=rule.severity,
            holds=False,
            since=None,
            next_deadline=None,
            error=f"{type(exc).__name__}: {exc}",
        )


def advance(
    previous: FindingState | None,
    condition: Condition,
    *,
    pairing_key: str,
    for_: timedelta,
    now: datetime,
) -> FindingState | None:
    """The next state of a finding given a fresh condition at ``now``.

    ``None`` means there is no finding: nothing held, or a pending finding cleared before
    it ever fired (delete it; nobody was told). A firing finding that clears is resolved;
    a resolved one that holds again starts a new episode under the same fingerprint.
    """
    if not condition.holds:
        if previous is None or previous.state == PENDING:
            return None
        if previous.state == RESOLVED:
            return previous
        return FindingState(
            fingerprint=previous.fingerprint,
            rule_id=previous.rule_id,
            pairing_key=previous.pairing_key,
            severity=previous.severity,
            state=RESOLVED,
            since=previous.since,
            firing_since=previous.firing_since,
            until=now,
            facts=dict(condition.facts),
        )

    continuing = previous is not None and previous.state in (PENDING, FIRING)
    if previous is not None and continuing:
        since = previous.since
        firing_since = previous.firing_since
    else:
        since = condition.since or now
        firing_since = None
    if firing_since is None and now >= since + for_:
        firing_since = since + for_
    return FindingState(
        fingerprint=fingerprint(condition.rule_id, pairing_key),
        rule_id=condition.rule_id,
        pairing_key=pairing_key,
        severity=condition.severity,
        state=FIRING if firing_since is not None else PENDING,
        since=since,
        firing_since=firing_since,
        until=None,
        facts=dict(condition.facts),
    )


@dataclass(frozen=True, slots=True)
class Judgement:
    """One pairing's findings after an evaluation, and when to look at it again."""

    states: dict[str, FindingState | None]  # by rule id; None: no finding (delete)
    next_deadline: datetime | None


def judge(
    timeline: Timeline,
    program: Program,
    rules: Sequence[RuleBase],
    now: datetime,
    previous: Mapping[str, FindingState],
    *,
    stale: str | None = None,
) -> Judgement:
    """Evaluate and advance every finding of one pairing: the whole lifecycle, pure.

    ``previous`` maps rule id to the stored finding. ``stale`` is the reason the
    pairing's data cannot be trusted: findings that would be pending or firing are then
    ``suppressed`` (their episode is kept, so a recovery does not re-notify). The next
    deadline is the earliest moment the verdict could change with no new data: a rule's
    deadline, a pending finding's ``for:``, or a session starting or ending.
    """
    by_id = {r.id: r for r in rules}
    states: dict[str, FindingState | None] = {}
    deadlines: list[datetime] = []
    conditions, view = _conditions(timeline, program, now, rules)
    for condition in conditions:
        rule = by_id[condition.rule_id]
        before = previous.get(condition.rule_id)
        if condition.error is not None:
            states[condition.rule_id] = _errored(condition, condition.error, timeline, before, now)
            continue
        state = advance(
            _unsuppressed(before),
            condition,
            pairing_key=timeline.pairing_key,
            for_=rule.for_,
            now=now,
        )
        if state is not None and state.state in (PENDING, FIRING) and stale is not None:
            state = replace(state, state=SUPPRESSED, reason=stale)
        states[condition.rule_id] = state
        if condition.next_deadline is not None:
            deadlines.append(condition.next_deadline)
        if state is not None and state.firing_since is None and state.state != RESOLVED:
            deadlines.append(state.since + rule.for_)
    deadlines += _timeline_moments(timeline, now, view)
    return Judgement(states, min(deadlines, default=None))


def _errored(
    condition: Condition,
    error: str,
    timeline: Timeline,
    before: FindingState | None,
    now: datetime,
) -> FindingState:
    """The finding of a rule that raised: an error episode, kept while it goes on failing."""
    same = before is not None and before.state == ERROR
    return FindingState(
        fingerprint=fingerprint(condition.rule_id, timeline.pairing_key),
        rule_id=condition.rule_id,
        pairing_key=timeline.pairing_key,
        severity=condition.severity,
        state=ERROR,
        since=before.since if same and before is not None else now,
        firing_since=None,
        until=None,
        facts={},
        reason=error,
    )


def _timeline_moments(
    timeline: Timeline, now: datetime, view: TimelineView | None
) -> list[datetime]:
    """Moments after ``now`` when the pairing itself changes the verdict: its first day,
    the day after its last, and (when any rule judged it: ``view``) each session's start
    and end."""
    moments: list[datetime] = []
    zone = ZoneInfo(timeline.zone)
    if timeline.started_on > now.astimezone(zone).date():
        moments.append(start_of(timeline, zone))
    elif timeline.ended_on is not None:
        after = datetime.combine(timeline.ended_on + timedelta(days=1), time(0), tzinfo=zone)
        if after > now:
            moments.append(after.astimezone(UTC))
    if view is not None:
        moments.extend(view.moments)
    return moments


def _unsuppressed(state: FindingState | None) -> FindingState | None:
    """The finding as the lifecycle sees it: an error starts afresh, a suppressed one
    carries on the episode it interrupted."""
    if state is None or state.state == ERROR:
        return None
    if state.state == SUPPRESSED:
        return replace(state, state=FIRING if state.firing_since else PENDING, reason=None)
    return state

"""Backtest: replay stored history day by day with a rules configuration.

Like ``promtool test rules`` and ``elastalert-test-rule``: no database writes, no mail.
Each pairing is judged at the end of every day in its own zone (skipping days where,
by its next deadline, nothing can change), and every firing episode is reported with
the day it would have started. Comparing two configurations shows what a change to the
rules would add or remove before it is deployed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mentorpulse.config.schema import Program, RuleBase
from mentorpulse.model import FIRING, FindingState
from mentorpulse.rules.engine import judge
from mentorpulse.rules.kinds import Timeline


@dataclass(frozen=True, slots=True)
class Case:
    """One pairing to replay, with the program and rules that judge it."""

    timeline: Timeline
    program: Program
    rules: tuple[RuleBase, ...]


@dataclass(frozen=True, slots=True)
class Fired:
    """A firing episode the replay saw start."""

    day: date  # the day (pairing's zone) it was first seen firing (or ``first``)
    firing_since: datetime
    rule_id: str
    severity: str
    pairing_key: str
    mentor: str
    mentee: str
    facts: dict[str, str]

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.pairing_key, self.rule_id, self.day)


def replay(cases: Sequence[Case], first: date, last: date) -> list[Fired]:
    """Every episode that would have started firing between ``first`` and ``last``.

    The history before ``first`` is replayed too (silently), so an episode already
    firing on ``first`` is reported once, on that day, with its true ``firing_since``.
    """
    fired = [f for case in cases for f in _replay_one(case, first, last)]
    fired.sort(key=lambda f: (f.day, f.pairing_key, f.rule_id))
    return fired


def _replay_one(case: Case, first: date, last: date) -> list[Fired]:
    """One pairing's episodes, judged at the end of each day its next deadline allows."""
    zone = ZoneInfo(case.timeline.zone)
    fired: list[Fired] = []
    previous: dict[str, FindingState] = {}
    day = min(first, case.timeline.started_on)
    due: datetime | None = None
    while day <= last:
        now = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        if due is None or now >= due or day == first:
            verdict = judge(case.timeline, case.program, case.rules, now, previous)
            due = verdict.next_deadline or datetime.max.replace(tzinfo=UTC)
            for rule_id, state in verdict.states.items():
                before = previous.pop(rule_id, None)
                if state is None:
                    continue
                previous[rule_id] = state
                if day >= first and _started(state, before, first_day=day == first):
                    fired.append(_fired(case, day, rule_id, state, now))
        day += timedelta(days=1)
    return fired


def _started(state: FindingState, before: FindingState | None, *, first_day: bool) -> bool:
    """Whether ``state`` is an episode the replay has not reported yet (on the first day
    every firing one is, so an episode already under way shows once)."""
    if state.state != FIRING:
        return False
    return before is None or before.firing_since != state.firing_since or first_day


def _fired(case: Case, day: date, rule_id: str, state: FindingState, now: datetime) -> Fired:
    return Fired(
        day=day,
        firing_since=state.firing_since or now,
        rule_id=rule_id,
        severity=state.severity,
        pairing_key=case.timeline.pairing_key,
        mentor=case.timeline.mentor,
        mentee=case.timeline.mentee,
        facts=state.facts,
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """A replayed episode and whether the configuration in force agrees."""

    fired: Fired
    status: str  # "both", "only candidate", "only in force"


def compare(in_force: Sequence[Fired], candidate: Sequence[Fired]) -> list[Difference]:
    """Line up two replays: the same pairing, rule and day count as the same episode."""
    current = {f.key: f for f in in_force}
    proposed = {f.key: f for f in candidate}
    rows = [Difference(f, "both" if f.key in current else "only candidate") for f in candidate]
    rows += [Difference(f, "only in force") for f in in_force if f.key not in proposed]
    rows.sort(key=lambda d: (d.fired.day, d.fired.pairing_key, d.fired.rule_id))
    return rows

"""Rule kinds, the engine, and the finding lifecycle."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from mentorpulse.config.schema import Cadence, CadenceGapRule, Program
from mentorpulse.model import FindingState, Outcome
from mentorpulse.rules import (
    Condition,
    SessionFact,
    Timeline,
    advance,
    evaluate,
    fingerprint,
)
from mentorpulse.rules.kinds import kind_for
from tests.conftest import FailingRule

BERLIN = "Europe/Berlin"


def program(*rules: CadenceGapRule, every: str = "14d", grace: str = "0d") -> Program:
    return Program.model_validate(
        {
            "id": "eng",
            "cadence": {"every": every, "grace": grace},
            "rules": [r.model_dump(by_alias=True) for r in rules],
        }
    )


def gap_rule(rule_id: str = "gap", **params: str) -> CadenceGapRule:
    return CadenceGapRule.model_validate({"id": rule_id, "kind": "cadence_gap", **params})


def session(key: str, start: datetime, outcome: Outcome) -> SessionFact:
    return SessionFact(key, start, start + timedelta(hours=1), outcome)


def timeline(
    *sessions: SessionFact,
    started_on: date = date(2026, 10, 1),
    ended_on: date | None = None,
) -> Timeline:
    return Timeline(
        pairing_key="eng:m@x.org:e@x.org",
        program="eng",
        mentor="m@x.org",
        mentee="e@x.org",
        started_on=started_on,
        ended_on=ended_on,
        zone=BERLIN,
        sessions=tuple(sessions),
    )


def only(conditions: list[Condition]) -> Condition:
    assert len(conditions) == 1
    return conditions[0]


def test_anchor_is_pairing_start_when_nothing_attended() -> None:
    # Midnight 1 Oct in Berlin (CEST) is 30 Sep 22:00 UTC; + 14d = 15 Oct 00:00 Berlin.
    deadline = datetime(2026, 10, 14, 22, 0, tzinfo=UTC)
    prog = program(gap_rule())
    before = only(evaluate(timeline(), prog, deadline - timedelta(seconds=1)))
    assert not before.holds
    assert before.next_deadline == deadline
    assert before.facts["last_attended"] == "never"
    at = only(evaluate(timeline(), prog, deadline))
    assert at.holds
    assert at.since == deadline
    assert at.next_deadline is None


def test_anchor_is_last_attended_session_and_dst_keeps_wall_clock() -> None:
    # Session 2026-10-20 09:00-10:00 Berlin (CEST) ends 08:00 UTC; DST ends on 25 Oct.
    last = session("s1", datetime(2026, 10, 20, 7, 0, tzinfo=UTC), Outcome.PRESUMED_HELD)
    missed = session("s0", datetime(2026, 10, 10, 7, 0, tzinfo=UTC), Outcome.MISSED)
    cancelled = session("s2", datetime(2026, 10, 27, 7, 0, tzinfo=UTC), Outcome.CANCELLED)
    prog = program(gap_rule())
    now = datetime(2026, 11, 1, tzinfo=UTC)
    result = only(evaluate(timeline(missed, last, cancelled), prog, now))
    # 10:00 Berlin on 3 Nov (CET) is 09:00 UTC, not 08:00 UTC.
    assert result.next_deadline == datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    assert result.facts["deadline"] == "2026-11-03 10:00 CET"
    assert result.facts["last_attended"] == "2026-10-20"
    assert result.facts["every"] == "2w"
    assert not result.holds
    assert only(evaluate(timeline(missed, last), prog, datetime(2026, 11, 3, 9, tzinfo=UTC))).holds


def test_rule_params_override_program_cadence_and_grace_adds() -> None:
    prog = program(gap_rule(every="7d", grace="2d"), every="30d")
    result = only(evaluate(timeline(), prog, datetime(2026, 10, 2, tzinfo=UTC)))
    assert result.next_deadline == datetime(2026, 10, 9, 22, 0, tzinfo=UTC)  # 1 Oct + 9d
    assert result.facts["grace"] == "2d"


def test_next_scheduled_and_future_outcomes_ignored() -> None:
    now = datetime(2026, 10, 20, tzinfo=UTC)
    # A session after `now` judged held later (a backtest sees it) must not reset the clock.
    later = session("s9", datetime(2026, 10, 22, 8, tzinfo=UTC), Outcome.PRESUMED_HELD)
    result = only(evaluate(timeline(later), program(gap_rule()), now))
    assert result.facts["last_attended"] == "never"
    assert result.facts["next_scheduled"] == "2026-10-22 10:00 CEST"
    assert result.holds


def test_ended_and_not_started_pairings_are_not_judged() -> None:
    prog = program(gap_rule())
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert evaluate(timeline(ended_on=date(2026, 11, 30)), prog, now) == []
    assert evaluate(timeline(started_on=date(2026, 12, 2)), prog, now) == []
    assert only(evaluate(timeline(ended_on=date(2026, 12, 1)), prog, now)).holds


def test_failing_rule_is_isolated_and_logged_once(failing_rule: type[FailingRule]) -> None:
    boom = failing_rule(id="boom-isolated", kind="cadence_gap")
    prog = Program(
        id="eng",
        cadence=Cadence(every=timedelta(days=14)),
        rules=(gap_rule(), boom),
    )
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with capture_logs() as logs:
        first = evaluate(timeline(), prog, now)
        evaluate(timeline(), prog, now)
    assert [c.rule_id for c in first] == ["gap", "boom-isolated"]
    assert first[0].holds
    assert not first[1].holds
    assert (first[1].verdict, first[1].error) == ("error", "RuntimeError: bad rule")
    assert first[1].facts == {}, "an error is a verdict of its own, not a fact"
    assert (first[0].verdict, first[0].error) == ("holds", None)
    assert [e["event"] for e in logs] == ["rule_failed"]


def test_the_failing_kind_judges_nothing_outside_its_test() -> None:
    """The registry the daemon reads holds the built-in kinds alone, whatever ran before."""
    rule = FailingRule(id="boom-elsewhere", kind="cadence_gap")
    # Unregistered, the model falls back to the kind of its base class: a cadence gap.
    assert type(kind_for(rule, program())) is type(kind_for(gap_rule(), program()))
    judged = only(evaluate(timeline(), program(rule), datetime(2026, 11, 1, tzinfo=UTC)))
    assert judged.error is None


def test_fingerprint_is_stable_and_distinct() -> None:
    assert fingerprint("gap", "eng:a:b") == fingerprint("gap", "eng:a:b")
    assert len(fingerprint("gap", "eng:a:b")) == 16
    assert fingerprint("gap", "eng:a:b") != fingerprint("gap", "eng:a:c")
    assert fingerprint("gap", "eng:a:b") != fingerprint("gap2", "eng:a:b")


KEY = "eng:m@x.org:e@x.org"
SINCE = datetime(2026, 11, 3, 9, tzinfo=UTC)


def holding(since: datetime = SINCE) -> Condition:
    return Condition("gap", "warning", True, since, None, {"deadline": "x"})


CLEAR = Condition("gap", "warning", False, None, SINCE + timedelta(days=14), {"deadline": "y"})


def test_nothing_holding_no_finding() -> None:
    assert advance(None, CLEAR, pairing_key=KEY, for_=timedelta(0), now=SINCE) is None


def test_for_zero_fires_immediately() -> None:
    state = advance(None, holding(), pairing_key=KEY, for_=timedelta(0), now=SINCE)
    assert state is not None
    assert state.state == "firing"
    assert state.firing_since == SINCE
    assert state.fingerprint == fingerprint("gap", KEY)


def test_pending_then_firing_after_for() -> None:
    for_ = timedelta(days=2)
    pending = advance(None, holding(), pairing_key=KEY, for_=for_, now=SINCE + timedelta(days=1))
    assert pending is not None
    assert pending.state == "pending"
    assert pending.firing_since is None
    firing = advance(pending, holding(), pairing_key=KEY, for_=for_, now=SINCE + timedelta(days=3))
    assert firing is not None
    assert firing.state == "firing"
    assert firing.since == SINCE
    assert firing.firing_since == SINCE + for_


def test_late_evaluation_fires_with_past_firing_since() -> None:
    state = advance(None, holding(), pairing_key=KEY, for_=timedelta(days=1), now=SINCE)
    assert state is not None
    assert state.state == "pending"
    late = advance(
        None, holding(), pairing_key=KEY, for_=timedelta(days=1), now=SINCE + timedelta(days=9)
    )
    assert late is not None
    assert late.firing_since == SINCE + timedelta(days=1)


def test_pending_that_clears_vanishes() -> None:
    pending = advance(None, holding(), pairing_key=KEY, for_=timedelta(days=2), now=SINCE)
    assert advance(pending, CLEAR, pairing_key=KEY, for_=timedelta(days=2), now=SINCE) is None


def test_firing_resolves_then_refires_as_new_episode() -> None:
    zero = timedelta(0)
    firing = advance(None, holding(), pairing_key=KEY, for_=zero, now=SINCE)
    resolved_at = SINCE + timedelta(days=1)
    resolved = advance(firing, CLEAR, pairing_key=KEY, for_=zero, now=resolved_at)
    assert resolved is not None
    assert resolved.state == "resolved"
    assert resolved.until == resolved_at
    assert resolved.facts == {"deadline": "y"}
    new_since = SINCE + timedelta(days=15)
    again = advance(resolved, holding(new_since), pairing_key=KEY, for_=zero, now=new_since)
    assert again is not None
    assert again.state == "firing"
    assert again.since == new_since
    assert again.until is None
    assert again.fingerprint == resolved.fingerprint


@pytest.mark.parametrize("for_", [timedelta(0), timedelta(days=2)])
def test_advance_is_idempotent(for_: timedelta) -> None:
    now = SINCE + timedelta(days=1)
    states: list[FindingState | None] = [None]
    for condition in (holding(), holding(), CLEAR, holding(SINCE + timedelta(days=20))):
        first = advance(states[-1], condition, pairing_key=KEY, for_=for_, now=now)
        assert advance(first, condition, pairing_key=KEY, for_=for_, now=now) == first
        states.append(first)
        now += timedelta(days=1)

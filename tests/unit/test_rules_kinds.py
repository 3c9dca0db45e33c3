"""Each rule kind on hand-built timelines: boundaries, DST edges, what the facts say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import load_roster
from mentorpulse.config.schema import MentorpulseConfig, Program
from mentorpulse.errors import ConfigError
from mentorpulse.model import FIRING, PENDING, RESOLVED, SUPPRESSED, Outcome
from mentorpulse.rules import SessionFact, Timeline, evaluate
from mentorpulse.rules.backtest import Case, compare, replay
from mentorpulse.rules.check import check_selectors
from mentorpulse.rules.engine import judge
from mentorpulse.rules.kinds import Condition

MENTOR = "m@x.org"
MENTEE = "e@x.org"
BERLIN = "Europe/Berlin"
H = timedelta(hours=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def prog(*rules: dict[str, Any], every: str = "14d") -> Program:
    return Program.model_validate({"id": "eng", "cadence": {"every": every}, "rules": rules})


def s(
    start: datetime,
    outcome: Outcome,
    *,
    by: str | None = None,
    notice: float | None = None,
) -> SessionFact:
    return SessionFact(
        key=start.isoformat(),
        start=start,
        end=start + H,
        outcome=outcome,
        cancelled_by=by if outcome in (Outcome.CANCELLED, Outcome.RESCHEDULED) else None,
        cancelled_hours_before=notice,
        missed_by=by if outcome is Outcome.MISSED else None,
    )


def tl(
    *sessions: SessionFact,
    started_on: date = date(2026, 9, 1),
    cadence: timedelta | None = None,
    mentor: str = MENTOR,
) -> Timeline:
    return Timeline(
        pairing_key=f"eng:{mentor}:{MENTEE}",
        program="eng",
        mentor=mentor,
        mentee=MENTEE,
        started_on=started_on,
        ended_on=None,
        zone=BERLIN,
        sessions=tuple(sorted(sessions, key=lambda x: x.start)),
        cadence=cadence,
    )


def one(rule: dict[str, Any], timeline: Timeline, now: datetime) -> Condition:
    program = prog({"id": "r", **rule})
    [condition] = evaluate(timeline, program, now)
    assert condition.error is None, condition.error
    return condition


# ------------------------------------------------------------------ first_meeting


def test_first_meeting_deadline_is_local_midnight_across_dst() -> None:
    # Starts 20 Oct (CEST); 7 days later is 27 Oct 00:00 CET (DST ended 25 Oct) = 26 Oct 23:00Z.
    rule = {"kind": "first_meeting", "within": "7d"}
    deadline = utc(2026, 10, 26, 23)
    timeline = tl(started_on=date(2026, 10, 20))
    before = one(rule, timeline, deadline - timedelta(seconds=1))
    assert not before.holds
    assert before.next_deadline == deadline
    at = one(rule, timeline, deadline)
    assert at.holds
    assert at.since == deadline
    assert at.facts["deadline"] == "2026-10-27 00:00 CET"


def test_first_meeting_clears_once_they_meet_even_late() -> None:
    rule = {"kind": "first_meeting", "within": "7d"}
    met = s(utc(2026, 10, 30, 9), Outcome.HELD)
    timeline = tl(met, started_on=date(2026, 10, 20))
    assert one(rule, timeline, utc(2026, 10, 30, 9)).holds  # the meeting has not ended yet
    after = one(rule, timeline, utc(2026, 10, 30, 10))
    assert not after.holds
    assert after.next_deadline is None
    assert after.facts["first_attended"] == "2026-10-30"


# ------------------------------------------------------------------ no_upcoming


def test_no_upcoming_holds_without_bookings_and_ignores_cancelled_ones() -> None:
    rule = {"kind": "no_upcoming", "horizon": "14d"}
    now = utc(2026, 10, 1, 12)
    cancelled = s(utc(2026, 10, 5, 9), Outcome.CANCELLED, by=MENTOR, notice=48)
    result = one(rule, tl(cancelled), now)
    assert result.holds
    assert result.facts["next_scheduled"] == "none"
    booked = s(utc(2026, 10, 15, 12), Outcome.UPCOMING)  # exactly at the horizon's end
    assert not one(rule, tl(booked), now).holds


def test_no_upcoming_beyond_horizon_clears_when_it_comes_into_view() -> None:
    rule = {"kind": "no_upcoming", "horizon": "14d"}
    booked = s(utc(2026, 11, 5, 9), Outcome.UPCOMING)  # 10:00 CET
    result = one(rule, tl(booked), utc(2026, 10, 1))
    assert result.holds
    # 14 wall-clock days before 5 Nov 10:00 CET is 22 Oct 10:00 CEST = 08:00Z.
    assert result.next_deadline == utc(2026, 10, 22, 8)
    assert not one(rule, tl(booked), utc(2026, 10, 22, 8)).holds


# ------------------------------------------------------------------ consecutive_misses


def test_consecutive_misses_counts_missed_and_cancelled_since_last_attended() -> None:
    rule = {"kind": "consecutive_misses", "count": 3}
    sessions = [
        s(utc(2026, 9, 1, 9), Outcome.MISSED, by=MENTEE),
        s(utc(2026, 9, 8, 9), Outcome.HELD),
        s(utc(2026, 9, 15, 9), Outcome.MISSED, by=MENTEE),
        s(utc(2026, 9, 22, 9), Outcome.RESCHEDULED, by=MENTOR, notice=30),  # not a miss
        s(utc(2026, 9, 23, 9), Outcome.CANCELLED, by=MENTOR, notice=2),
        s(utc(2026, 9, 25, 9), Outcome.UNKNOWN),  # neither breaks nor extends the run
        s(utc(2026, 9, 29, 9), Outcome.MISSED, by=MENTOR),
    ]
    result = one(rule, tl(*sessions), utc(2026, 10, 1))
    assert result.holds
    assert result.facts["misses_in_a_row"] == "3"
    assert result.since == utc(2026, 9, 29, 10)
    # Before the third miss ended, only two were known.
    assert not one(rule, tl(*sessions), utc(2026, 9, 29, 9, 59)).holds


def test_consecutive_misses_reset_by_an_attended_session() -> None:
    rule = {"kind": "consecutive_misses", "count": 2}
    sessions = [
        s(utc(2026, 9, 1, 9), Outcome.MISSED, by=MENTEE),
        s(utc(2026, 9, 8, 9), Outcome.MISSED, by=MENTEE),
        s(utc(2026, 9, 15, 9), Outcome.PRESUMED_HELD),
    ]
    assert one(rule, tl(*sessions), utc(2026, 9, 10)).holds
    assert not one(rule, tl(*sessions), utc(2026, 9, 16)).holds


# ------------------------------------------------------------------ party_disengagement


def test_party_disengagement_names_the_mentee_side() -> None:
    rule = {"kind": "party_disengagement", "count": 3, "window": "30d"}
    sessions = [
        s(utc(2026, 9, 1, 9), Outcome.MISSED, by=MENTEE),  # declined / no-show
        s(utc(2026, 9, 8, 9), Outcome.CANCELLED, by=MENTEE, notice=24),
        s(utc(2026, 9, 15, 9), Outcome.CANCELLED, by=MENTOR, notice=24),
        s(utc(2026, 9, 22, 9), Outcome.MISSED, by=MENTEE),
    ]
    result = one(rule, tl(*sessions), utc(2026, 9, 23))
    assert result.holds
    assert result.facts["party"] == "mentee"
    assert result.facts["party_email"] == MENTEE
    assert (result.facts["mentee_count"], result.facts["mentor_count"]) == ("3", "1")
    # The first act (1 Sep 10:00 UTC = 12:00 CEST) leaves the 30-day window on 1 Oct 12:00.
    assert result.next_deadline == utc(2026, 10, 1, 10)
    later = one(rule, tl(*sessions), utc(2026, 10, 1, 10))
    assert not later.holds


def test_party_disengagement_mentor_side_counts_cancellation_when_made() -> None:
    rule = {"kind": "party_disengagement", "count": 2, "window": "30d"}
    # Cancelled 48h ahead: the act is known from 13 Sep, though the slot was 15 Sep.
    sessions = [
        s(utc(2026, 9, 1, 9), Outcome.CANCELLED, by=MENTOR, notice=1),
        s(utc(2026, 9, 15, 9), Outcome.CANCELLED, by=MENTOR, notice=48),
    ]
    assert one(rule, tl(*sessions), utc(2026, 9, 13, 9)).facts["party"] == "mentor"
    assert not one(rule, tl(*sessions), utc(2026, 9, 13, 8)).holds


# ------------------------------------------------------------------ late_cancellations


def test_late_cancellations_only_count_short_notice() -> None:
    rule = {"kind": "late_cancellations", "count": 2, "notice": "24h", "window": "60d"}
    sessions = [
        s(utc(2026, 9, 1, 9), Outcome.CANCELLED, by=MENTOR, notice=30),  # in time
        s(utc(2026, 9, 8, 9), Outcome.CANCELLED, by=MENTEE, notice=5),
        s(utc(2026, 9, 15, 9), Outcome.RESCHEDULED, by=MENTOR, notice=23.9),
    ]
    result = one(rule, tl(*sessions), utc(2026, 9, 20))
    assert result.holds
    assert result.facts["late_cancellations"] == "2"
    assert result.facts["cancelled_by"] == "mentee, mentor"
    assert not one(rule, tl(*sessions[:2]), utc(2026, 9, 20)).holds


# ------------------------------------------------------------------ attendance_rate


def test_attendance_rate_below_threshold_with_enough_sessions() -> None:
    rule = {"kind": "attendance_rate", "threshold": 0.5, "window": "60d", "min_sessions": 4}
    base = [
        s(utc(2026, 9, 1, 9), Outcome.HELD),
        s(utc(2026, 9, 8, 9), Outcome.MISSED, by=MENTEE),
        s(utc(2026, 9, 15, 9), Outcome.CANCELLED, by=MENTOR, notice=3),
        s(utc(2026, 9, 22, 9), Outcome.RESCHEDULED, by=MENTOR, notice=3),  # not scheduled
    ]
    now = utc(2026, 10, 1)
    too_few = one(rule, tl(*base), now)
    assert not too_few.holds
    assert too_few.facts["scheduled"] == "3"
    fourth = s(utc(2026, 9, 29, 9), Outcome.MISSED, by=MENTEE)
    low = one(rule, tl(*base, fourth), now)
    assert low.holds
    assert low.facts["rate"] == "25%"
    exactly_half = s(utc(2026, 9, 29, 9), Outcome.PRESUMED_HELD)
    fifth = s(utc(2026, 9, 30, 9), Outcome.HELD)
    assert not one(rule, tl(*base, exactly_half, fifth), now).holds  # 3/5 is not below


# ------------------------------------------------------------------ declining_frequency


def test_declining_frequency_compares_with_the_window_before() -> None:
    rule = {"kind": "declining_frequency", "window": "28d", "ratio": 0.5, "min_previous": 2}
    now = utc(2026, 11, 1)
    earlier = [s(utc(2026, 9, 7 + 7 * i, 9), Outcome.HELD) for i in range(4)]  # 7..28 Sep
    recent = [s(utc(2026, 10, 10, 9), Outcome.HELD)]
    result = one(rule, tl(*earlier, *recent), now)
    assert result.holds
    assert (result.facts["recent"], result.facts["previous"]) == ("1", "4")
    two_recent = [*recent, s(utc(2026, 10, 20, 9), Outcome.PRESUMED_HELD)]
    assert not one(rule, tl(*earlier, *two_recent), now).holds  # 2 is not below 0.5 x 4


# ------------------------------------------------------------------ selectors, overrides


def test_pairing_selectors_and_pairing_cadence_override() -> None:
    program = prog(
        {"id": "gap", "kind": "cadence_gap", "exclude": ["*@x.org:*"]},
        {"id": "sel", "kind": "cadence_gap", "pairings": ["M@X.ORG:*"]},
    )
    now = utc(2026, 9, 10)
    assert [c.rule_id for c in evaluate(tl(), program, now)] == ["sel"]
    assert [c.rule_id for c in evaluate(tl(mentor="z@y.org"), program, now)] == ["gap"]
    [own] = evaluate(tl(cadence=timedelta(days=7)), program, now)
    assert own.facts["every"] == "1w"
    assert own.holds  # started 1 Sep, a week's cadence lapsed on 8 Sep


def test_top_level_rule_selects_programs_and_unknown_program_is_an_error() -> None:
    data = {
        "programs": [
            {"id": "eng", "cadence": {"every": "14d"}},
            {"id": "sales", "cadence": {"every": "14d"}},
        ],
        "rules": [{"id": "first", "kind": "first_meeting", "programs": ["en*"]}],
    }
    config = MentorpulseConfig.model_validate(data)
    [eng, sales] = config.programs
    assert [r.id for r in config.rules_for(eng)] == ["first"]
    assert config.rules_for(sales) == ()
    data["rules"][0]["programs"] = ["hr"]  # type: ignore[index]
    with pytest.raises(ValidationError, match="program selector 'hr' matches no program"):
        MentorpulseConfig.model_validate(data)


# ------------------------------------------------------------------ judge(): lifecycle


def test_judge_suppresses_when_stale_and_recovery_keeps_the_episode() -> None:
    program = prog({"id": "gap", "kind": "cadence_gap"})
    timeline = tl()
    now = utc(2026, 10, 1)
    firing = judge(timeline, program, program.rules, now, {}).states["gap"]
    assert firing is not None
    assert firing.state == FIRING
    stale = judge(
        timeline, program, program.rules, now + H, {"gap": firing}, stale="source cal: down"
    ).states["gap"]
    assert stale is not None
    assert stale.state == SUPPRESSED
    assert stale.reason == "source cal: down"
    back = judge(timeline, program, program.rules, now + 2 * H, {"gap": stale}).states["gap"]
    assert back is not None
    assert back.state == FIRING
    assert back.firing_since == firing.firing_since  # same episode: nobody is mailed twice


def test_judge_next_deadline_covers_for_and_session_boundaries() -> None:
    program = prog({"id": "gap", "kind": "cadence_gap", "for": "2d"})
    now = utc(2026, 9, 16)  # gap since 15 Sep 00:00 CEST = 14 Sep 22:00Z
    pending = judge(tl(), program, program.rules, now, {})
    state = pending.states["gap"]
    assert state is not None
    assert state.state == PENDING
    assert pending.next_deadline == utc(2026, 9, 16, 22)  # since + for
    booked = s(utc(2026, 9, 16, 9), Outcome.UPCOMING)
    with_session = judge(tl(booked), program, program.rules, utc(2026, 9, 16, 8), {})
    assert with_session.next_deadline == booked.start
    held = s(utc(2026, 9, 16, 9), Outcome.HELD)
    cleared = judge(tl(held), program, program.rules, utc(2026, 9, 16, 10), {"gap": state})
    assert cleared.states["gap"] is None  # pending that cleared: no finding at all
    firing = judge(tl(), program, program.rules, utc(2026, 9, 20), {"gap": state}).states["gap"]
    assert firing is not None
    resolved = judge(tl(held), program, program.rules, utc(2026, 9, 21), {"gap": firing})
    assert resolved.states["gap"] is not None
    assert resolved.states["gap"].state == RESOLVED


def test_pairing_selector_matching_no_roster_pair_names_file_and_line(tmp_path: Path) -> None:
    config_file = tmp_path / "mentorpulse.yaml"
    config_file.write_text(
        "programs:\n"
        "  - id: eng\n"
        "    cadence: {every: 14d}\n"
        "    rules:\n"
        "      - id: vip\n"
        "        kind: cadence_gap\n"
        "        pairings:\n"
        "          - 'ana@x.org:*'\n"
        "          - 'anna@x.org:*'\n"
        "    overrides:\n"
        "      - {pair: 'ana@x.org:ben@x.org', every: 7d}\n"
        "      - {pair: 'ana@x.org:bem@x.org', paused: true}\n",
        encoding="utf-8",
    )
    (tmp_path / "roster.csv").write_text(
        "program,mentor_email,mentee_email,started_on\neng,ana@x.org,ben@x.org,2026-01-05\n",
        encoding="utf-8",
    )
    config = load_config(config_file)
    roster = load_roster(tmp_path / "roster.csv", config)
    with pytest.raises(ConfigError) as caught:
        check_selectors(config, roster, config_file)
    assert caught.value.problems == [
        f"{config_file}:9: programs[0].rules[0].pairings[1]: 'anna@x.org:*' matches no "
        "MENTOR:MENTEE pair of program 'eng' in the roster",
        f"{config_file}:12: programs[0].overrides[1].pair: 'ana@x.org:bem@x.org' matches no "
        "MENTOR:MENTEE pair of program 'eng' in the roster",
    ]


# ------------------------------------------------------------------ backtest


def test_replay_reports_each_episode_on_the_day_it_fires_and_compare_lines_them_up() -> None:
    program = prog({"id": "gap", "kind": "cadence_gap", "for": "2d"}, every="7d")
    met = s(utc(2026, 9, 10, 9), Outcome.HELD)
    case = Case(tl(met, started_on=date(2026, 9, 1)), program, program.rules)
    fired = replay([case], date(2026, 9, 1), date(2026, 9, 30))
    # Gap from 8 Sep 00:00 CEST, firing 2 days later; they met on 10 Sep 11:00-12:00 CEST,
    # which resolves it; the next gap opens 17 Sep 12:00 CEST and fires 19 Sep 12:00.
    assert [(f.day, f.firing_since) for f in fired] == [
        (date(2026, 9, 9), utc(2026, 9, 9, 22)),
        (date(2026, 9, 19), utc(2026, 9, 19, 10)),
    ]
    later = replay([case], date(2026, 9, 20), date(2026, 9, 30))
    assert [(f.day, f.firing_since) for f in later] == [(date(2026, 9, 20), utc(2026, 9, 19, 10))]
    loose = prog({"id": "gap", "kind": "cadence_gap", "for": "2d"}, every="14d")
    candidate = replay(
        [Case(case.timeline, loose, loose.rules)], date(2026, 9, 1), date(2026, 9, 30)
    )
    assert [(d.fired.day, d.status) for d in compare(fired, candidate)] == [
        (date(2026, 9, 9), "only in force"),
        (date(2026, 9, 19), "only in force"),
        (date(2026, 9, 26), "only candidate"),  # 14 days after they met, plus 2
    ]

"""Attendance checks, the pure parts: answers as evidence, the dispute rule, its route and
the config that turns it on."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from mentorpulse.config.schema import (
    IMPLICIT_DISPUTE_RULE,
    AttendanceCheck,
    MentorpulseConfig,
)
from mentorpulse.model import (
    CONFIRMATION_EVIDENCE,
    DISPUTED_EVIDENCE,
    AttendanceEvidence,
    Attendee,
    EventRecord,
    EventStatus,
    Outcome,
    ParticipantAnswer,
    Response,
)
from mentorpulse.notify.route import Router
from mentorpulse.rules.kinds import SessionFact, Timeline, kind_for, view_of
from mentorpulse.signing import ANSWER, SIGN_IN, BadToken, Signer
from mentorpulse.tracking.attendance import judge
from tests.notify_support import alert

MENTOR, MENTEE = "ana@example.org", "ben@example.org"
START = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
NOW = END + timedelta(days=1)


def record(
    *,
    mentee: Response = Response.ACCEPTED,
    status: EventStatus = EventStatus.CONFIRMED,
    conference_id: str | None = None,
) -> EventRecord:
    return EventRecord(
        source_id="cal",
        provider_id="e1",
        ical_uid="e1@test",
        start=START,
        end=END,
        zone="Europe/London",
        status=status,
        organizer=MENTOR,
        attendees=(Attendee(MENTOR, Response.ACCEPTED), Attendee(MENTEE, mentee)),
        calendar_owner=MENTOR,
        conference_id=conference_id,
    )


def said(email: str, happened: bool) -> ParticipantAnswer:
    return ParticipantAnswer(email, happened, END + timedelta(hours=3))


def verdict(*answers: ParticipantAnswer, **kw: Any) -> Any:
    conference = kw.pop("conference", ())
    return judge(
        [record(**kw)],
        mentor=MENTOR,
        mentee=MENTEE,
        now=NOW,
        conference=conference,
        answers=answers,
    )


@pytest.mark.parametrize(
    ("answers", "outcome", "deciding"),
    [
        ((), Outcome.PRESUMED_HELD, "accepted"),  # confirm by default
        (((MENTOR, True),), Outcome.HELD, CONFIRMATION_EVIDENCE),
        (((MENTEE, True),), Outcome.HELD, CONFIRMATION_EVIDENCE),
        (((MENTOR, True), (MENTEE, True)), Outcome.HELD, CONFIRMATION_EVIDENCE),
        (((MENTOR, False),), Outcome.MISSED, CONFIRMATION_EVIDENCE),
        (((MENTOR, False), (MENTEE, False)), Outcome.MISSED, CONFIRMATION_EVIDENCE),
        (((MENTOR, True), (MENTEE, False)), Outcome.UNKNOWN, DISPUTED_EVIDENCE),
        (((MENTOR, False), (MENTEE, True)), Outcome.UNKNOWN, DISPUTED_EVIDENCE),
        # Someone who is not of the pair has no say.
        ((("eve@example.org", False),), Outcome.PRESUMED_HELD, "accepted"),
    ],
)
def test_answers_decide_the_outcome(
    answers: tuple[tuple[str, bool], ...], outcome: Outcome, deciding: str
) -> None:
    found = verdict(*(said(e, h) for e, h in answers))
    assert found.outcome is outcome
    assert found.evidence[0].kind == deciding


def test_a_dispute_keeps_both_answers_as_evidence() -> None:
    found = verdict(said(MENTOR, True), said(MENTEE, False))
    kinds = [p.kind for p in found.evidence]
    assert kinds[:3] == [DISPUTED_EVIDENCE, CONFIRMATION_EVIDENCE, CONFIRMATION_EVIDENCE]
    details = " | ".join(p.detail for p in found.evidence[1:3])
    assert "mentor answered that it took place" in details
    assert "mentee answered that it did not take place" in details
    assert (
        found.evidence[0].detail
        == "disputed: the mentor says it took place, the mentee says it did not"
    )


def test_a_yes_outranks_a_decline_in_the_calendar() -> None:
    assert verdict(mentee=Response.DECLINED).outcome is Outcome.MISSED
    found = verdict(said(MENTEE, True), mentee=Response.DECLINED)
    assert found.outcome is Outcome.HELD
    assert [p.kind for p in found.evidence][:2] == [CONFIRMATION_EVIDENCE, "accepted"]


def test_a_conference_log_outranks_the_answers() -> None:
    log = [
        AttendanceEvidence("e1", MENTOR, 3000, system="google_meet"),
        AttendanceEvidence("e1", MENTEE, 3000, system="google_meet"),
    ]
    found = verdict(said(MENTOR, False), said(MENTEE, False), conference=log, conference_id="m")
    assert found.outcome is Outcome.HELD
    assert found.evidence[0].kind == "joined"
    assert CONFIRMATION_EVIDENCE in [p.kind for p in found.evidence]  # still shown


def test_a_cancelled_session_stays_cancelled() -> None:
    assert verdict(said(MENTOR, True), status=EventStatus.CANCELLED).outcome is Outcome.CANCELLED


# ---- the dispute rule ------------------------------------------------------------------


def timeline(*sessions: SessionFact) -> Timeline:
    return Timeline(
        pairing_key=f"lead:{MENTOR}:{MENTEE}",
        program="lead",
        mentor=MENTOR,
        mentee=MENTEE,
        started_on=date(2026, 1, 1),
        ended_on=None,
        zone="Europe/London",
        sessions=sessions,
    )


def config(**program: Any) -> MentorpulseConfig:
    return MentorpulseConfig.model_validate(
        {
            "service": {"http": {"public_url": "https://mp.example.org/"}},
            "sources": [{"id": "cal", "kind": "ics", "path": "calendars"}],
            "programs": [{"id": "lead", "cadence": {"every": "14d"}, **program}],
        }
    )


def test_the_dispute_rule_holds_while_a_disputed_session_is_recent() -> None:
    cfg = config(attendance_check={"ask": ["mentor", "mentee"]}, admins=["hr@example.org"])
    program = cfg.programs[0]
    rules = cfg.rules_for(program)
    assert IMPLICIT_DISPUTE_RULE in rules
    kind = kind_for(IMPLICIT_DISPUTE_RULE, program)
    calm = SessionFact("a", START, END, Outcome.HELD)
    disputed = SessionFact("b", START, END, Outcome.UNKNOWN, disputed=True)
    assert not kind.evaluate(view_of(timeline(calm), NOW)).holds
    found = kind.evaluate(view_of(timeline(calm, disputed), NOW))
    assert found.holds
    assert found.since == END
    assert found.next_deadline == END + timedelta(days=30)
    assert "2026-03-03" in found.facts["disputed_sessions"]
    aged = kind.evaluate(view_of(timeline(disputed), END + timedelta(days=31)))
    assert not aged.holds


def test_no_attendance_check_no_dispute_rule() -> None:
    cfg = config()
    assert all(r.kind != "attendance_disputed" for r in cfg.rules_for(cfg.programs[0]))


def test_a_declared_dispute_rule_replaces_the_implicit_one() -> None:
    cfg = config(
        attendance_check={"ask": ["mentor"]},
        rules=[{"id": "argue", "kind": "attendance_disputed", "window": "10d"}],
    )
    rules = cfg.rules_for(cfg.programs[0])
    assert [r.id for r in rules if r.kind == "attendance_disputed"] == ["argue"]


def test_disputes_go_to_the_program_admins_unless_a_route_names_them() -> None:
    dispute = alert(rule_id="attendance_disputed", rule_kind="attendance_disputed")
    router = Router(program_admins={dispute.program: ("admin@example.org",)})
    notes = router.notifications([dispute], now=NOW)
    assert [n.recipient for n in notes] == ["admin@example.org"]
    named = Router.from_config(
        MentorpulseConfig.model_validate(
            {
                "programs": [{"id": dispute.program, "cadence": {"every": "14d"}}],
                "notify": {"routes": [{"match": {"rules": ["attendance_disputed"]}}]},
            }
        )
    )
    assert [n.recipient for n in named.notifications([dispute], now=NOW)] == [dispute.mentor_email]


def test_attendance_checks_need_the_address_people_reach_the_service_at() -> None:
    for http in ({"enabled": False}, {}):  # links to http://127.0.0.1:9464/ reach nobody
        with pytest.raises(ValidationError, match=r"set service\.http\.public_url"):
            MentorpulseConfig.model_validate(
                {
                    "service": {"http": http},
                    "programs": [
                        {"id": "lead", "cadence": {"every": "14d"}, "attendance_check": {}}
                    ],
                }
            )
    served_elsewhere = MentorpulseConfig.model_validate(
        {
            "service": {"http": {"enabled": False, "public_url": "https://mp.example.org/"}},
            "programs": [{"id": "lead", "cadence": {"every": "14d"}, "attendance_check": {}}],
        }
    )
    assert served_elsewhere.service.http.base_url == "https://mp.example.org/"


def test_attendance_check_config() -> None:
    check = AttendanceCheck.model_validate({"ask": ["mentor", "mentee"], "after": "3h"})
    assert check.after == timedelta(hours=3)
    assert check.answer_within == timedelta(days=7)
    assert config().programs[0].attendance_check is None  # opt-in
    for bad in ({"ask": []}, {"ask": ["hr"]}, {"after": "8d"}, {"ask": ["mentor", "mentor"]}):
        with pytest.raises(ValidationError):
            AttendanceCheck.model_validate(bad)
    # The question must leave time to answer: 12h (or a tenth of a short window).
    with pytest.raises(ValidationError, match="at least 12h before answer_within"):
        AttendanceCheck.model_validate({"after": "157h"})
    with pytest.raises(ValidationError, match="after \\+ digest must end at least 12h"):
        AttendanceCheck.model_validate({"after": "2h", "digest": "155h"})
    assert AttendanceCheck.model_validate({"after": "156h"}).margin == timedelta(hours=12)
    assert AttendanceCheck.model_validate({"answer_within": "10h"}).margin == timedelta(hours=1)


# ---- the token's binding ---------------------------------------------------------------


def test_an_answer_token_is_bound_to_its_session_and_person() -> None:
    signer = Signer([b"k" * 32], ANSWER)
    token = signer.sign({"s": 1, "e": MENTOR, "d": 2_000_000_000})
    assert signer.read(token, max_age=timedelta(days=7)) == {
        "s": 1,
        "e": MENTOR,
        "d": 2_000_000_000,
    }
    # Another session or person cannot be put in without breaking the signature.
    body, _, rest = token.partition(".")
    other = Signer([b"k" * 32], ANSWER).sign({"s": 2, "e": MENTEE, "d": 2_000_000_000})
    forged = other.partition(".")[0] + "." + rest
    with pytest.raises(BadToken) as refused:
        signer.read(forged, max_age=timedelta(days=7))
    assert not refused.value.expired
    assert token not in str(refused.value)
    # Nor is a token of another purpose (a sign-in link) an answer.
    with pytest.raises(BadToken):
        signer.read(Signer([b"k" * 32], SIGN_IN).sign({"s": 1, "e": MENTOR}), max_age=timedelta(1))
    assert body

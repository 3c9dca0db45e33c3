"""The notifier core: routing, outbox, rendering, file transport, dispatcher."""

from __future__ import annotations

import email
import email.policy
import os
import stat
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import MentorpulseConfig, NotifyConfig, Program
from mentorpulse.model import Outcome
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import (
    backoff,
    claim_due,
    enqueue,
    mark_failed,
    mark_sent,
    message_id_for,
    outbox_row,
)
from mentorpulse.notify.render import render
from mentorpulse.notify.route import (
    Alert,
    Notification,
    Router,
    notifications_for,
    should_notify,
)
from mentorpulse.notify.transport import FileTransport, SendResult, build_transport
from mentorpulse.rules import SessionFact, Timeline, evaluate
from mentorpulse.storage.models import Base, OutboxMessage

NOW = datetime(2024, 10, 21, 9, 0, tzinfo=UTC)
FIRED = datetime(2024, 10, 20, 6, 0, tzinfo=UTC)
SENDER = "mentorpulse@example.org"


def alert(**changes: object) -> Alert:
    base = Alert(
        fingerprint="f" * 16,
        rule_id="monthly-gap",
        severity="warning",
        state="firing",
        firing_since=FIRED,
        facts={"last_attended": "2024-10-02T10:00:00+00:00", "gap_days": "19"},
        program="eng",
        program_name="Engineering mentoring",
        mentor_email="ana@example.org",
        mentor_name="Ana Lima",
        mentee_email="ben@example.org",
        mentee_name="Ben",
        mentor_timezone="Europe/Lisbon",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def queue(sessions: sessionmaker[Db], *alerts: Alert, now: datetime = NOW) -> int:
    with sessions.begin() as db:
        return enqueue(db, notifications_for(alerts, now=now), now=now)


def rows(sessions: sessionmaker[Db]) -> list[OutboxMessage]:
    with sessions() as db:
        return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def read_eml(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    return text.get_content(), html.get_content()


class FailingTransport:
    def __init__(self, *, retryable: bool) -> None:
        self.retryable = retryable
        self.attempts = 0

    def send(self, message: EmailMessage) -> SendResult:
        self.attempts += 1
        return SendResult(ok=False, retryable=self.retryable, error="451 try again later")

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- routing


def test_a_firing_finding_gives_one_reminder_to_the_mentor() -> None:
    [note] = notifications_for([alert()])
    assert note.recipient == "ana@example.org"
    assert note.template == "reminder"
    # Another finding (another rule, or another pair) is another email.
    other = notifications_for([alert(fingerprint="e" * 16)])
    assert [n.idempotency_key for n in other] != [note.idempotency_key]
    assert note.payload["mentee_name"] == "Ben"
    assert note.payload["program_name"] == "Engineering mentoring"
    assert note.payload["facts"] == {
        "gap_days": "19",
        "last_attended": "2024-10-02T10:00:00+00:00",
    }


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"state": "pending"}, "not firing"),
        ({"state": "resolved"}, "not firing"),
        ({"silenced": True}, "silenced"),
    ],
)
def test_no_mail_for_pending_resolved_or_silenced(changes: dict[str, object], reason: str) -> None:
    quiet = alert(**changes)
    assert should_notify(quiet) == (False, reason)
    assert notifications_for([quiet]) == []


def test_a_new_firing_episode_is_a_new_email_but_a_rerun_is_not() -> None:
    first = notifications_for([alert()])[0].idempotency_key
    assert notifications_for([alert()])[0].idempotency_key == first
    refired = alert(firing_since=FIRED + timedelta(days=30))
    assert notifications_for([refired])[0].idempotency_key != first


def test_key_uses_utc_whatever_zone_firing_since_carries() -> None:
    local = FIRED.astimezone(ZoneInfo("America/New_York"))
    assert (
        notifications_for([alert(firing_since=local)])[0].idempotency_key
        == notifications_for([alert()])[0].idempotency_key
    )


def test_last_met_is_shown_as_the_day_in_the_mentors_zone() -> None:
    late = {"last_attended": "2024-10-02T23:30:00+00:00"}
    auckland = notifications_for([alert(facts=late, mentor_timezone="Pacific/Auckland")])[0]
    lisbon = notifications_for([alert(facts=late, mentor_timezone="Europe/Lisbon")])[0]
    assert auckland.payload["last_met_display"] == "3 Oct 2024"
    assert lisbon.payload["last_met_display"] == "3 Oct 2024"  # 00:30 WEST
    utc = notifications_for([alert(facts=late, mentor_timezone=None)])[0]
    assert utc.payload["last_met_display"] == "2 Oct 2024"


@pytest.mark.parametrize(
    ("attended", "last_met", "never_met"),
    [((), None, True), ((datetime(2024, 10, 2, 8, 0, tzinfo=UTC),), "2 Oct 2024", False)],
)
def test_the_reminder_reads_the_last_attended_day_the_cadence_rule_writes(
    attended: tuple[datetime, ...], last_met: str | None, never_met: bool
) -> None:
    """The rules and the router agree on one fact: what a cadence gap finding says of
    the last session is what the reminder says ("not met since …", "not met yet")."""
    timeline = Timeline(
        pairing_key="eng:ana@example.org:ben@example.org",
        program="eng",
        mentor="ana@example.org",
        mentee="ben@example.org",
        started_on=date(2024, 9, 1),
        ended_on=None,
        zone="Europe/Lisbon",
        sessions=tuple(
            SessionFact(f"s{i}", s, s + timedelta(hours=1), Outcome.HELD)
            for i, s in enumerate(attended)
        ),
    )
    program = Program.model_validate(
        {"id": "eng", "cadence": {"every": "14d"}, "rules": [{"id": "gap", "kind": "cadence_gap"}]}
    )
    [condition] = evaluate(timeline, program, NOW)
    assert condition.holds
    payload = notifications_for([alert(facts=condition.facts)], now=NOW)[0].payload
    assert (payload["last_met_display"], payload["never_met"]) == (last_met, never_met)


# ---------------------------------------------------------------- outbox


def test_enqueueing_the_same_decision_twice_keeps_one_row(
    sessions: sessionmaker[Db],
) -> None:
    assert queue(sessions, alert()) == 1
    assert queue(sessions, alert(), now=NOW + timedelta(hours=1)) == 0
    [row] = rows(sessions)
    assert row.status == "pending"
    assert row.next_attempt_at == NOW
    assert row.message_id == message_id_for(row.idempotency_key, "mentorpulse.invalid")


def test_message_id_is_stable_and_well_formed() -> None:
    a = message_id_for("k:step0", "example.org")
    assert a == message_id_for("k:step0", "example.org")
    assert a != message_id_for("k:step1", "example.org")
    assert a.startswith("<")
    assert a.endswith("@example.org>")
    assert len(a.split("@")[0]) == 1 + 32


def test_backoff_doubles_and_is_capped_at_an_hour() -> None:
    assert timedelta(minutes=2) <= backoff(1) <= timedelta(minutes=2.2)
    assert timedelta(minutes=8) <= backoff(3) <= timedelta(minutes=8.8)
    assert timedelta(hours=1) <= backoff(30) <= timedelta(hours=1.1)


# ---------------------------------------------------------------- dispatch


def test_dispatch_writes_an_email_that_reads_back(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    queue(sessions, alert())
    transport = FileTransport(tmp_path / "outbox")
    counts = dispatch(sessions, transport, sender=SENDER, now=NOW)
    assert (counts.sent, counts.failed, counts.retried) == (1, 0, 0)

    [row] = rows(sessions)
    assert row.status == "sent"
    assert row.sent_at == NOW
    [path] = (tmp_path / "outbox").glob("*.eml")
    message = read_eml(path)
    assert message["To"].addresses[0].addr_spec == "ana@example.org"
    assert message["To"].addresses[0].display_name == "Ana Lima"
    assert message["From"] == SENDER
    assert message["Subject"] == "Mentoring: you and Ben have not met since 2 Oct 2024"
    assert message["Message-ID"] == row.message_id
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert "Ben" in text
    assert "Engineering mentoring" in text
    assert "2 Oct 2024" in text
    assert "<strong>Ben</strong>" in html
    assert list(tmp_path.joinpath("outbox").glob(".tmp-*")) == []


def test_a_second_dispatch_sends_nothing(sessions: sessionmaker[Db], tmp_path: Path) -> None:
    queue(sessions, alert(), alert(fingerprint="g" * 16, mentee_name="Cleo"))
    transport = FileTransport(tmp_path)
    assert dispatch(sessions, transport, sender=SENDER, now=NOW).sent == 2
    queue(sessions, alert(), alert(fingerprint="g" * 16, mentee_name="Cleo"))
    later = NOW + timedelta(days=1)
    assert dispatch(sessions, transport, sender=SENDER, now=later).sent == 0
    assert len(list(tmp_path.glob("*.eml"))) == 2


def test_a_send_whose_worker_died_is_resent_with_the_same_message_id(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    queue(sessions, alert())
    transport = FileTransport(tmp_path)
    # A worker claims the row, starts sending, writes the file and dies before marking it.
    with sessions.begin() as db:
        [claimed] = claim_due(db, now=NOW, lease=timedelta(minutes=5))
        transport.send(render(claimed, sender=SENDER))
    first = {p.name: read_eml(p)["Message-ID"] for p in tmp_path.glob("*.eml")}

    # While its lease holds, nobody else touches the row.
    during = NOW + timedelta(minutes=4)
    assert dispatch(sessions, transport, sender=SENDER, now=during).sent == 0

    after = NOW + timedelta(minutes=6)
    assert dispatch(sessions, transport, sender=SENDER, now=after).sent == 1
    second = {p.name: read_eml(p)["Message-ID"] for p in tmp_path.glob("*.eml")}
    assert second == first  # the same file, the same Message-ID: receivers de-duplicate
    [row] = rows(sessions)
    assert (row.status, row.attempts) == ("sent", 2)


def test_a_retryable_failure_puts_the_row_back_with_backoff(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    queue(sessions, alert())
    flaky = FailingTransport(retryable=True)
    counts = dispatch(sessions, flaky, sender=SENDER, now=NOW)
    assert (counts.sent, counts.failed, counts.retried) == (0, 0, 1)
    [row] = rows(sessions)
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.next_attempt_at > NOW
    assert row.last_error == "451 try again later"

    # Not before the backoff has elapsed; then it goes out on a working transport.
    assert dispatch(sessions, flaky, sender=SENDER, now=NOW + timedelta(seconds=30)).retried == 0
    assert flaky.attempts == 1
    good = FileTransport(tmp_path)
    assert dispatch(sessions, good, sender=SENDER, now=row.next_attempt_at).sent == 1
    [row] = rows(sessions)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_a_permanent_failure_is_given_up(sessions: sessionmaker[Db]) -> None:
    queue(sessions, alert())
    broken = FailingTransport(retryable=False)
    assert dispatch(sessions, broken, sender=SENDER, now=NOW).failed == 1
    [row] = rows(sessions)
    assert row.status == "failed"
    later = NOW + timedelta(days=1)
    assert dispatch(sessions, broken, sender=SENDER, now=later).failed == 0
    assert broken.attempts == 1


def test_a_row_that_cannot_render_fails_and_the_others_still_go(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    good = notifications_for([alert()])[0]
    bad = Notification(
        recipient="ana@example.org", template="no-such-template", idempotency_key="x", payload={}
    )
    with sessions.begin() as db:
        enqueue(db, [bad, good], now=NOW)
    counts = dispatch(sessions, FileTransport(tmp_path), sender=SENDER, now=NOW)
    assert (counts.sent, counts.failed) == (1, 1)
    statuses = {r.idempotency_key: (r.status, r.last_error or "") for r in rows(sessions)}
    assert statuses["x"][0] == "failed"
    assert "no-such-template" in statuses["x"][1]
    assert statuses[good.idempotency_key][0] == "sent"


# ---------------------------------------------------------------- rendering


def test_line_breaks_in_roster_names_never_reach_a_header(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    evil = alert(mentee_name="Ben\r\nBcc: evil@x", mentor_name="Ana\nCc: evil@y")
    queue(sessions, evil)
    assert dispatch(sessions, FileTransport(tmp_path), sender=SENDER, now=NOW).sent == 1
    [path] = tmp_path.glob("*.eml")
    message = read_eml(path)
    assert message["Bcc"] is None
    assert message["Cc"] is None
    assert len(message.get_all("To") or []) == 1
    assert [a.addr_spec for a in message["To"].addresses] == ["ana@example.org"]
    assert "\n" not in message["Subject"]
    assert "\r" not in message["Subject"]
    assert b"\nBcc:" not in path.read_bytes().split(b"\n\n", 1)[0]


def test_html_escapes_calendar_and_roster_values(sessions: sessionmaker[Db]) -> None:
    queue(sessions, alert(mentee_name="<script>x()</script> O'Brien", program_name="R&D"))
    [row] = rows(sessions)
    text, html = parts(render(row, sender=SENDER))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "R&amp;D" in html
    assert "<script>x()</script> O'Brien" in text  # plain text shows names as written


def test_unicode_names_survive_the_round_trip(sessions: sessionmaker[Db]) -> None:
    queue(sessions, alert(mentor_name="Zoë Ñúñez", mentee_name="Łukasz"))
    [row] = rows(sessions)
    message = email.message_from_bytes(
        render(row, sender=SENDER).as_bytes(), policy=email.policy.default
    )
    assert message["To"].addresses[0].display_name == "Zoë Ñúñez"
    assert message["Subject"] == "Mentoring: you and Łukasz have not met since 2 Oct 2024"


def test_an_admin_can_override_a_template_from_a_folder(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    custom = tmp_path / "templates"
    custom.mkdir()
    (custom / "reminder.txt.j2").write_text("Olá {{ mentor_name }}, fale com {{ mentee_name }}.\n")
    queue(sessions, alert())
    [row] = rows(sessions)
    text, html = parts(render(row, sender=SENDER, template_dir=custom))
    assert text == "Olá Ana Lima, fale com Ben.\n"
    assert "<strong>Ben</strong>" in html  # the HTML part falls back to the built-in one


# ---------------------------------------------------------------- transport


def test_file_transport_overwrites_the_same_message_id(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "mail")
    message = EmailMessage()
    message["Message-ID"] = "<abc/../../etc@example.org>"
    message.set_content("one")
    assert transport.send(message).ok
    message.set_content("two")
    assert transport.send(message).ok
    [path] = (tmp_path / "mail").iterdir()
    assert path.parent == tmp_path / "mail"
    assert read_eml(path).get_content().strip() == "two"


def test_file_transport_keeps_its_mail_private(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "outbox" / "mail")
    message = EmailMessage()
    message["Message-ID"] = "<private@example.org>"
    message.set_content("names and addresses")
    previous = os.umask(0o022)  # a usual umask: privacy must not depend on a strict one
    try:
        assert transport.send(message).ok
    finally:
        os.umask(previous)
    [path] = (tmp_path / "outbox" / "mail").iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_build_transport_resolves_the_folder_against_the_data_folder(tmp_path: Path) -> None:
    config = NotifyConfig.model_validate({"transport": {"kind": "file", "path": "out"}})
    transport = build_transport(config, tmp_path / "config", tmp_path / "data")
    assert isinstance(transport, FileTransport)
    assert transport.folder == tmp_path / "data" / "out"


@pytest.mark.postgres
def test_two_workers_never_claim_the_same_row(pg_url: str) -> None:
    engine = create_engine(pg_url)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    try:
        queue(factory, alert(), alert(fingerprint="g" * 16))
        with factory() as first, factory() as second:
            mine = claim_due(first, now=NOW, lease=timedelta(minutes=5), limit=1)
            theirs = claim_due(second, now=NOW, lease=timedelta(minutes=5))  # skips locked
            assert len(mine) == 1
            assert len(theirs) == 1
            assert mine[0].idempotency_key != theirs[0].idempotency_key
            first.commit()
            second.commit()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("last_attended", "subject", "body"),
    [
        ("2024-10-02", "Mentoring: you and Ben have not met since 2 Oct 2024", "since 2 Oct 2024"),
        ("never", "Mentoring: you and Ben have not met yet", "in Engineering mentoring yet"),
        ("", "Mentoring: you and Ben have no recent session on record", "no recent"),
    ],
)
def test_subject_and_body_follow_the_rule_facts(
    sessions: sessionmaker[Db], last_attended: str, subject: str, body: str
) -> None:
    queue(sessions, alert(facts={"last_attended": last_attended, "next_scheduled": "none"}))
    [row] = rows(sessions)
    message = render(row, sender=SENDER)
    text, html = parts(message)
    assert message["Subject"] == subject
    assert body in text
    assert body in html.replace("\n", " ")


# ---------------------------------------------------------------- routes, ladders, inhibition


def router(**notify: object) -> Router:
    config = MentorpulseConfig.model_validate(
        {
            "timezone": "Europe/Berlin",
            "programs": [
                {"id": "eng", "cadence": {"every": "14d"}, "admins": ["eng-admin", "x@ex.org"]},
                {"id": "ops", "cadence": {"every": "14d"}},
            ],
            "contacts": {
                "eng-admin": {"email": "admin@example.org", "timezone": "America/New_York"},
                "hr": {"email": "hr@example.org"},
            },
            "notify": notify,
        }
    )
    return Router.from_config(config)


def recipients(notes: list[Notification]) -> list[str]:
    return sorted(n.recipient for n in notes)


def test_routes_match_rule_severity_program_and_labels_first_match_wins() -> None:
    r = router(
        routes=[
            {"match": {"severity": ["critical"]}, "to": ["hr"]},
            {"match": {"rules": ["monthly-gap"], "programs": ["eng"]}, "to": ["program_admin"]},
            {"match": {"labels": {"kind": "cadence_gap"}}, "to": ["mentee"]},
        ]
    )
    at = FIRED
    assert recipients(r.notifications([alert(severity="critical")], now=at)) == ["hr@example.org"]
    assert recipients(r.notifications([alert()], now=at)) == ["admin@example.org", "x@ex.org"]
    other = alert(rule_id="other", rule_kind="cadence_gap")
    assert recipients(r.notifications([other], now=at)) == ["ben@example.org"]
    assert r.notifications([alert(rule_id="other")], now=at) == []  # no route matched


def test_continue_lets_a_finding_take_several_routes() -> None:
    r = router(
        routes=[
            {"to": ["mentor"], "continue": True},
            {"match": {"programs": ["eng"]}, "to": ["eng-admin"]},
        ]
    )
    notes = r.notifications([alert()], now=FIRED)
    assert recipients(notes) == ["admin@example.org", "ana@example.org"]
    assert {n.template for n in notes} == {"reminder", "escalation"}


def test_the_ladder_climbs_with_time_and_repeats_while_firing(
    sessions: sessionmaker[Db],
) -> None:
    """What reaches the outbox as a finding keeps firing: the deciding runs are many, the
    emails are one per rung and repeat."""
    r = router(
        routes=[
            {
                "to": ["mentor"],
                "repeat_every": "7d",
                "escalate": [{"after": "14d", "to": ["program_admin"]}],
            }
        ]
    )

    def queued_at(days: float) -> list[tuple[str, str]]:
        """The emails a notify run at ``days`` adds to the outbox (it keeps one per key)."""
        now = FIRED + timedelta(days=days)
        before = {row.id for row in rows(sessions)}
        with sessions.begin() as db:
            enqueue(db, r.notifications([alert()], now=now), now=now)
        return sorted(
            (row.recipient, row.template) for row in rows(sessions) if row.id not in before
        )

    mentor = ("ana@example.org", "reminder")
    assert queued_at(0) == [mentor]
    assert queued_at(0) == [], "a re-run sends nothing twice"
    assert queued_at(6.9) == [], "not a week yet: nothing new to send"
    assert queued_at(7) == [mentor]
    assert queued_at(7.5) == []
    assert queued_at(14) == [
        ("admin@example.org", "escalation"),
        ("ana@example.org", "reminder"),
        ("x@ex.org", "escalation"),
    ]
    assert queued_at(14) == []


def test_a_consecutive_misses_finding_silences_the_cadence_gap_reminder_of_its_pair() -> None:
    gap = alert(rule_kind="cadence_gap", pairing_key="p1")
    misses = alert(fingerprint="m" * 16, rule_id="misses", rule_kind="consecutive_misses")
    same_pair = replace(misses, pairing_key="p1")
    other_pair = replace(misses, pairing_key="p2")
    assert should_notify(gap, firing=[gap, same_pair], inhibit=router().inhibit) == (
        False,
        "inhibited by misses",
    )
    assert should_notify(gap, firing=[gap, other_pair], inhibit=router().inhibit) == (True, "first")
    pending = replace(same_pair, state="pending")
    assert should_notify(gap, firing=[gap, pending], inhibit=router().inhibit)[0]
    notes = router().notifications([gap, same_pair], now=FIRED)
    assert [n.payload["rule_id"] for n in notes] == ["misses"]


def test_a_finding_under_a_silence_notifies_nobody() -> None:
    everyone = router(routes=[{"to": ["mentor", "mentee", "hr", "program_admin"]}])
    assert everyone.notifications([alert(silenced=True)], now=FIRED) == []


def test_the_mentee_is_addressed_about_the_mentor() -> None:
    [note] = router(routes=[{"to": ["mentee"]}]).notifications([alert()], now=FIRED)
    assert note.payload["recipient_name"] == "Ben"
    assert note.payload["other_name"] == "Ana Lima"
    text, _html = parts(render(row_of(note), sender=SENDER))
    assert text.startswith("Hello Ben,")
    assert "You and Ana Lima have not had" in text


def test_an_escalation_shows_the_day_in_the_admins_zone() -> None:
    late = alert(facts={"last_attended": "2024-10-03T02:30:00+00:00"})
    [note] = router(routes=[{"to": ["eng-admin"]}]).notifications([late], now=FIRED)
    assert note.template == "escalation"
    assert note.payload["last_met_display"] == "2 Oct 2024"  # 22:30 in New York
    message = render(row_of(note), sender=SENDER)
    assert message["Subject"] == "Mentoring: Ana Lima and Ben need attention"
    text, html = parts(message)
    assert "Ana Lima and Ben (Engineering mentoring): no session since 2 Oct 2024" in text
    assert "<strong>Ana Lima and Ben (Engineering mentoring)</strong>" in html


def test_digest_html_escapes_every_item() -> None:
    evil = alert(mentee_name="<img src=x onerror=alert(1)>")
    [note] = router(routes=[{"to": ["hr"], "digest": "1d"}]).notifications([evil], now=FIRED)
    digest = OutboxMessage(
        recipient="hr@example.org",
        template="digest",
        message_id="<d@example.org>",
        payload={"recipient_name": None, "items": [{"template": note.template, **note.payload}]},
    )
    text, html = parts(render(digest, sender=SENDER))
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x onerror=alert(1)>" in text


def row_of(note: Notification) -> OutboxMessage:
    return OutboxMessage(**outbox_row(note, now=FIRED))


@pytest.mark.parametrize(
    ("notify", "where"),
    [
        ({"routes": [{"to": ["boss"]}]}, ("notify", "routes", 0, "to", 0)),
        (
            {"routes": [{"escalate": [{"after": "1d", "to": ["mentor", "nobody"]}]}]},
            ("notify", "routes", 0, "escalate", 0, "to", 1),
        ),
    ],
)
def test_an_undefined_receiver_is_a_config_error_that_says_where(
    notify: dict[str, object], where: tuple[object, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        MentorpulseConfig.model_validate({"notify": notify})
    assert "undefined receiver" in str(caught.value)
    [error] = caught.value.errors()
    assert error["ctx"]["error"].at == where


# ---------------------------------------------------------------- leases


def test_a_batch_that_outlives_its_lease_hands_the_rest_back_unsent(
    sessions: sessionmaker[Db], tmp_path: Path
) -> None:
    queue(sessions, *(alert(fingerprint=f"{n:016x}") for n in range(3)))
    clock = [NOW]

    class SlowTransport(FileTransport):
        def send(self, message: EmailMessage) -> SendResult:
            clock[0] += timedelta(minutes=4, seconds=45)  # the first mail took ages
            return super().send(message)

    counts = dispatch(
        sessions,
        SlowTransport(tmp_path),
        sender=SENDER,
        now=NOW,
        limit=3,
        clock=lambda: clock[0],
    )
    assert (counts.sent, counts.released) == (1, 2)
    assert len(list(tmp_path.glob("*.eml"))) == 1
    by_status = sorted((r.status, r.attempts, r.lease_until) for r in rows(sessions))
    assert by_status == [("pending", 0, None), ("pending", 0, None), ("sent", 1, None)]
    assert dispatch(sessions, FileTransport(tmp_path), sender=SENDER, now=NOW).sent == 2


def test_a_worker_that_lost_its_lease_does_not_overwrite_the_new_owner(
    sessions: sessionmaker[Db],
) -> None:
    queue(sessions, alert())
    with sessions.begin() as db:
        [mine] = claim_due(db, now=NOW, lease=timedelta(minutes=5))
        my_id, my_lease = mine.id, mine.lease_until
    later = NOW + timedelta(minutes=6)
    with sessions.begin() as db:
        [theirs] = claim_due(db, now=later, lease=timedelta(minutes=5))
        mark_sent(db, theirs.id, now=later, lease_until=theirs.lease_until)
    with sessions.begin() as db:
        assert my_lease is not None
        assert not mark_failed(
            db, my_id, error="451 late", retryable=True, now=later, lease_until=my_lease
        )
    [row] = rows(sessions)
    assert (row.status, row.last_error) == ("sent", None)


def test_the_hr_receiver_needs_to_know_who_hr_is() -> None:
    with pytest.raises(ValidationError, match="needs a contact named hr"):
        MentorpulseConfig.model_validate({"notify": {"routes": [{"to": ["hr"]}]}})
    config = MentorpulseConfig.model_validate(
        {"notify": {"hr": ["people@example.org"], "routes": [{"to": ["hr"]}]}}
    )
    [note] = Router.from_config(config).notifications([alert()], now=FIRED)
    assert (note.recipient, note.template) == ("people@example.org", "escalation")

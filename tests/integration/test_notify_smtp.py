"""The notifier against a real SMTP server (aiosmtpd with STARTTLS and AUTH).

Routing decisions come from the Router, rows from the real outbox on SQLite and
PostgreSQL, mail from SmtpTransport over loopback TLS; what the server received is the
truth every test checks.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue, told
from mentorpulse.notify.route import Notification, Router, notifications_for
from mentorpulse.notify.transport import SendResult, SmtpTransport
from mentorpulse.storage.models import Base, OutboxMessage
from mentorpulse.storage.outbox import retry
from tests.notify_support import FIRED, alert
from tests.servers.smtpd import PASSWORD, SmtpServer, smtp_server

SENDER = "mentorpulse@example.org"


def router(**notify: Any) -> Router:
    config = MentorpulseConfig.model_validate(
        {
            "timezone": "Europe/Berlin",
            "programs": [
                {"id": "eng", "cadence": {"every": "14d"}, "admins": ["eng-admin"]},
            ],
            "contacts": {
                "eng-admin": {"email": "admin@example.org", "timezone": "Europe/Berlin"},
                "hr": {"email": "hr@example.org", "name": "People team"},
            },
            "notify": notify,
        }
    )
    return Router.from_config(config)


def smtp(server: SmtpServer, **changes: Any) -> SmtpTransport:
    return SmtpTransport(
        SmtpConfig.model_validate(server.config(**changes)), ca_file=server.ca_file
    )


def queue(sessions: sessionmaker[Db], notes: list[Notification], now: datetime) -> int:
    with sessions.begin() as db:
        return enqueue(db, notes, now=now, domain="example.org")


def statuses(sessions: sessionmaker[Db]) -> Counter[str]:
    with sessions() as db:
        return Counter(db.scalars(select(OutboxMessage.status)))


def send(sessions: sessionmaker[Db], server: SmtpServer, now: datetime) -> Any:
    return dispatch(sessions, smtp(server), sender=SENDER, now=now, domain="example.org")


# ---------------------------------------------------------------- delivery


def test_a_reminder_arrives_over_starttls_with_auth(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    queue(sessions, notifications_for([alert()], now=FIRED), FIRED)
    counts = send(sessions, server, FIRED)
    assert (counts.sent, counts.failed, counts.retried) == (1, 0, 0)
    [message] = server.recorder.messages
    assert server.recorder.envelopes == [(SENDER, ["mentor0@example.org"])]
    assert message["Subject"] == "Mentoring: you and Mentee 0 have not met since 10 Feb 2026"
    assert message.get_content_type() == "multipart/alternative"
    with sessions() as db:
        row = db.scalars(select(OutboxMessage)).one()
    assert (row.status, row.message_id) == ("sent", message["Message-ID"])
    assert message["Message-ID"].endswith("@example.org>")
    # A second run finds nothing due and sends nothing.
    queue(sessions, notifications_for([alert()], now=FIRED), FIRED)
    assert send(sessions, server, FIRED + timedelta(hours=1)).sent == 0
    assert len(server.recorder.messages) == 1


def test_implicit_tls_delivers_too(tmp_path: Path) -> None:
    with smtp_server(tmp_path, implicit_tls=True) as server:
        transport = smtp(server, security="tls", port=server.port)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = SENDER, "a@example.org", "hi"
        message.set_content("hello")
        assert transport.send(message) == SendResult(ok=True)
        transport.close()
        assert [m["Subject"] for m in server.recorder.messages] == ["hi"]


def test_a_server_that_refuses_then_recovers_loses_and_doubles_nothing(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    alerts = [alert(n) for n in range(5)]
    queue(sessions, notifications_for(alerts, now=FIRED), FIRED)
    server.recorder.refuse = "451 4.3.0 Mail server temporarily unavailable"
    counts = send(sessions, server, FIRED)
    assert (counts.sent, counts.retried) == (0, 5)
    assert server.recorder.messages == []
    with sessions() as db:
        rows = list(db.scalars(select(OutboxMessage)))
    assert {r.status for r in rows} == {"pending"}
    assert all("451 4.3.0" in (r.last_error or "") for r in rows)
    assert all(r.next_attempt_at > FIRED for r in rows)  # backed off, not hammered

    # Still refusing at the next tick; then the server recovers.
    later = max(r.next_attempt_at for r in rows)
    assert send(sessions, server, later).retried == 5
    server.recorder.refuse = None
    with sessions() as db:
        due = max(r.next_attempt_at for r in db.scalars(select(OutboxMessage)))
    assert send(sessions, server, due).sent == 5
    assert send(sessions, server, due + timedelta(hours=2)).sent == 0
    assert sorted(m["To"].addresses[0].addr_spec for m in server.recorder.messages) == sorted(
        a.mentor_email for a in alerts
    )
    assert statuses(sessions) == Counter({"sent": 5})


def test_a_server_that_is_down_is_retried_later(tmp_path: Path, database_url: str) -> None:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    try:
        queue(factory, notifications_for([alert()], now=FIRED), FIRED)
        with smtp_server(tmp_path) as server:
            pass  # started and stopped: nobody listens on its port any more
        assert send(factory, server, FIRED).retried == 1
        with factory() as db:
            row = db.scalars(select(OutboxMessage)).one()
        assert row.status == "pending"
        assert "ConnectionRefusedError" in (row.last_error or "")
    finally:
        engine.dispose()


def test_a_permanent_refusal_is_recorded_and_not_retried(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    queue(sessions, notifications_for([alert()], now=FIRED), FIRED)
    server.recorder.refuse = "550 5.1.1 Mailbox does not exist"
    assert send(sessions, server, FIRED).failed == 1
    server.recorder.refuse = None
    assert send(sessions, server, FIRED + timedelta(days=1)).failed == 0
    with sessions() as db:
        row = db.scalars(select(OutboxMessage)).one()
    assert row.status == "failed"
    assert "550 5.1.1" in (row.last_error or "")
    assert server.recorder.messages == []
    # The operator can put it back once the address is fixed.
    with sessions.begin() as db:
        assert retry(db, now=FIRED + timedelta(days=1)) == 1
    assert send(sessions, server, FIRED + timedelta(days=1)).sent == 1


def test_a_wrong_password_never_reaches_logs_or_the_outbox(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    queue(sessions, notifications_for([alert()], now=FIRED), FIRED)
    wrong = "wrong-" + PASSWORD
    with structlog.testing.capture_logs() as logs:
        counts = dispatch(
            sessions, smtp(server, password=wrong), sender=SENDER, now=FIRED, domain="example.org"
        )
    assert counts.retried == 1  # the message is fine; the credentials need fixing
    with sessions() as db:
        row = db.scalars(select(OutboxMessage)).one()
    assert "535" in (row.last_error or "")
    assert any(entry["event"] == "smtp_auth_failed" for entry in logs)
    for text in [repr(logs), row.last_error or ""]:
        assert wrong not in text
        assert PASSWORD not in text


class CrashAfterSend:
    """The process dies after the server said 250, before the outbox row is marked."""

    def __init__(self, inner: SmtpTransport) -> None:
        self.inner = inner

    def send(self, message: EmailMessage) -> SendResult:
        result = self.inner.send(message)
        assert result.ok
        raise KeyboardInterrupt  # not an Exception: nothing in dispatch may swallow it

    def close(self) -> None:
        self.inner.close()


def test_a_crash_between_send_and_commit_resends_with_the_same_message_id(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    queue(sessions, notifications_for([alert()], now=FIRED), FIRED)
    with pytest.raises(KeyboardInterrupt):
        dispatch(sessions, CrashAfterSend(smtp(server)), sender=SENDER, now=FIRED)
    assert statuses(sessions) == Counter({"sending": 1})
    # While the dead worker's lease runs, nobody sends it; afterwards, once more.
    assert send(sessions, server, FIRED + timedelta(minutes=4)).sent == 0
    assert send(sessions, server, FIRED + timedelta(minutes=6)).sent == 1
    first, second = server.recorder.messages
    assert first["Message-ID"] == second["Message-ID"]
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()
    with sessions() as db:
        row = db.scalars(select(OutboxMessage)).one()
    assert (row.status, row.attempts) == ("sent", 2)


def test_an_at_most_once_row_whose_sender_died_becomes_unknown(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    [note] = notifications_for([alert()], now=FIRED)
    queue(sessions, [replace(note, recipient="hr@example.org", at_most_once=True)], FIRED)
    with pytest.raises(KeyboardInterrupt):
        dispatch(sessions, CrashAfterSend(smtp(server)), sender=SENDER, now=FIRED)
    with structlog.testing.capture_logs() as logs:
        assert send(sessions, server, FIRED + timedelta(minutes=6)).sent == 0
    assert len(server.recorder.messages) == 1  # never twice
    assert statuses(sessions) == Counter({"unknown": 1})
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["outbox_delivery_unknown"]


def test_names_with_line_breaks_cannot_add_recipients_over_smtp(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    evil = alert(mentee_name="Ben\r\nBcc: spy@evil.example", mentor_name="Ana\nTo: x@evil.example")
    queue(sessions, notifications_for([evil], now=FIRED), FIRED)
    assert send(sessions, server, FIRED).sent == 1
    [(_sender, rcpts)] = server.recorder.envelopes
    assert rcpts == ["mentor0@example.org"]
    [message] = server.recorder.messages
    assert message["Bcc"] is None
    assert len(message.get_all("To") or []) == 1


# ---------------------------------------------------------------- digests, quiet hours


def test_an_admin_gets_one_daily_digest_not_one_mail_per_pair(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    route = router(routes=[{"to": ["program_admin"], "digest": "1d"}])
    morning = FIRED  # 10:00 in Berlin
    alerts = [alert(n) for n in range(12)]
    queue(sessions, route.notifications(alerts[:7], now=morning), morning)
    queue(sessions, route.notifications(alerts, now=morning + timedelta(hours=5)), morning)
    assert send(sessions, server, morning + timedelta(hours=6)).sent == 0  # window still open
    assert statuses(sessions) == Counter({"digest": 12})

    midnight_berlin = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    assert send(sessions, server, midnight_berlin).sent == 1
    [digest] = server.recorder.messages
    assert digest["To"].addresses[0].addr_spec == "admin@example.org"
    text = digest.get_body(("plain",)).get_content()
    assert all(f"Mentor {n} and Mentee {n}" in text for n in range(12))
    assert digest["Subject"] == "Mentoring digest: 12 updates"
    assert statuses(sessions) == Counter({"digested": 12, "sent": 1})
    # Nothing new: no empty digest the next day.
    assert send(sessions, server, midnight_berlin + timedelta(days=1)).sent == 0
    assert len(server.recorder.messages) == 1


def test_a_reminder_due_at_3am_their_time_waits_for_their_morning(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    route = router(send_window={"start": "08:00", "end": "20:00"})
    tokyo = alert(mentor_timezone="Asia/Tokyo", firing_since=datetime(2026, 3, 2, 18, tzinfo=UTC))
    three_am = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)  # 03:00 in Tokyo
    queue(sessions, route.notifications([tokyo], now=three_am), three_am)
    assert send(sessions, server, three_am).sent == 0
    assert send(sessions, server, datetime(2026, 3, 2, 22, 59, tzinfo=UTC)).sent == 0
    assert send(sessions, server, datetime(2026, 3, 2, 23, 0, tzinfo=UTC)).sent == 1  # 08:00
    [message] = server.recorder.messages
    assert message["To"].addresses[0].addr_spec == "mentor0@example.org"


# ---------------------------------------------------------------- escalation over weeks


def test_escalation_over_simulated_weeks_then_resolved(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    route = router(
        routes=[
            {
                "to": ["mentor"],
                "repeat_every": "7d",
                "escalate": [
                    {"after": "14d", "to": ["program_admin"]},
                    {"after": "33d", "to": ["hr"]},
                ],
                "send_resolved": True,
            }
        ],
        send_window={"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"]},
    )
    finding = alert()
    received: dict[int, list[str]] = {}
    for day in range(0, 36):
        now = FIRED + timedelta(days=day, hours=1)  # 11:00 Berlin every day
        before = len(server.recorder.messages)
        queue(sessions, route.notifications([finding], now=now), now)
        send(sessions, server, now)
        received[day] = [m["To"].addresses[0].addr_spec for m in server.recorder.messages[before:]]
    mentor, admin, hr = "mentor0@example.org", "admin@example.org", "hr@example.org"
    # Weekdays only: day 0 is a Monday, so day 28 is too; weekend items wait for Monday.
    assert {d: r for d, r in received.items() if r} == {
        0: [mentor],
        7: [mentor],
        14: [mentor, admin],
        21: [mentor, admin],
        28: [mentor, admin],
        35: [hr, mentor, admin],  # hr was due on day 33, a Saturday: it waited for Monday
    }

    resolved_at = FIRED + timedelta(days=36, hours=1)
    done = replace(finding, state="resolved", until=resolved_at)
    with sessions() as db:
        who = told(db, [done.episode])
    queue(sessions, route.resolved_notices([done], who, now=resolved_at), resolved_at)
    before = len(server.recorder.messages)
    assert send(sessions, server, resolved_at).sent == 3
    notices = server.recorder.messages[before:]
    assert sorted(m["To"].addresses[0].addr_spec for m in notices) == sorted([mentor, admin, hr])
    assert all(m["Subject"].startswith("Resolved:") for m in notices)
    # Re-running the stage does not tell anyone twice.
    queue(sessions, route.resolved_notices([done], who, now=resolved_at), resolved_at)
    assert send(sessions, server, resolved_at + timedelta(hours=1)).sent == 0


# ---------------------------------------------------------------- workers racing


@pytest.mark.postgres
def test_two_dispatchers_racing_on_postgresql_send_each_row_once(
    pg_url: str, server: SmtpServer
) -> None:
    engine = create_engine(pg_url, pool_size=4)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    try:
        alerts = [alert(n) for n in range(120)]
        queue(factory, notifications_for(alerts, now=FIRED), FIRED)
        # And 30 digest items for three admins, whose window has closed.
        digests = router(routes=[{"to": ["eng-admin", "a2@example.org", "a3@example.org"]}])
        items = [
            replace(n, digest=True, due=FIRED)
            for n in digests.notifications([alert(1000 + i) for i in range(10)], now=FIRED)
        ]
        assert len(items) == 30
        queue(factory, items, FIRED)
        start = threading.Barrier(2)
        results: list[int] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                start.wait()
                counts = dispatch(
                    factory, smtp(server), sender=SENDER, now=FIRED, limit=10, domain="example.org"
                )
                results.append(counts.sent)
            except BaseException as exc:  # surfaced to the test below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert sum(results) == 123
        ids = server.recorder.message_ids()
        assert len(ids) == 123
        assert len(set(ids)) == 123
        assert statuses(factory) == Counter({"sent": 123, "digested": 30})
        digest_mails = [m for m in server.recorder.messages if "digest" in m["Subject"]]
        assert sorted(m["To"].addresses[0].addr_spec for m in digest_mails) == [
            "a2@example.org",
            "a3@example.org",
            "admin@example.org",
        ]
        assert all("10 updates" in m["Subject"] for m in digest_mails)
    finally:
        engine.dispose()


def test_the_transport_retries_a_4xx_with_growing_jittered_pauses(server: SmtpServer) -> None:
    pauses: list[float] = []
    transport = SmtpTransport(
        SmtpConfig.model_validate(server.config(retries=3, backoff="2s")),
        ca_file=server.ca_file,
        sleep=pauses.append,
    )
    server.recorder.refuse = "421 4.7.0 Too many connections, slow down"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, "a@example.org", "hi"
    message.set_content("hello")
    result = transport.send(message)
    assert (result.ok, result.retryable) == (False, True)
    assert len(pauses) == 3
    for pause, base in zip(pauses, (2, 4, 8), strict=True):
        assert base <= pause <= base * 1.25
    server.recorder.refuse = None
    assert transport.send(message).ok
    transport.close()
    assert len(server.recorder.messages) == 1

"""Attendance checks end to end, on SQLite and PostgreSQL: the notify stage mails each
asked party one question per session, ever; the links in the email open the service's
answer page (a GET records nothing), its button POSTs the answer, and the session turns
held, missed or unknown (with a finding for the program's admins) at once.

Real calendar files, the real sync, sessions, evaluate and notify stages, the file
transport's .eml files and the service's own Starlette app.
"""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select, text
from structlog.testing import capture_logs
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.service.http import Health, create_app
from mentorpulse.signing import ANSWER, SIGN_IN, Signer
from mentorpulse.stages.explain import explain
from mentorpulse.storage.answers import record_answer
from mentorpulse.storage.keys import signing_keys
from mentorpulse.storage.models import (
    AttendanceAnswer,
    Evidence,
    Finding,
    MentoringSession,
    OutboxMessage,
)
from tests.integration.test_sessions_stage import MENTEE, MENTOR, NOW, vevent

# Starlette's TestClient asks for httpx2, which is not installed here.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

ADMIN = "lead-admin@example.org"
YES_BUTTON = 'name="answer" value="yes"'
NO_BUTTON = 'name="answer" value="no"'
SLOT = NOW - timedelta(days=2)  # over, and asked about (after 2h, within 7d)
BASE = "https://mentoring.example.org/mp/"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


Deploy = Callable[..., tuple[stages.Context, Clock]]


@pytest.fixture
def deploy(tmp_path: Path, database_url: str) -> Deploy:
    """A program with attendance checks for both parties; ``extra`` YAML is appended."""

    def make(
        events: list[str] | None = None,
        *,
        check: str = "{ask: [mentor, mentee]}",
        extra: str = "",
        mentor_zone: str = "Europe/London",
    ) -> tuple[stages.Context, Clock]:
        (tmp_path / "calendars").mkdir()
        body = "".join(events if events is not None else [vevent("s1@a", SLOT)])
        (tmp_path / "calendars" / f"{MENTOR}.ics").write_text(
            f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n"
        )
        (tmp_path / "roster.csv").write_text(
            "program,mentor_email,mentee_email,started_on,mentor_name,mentee_name,"
            "mentor_timezone,mentee_timezone\n"
            f"lead,{MENTOR},{MENTEE},2025-12-01,Ana,Ben,{mentor_zone},America/New_York\n"
        )
        (tmp_path / "mentorpulse.yaml").write_text(
            f"database: {database_url}\n"
            "timezone: Europe/Berlin\n"
            "sources:\n  - id: cal\n    kind: ics\n    path: calendars\n"
            "roster:\n  path: roster.csv\n"
            f"service:\n  http:\n    public_url: {BASE}\n"
            "programs:\n  - id: lead\n    name: Leadership\n"
            "    cadence: {every: 28d, grace: 7d}\n"
            f"    admins: [{ADMIN}]\n"
            f"    attendance_check: {check}\n" + extra
        )
        clock = Clock()
        ctx = stages.Context.open(tmp_path / "mentorpulse.yaml", clock=clock)
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        return ctx, clock

    return make


def questions(ctx: stages.Context) -> list[OutboxMessage]:
    with ctx.db() as db:
        rows = db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == "attendance_check")
            .order_by(OutboxMessage.recipient)
        ).all()
        db.expunge_all()
        return list(rows)


def mails(ctx: stages.Context) -> list[EmailMessage]:
    folder = ctx.config.resolve_state("outbox")
    found = []
    for path in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def links(message: EmailMessage) -> dict[str, str]:
    """The yes/no links of a question email, as paths of the service."""
    found = re.findall(r"(https://\S+/answer/\S+\?a=(yes|no))", text_of(message))
    return {
        choice: urlsplit(url).path.removeprefix("/mp") + "?a=" + choice for url, choice in found
    }


def session_state(ctx: stages.Context) -> tuple[str, list[str]]:
    with ctx.db() as db:
        session = db.scalars(select(MentoringSession)).one()
        kinds = db.scalars(
            select(Evidence.kind).where(Evidence.session_id == session.id).order_by(Evidence.rank)
        ).all()
        return session.outcome, list(kinds)


def client(ctx: stages.Context) -> Any:
    """The service's own app, over Starlette's test client (imported here, under the
    warning filter: it warns when imported)."""
    from starlette.testclient import TestClient

    return TestClient(create_app(ctx, Health(NOW)))


def answer_requests(web: Any) -> dict[tuple[str, str], float]:
    """The process's answer-page counters, as /metrics serves them."""
    found = re.findall(
        r'^mentorpulse_answer_requests_total\{method="(\w+)",result="(\w+)"\} (\S+)$',
        web.get("/metrics").text,
        flags=re.MULTILINE,
    )
    return {(method, result): float(value) for method, result, value in found}


def firing(ctx: stages.Context) -> list[tuple[str, str]]:
    with ctx.db() as db:
        return [
            (f.rule_id, f.state)
            for f in db.scalars(select(Finding).where(Finding.state != "resolved"))
        ]


def test_one_question_per_session_and_person_whose_links_answer_it(deploy: Deploy) -> None:
    ctx, clock = deploy()
    assert session_state(ctx)[0] == "presumed_held"
    stages.send_notifications(ctx)
    stages.send_notifications(ctx)
    asked = questions(ctx)
    assert sorted(q.recipient for q in asked) == [MENTOR, MENTEE]
    assert {q.status for q in asked} == {"sent"}
    # The session changes (the mentor's calendar is edited): nobody is asked again.
    (ctx.config.base_dir / "calendars" / f"{MENTOR}.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        f"{vevent('s1@a', SLOT, sequence=2, minutes=45)}END:VCALENDAR\r\n"
    )
    clock.now += timedelta(hours=1)
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stages.send_notifications(ctx)
    assert len(questions(ctx)) == 2
    sent = mails(ctx)
    assert len(sent) == 2
    to_ana = next(m for m in sent if MENTOR in str(m["To"]))
    # Ben, on the mentor's own clock (London: 12:00 UTC is 12:00 GMT on 18 Mar).
    assert str(to_ana["Subject"]) == "Did your session with Ben on Wed 18 Mar, 12:00 take place?"
    assert "(your time)" in text_of(to_ana)
    to_ben = next(m for m in sent if MENTEE in str(m["To"]))
    assert "Wed 18 Mar, 08:00" in str(to_ben["Subject"])  # New York, on daylight time
    ana, ben = links(to_ana), links(to_ben)
    assert set(ana) == {"yes", "no"}
    assert ana["yes"].split("?")[0] == ana["no"].split("?")[0]
    assert ana["yes"].split("?")[0] != ben["yes"].split("?")[0]  # bound to the person

    web = client(ctx)
    # A GET (what a mail scanner does) shows the question and one button, records nothing.
    page = web.get(ana["yes"])
    assert page.status_code == 200
    assert 'id="answer-form"' in page.text
    assert 'method="post"' in page.text
    assert YES_BUTTON in page.text
    assert NO_BUTTON not in page.text
    assert "Did your session with Ben on Wed 18 Mar, 12:00 (your time) take place?" in page.text
    both = web.get(ana["yes"].split("?")[0])
    assert YES_BUTTON in both.text
    assert NO_BUTTON in both.text
    with ctx.db() as db:
        assert db.scalars(select(AttendanceAnswer)).all() == []
    assert session_state(ctx)[0] == "presumed_held"

    # The POST records it, and the session is judged again at once.
    done = web.post(ana["yes"], data={"answer": "yes"})
    assert done.status_code == 200
    assert 'id="answer-recorded" data-answer="yes"' in done.text
    outcome, kinds = session_state(ctx)
    assert outcome == "held"
    assert kinds[0] == "participant_confirmation"

    # Ben says no: the pair disagree; the session is unknown and the admin hears of it.
    assert web.post(ben["no"], data={"answer": "no"}).status_code == 200
    outcome, kinds = session_state(ctx)
    assert outcome == "unknown"
    assert kinds[:3] == [
        "attendance_disputed",
        "participant_confirmation",
        "participant_confirmation",
    ]
    stages.evaluate_rules(ctx)
    assert ("attendance_disputed", "firing") in firing(ctx)
    # explain shows who said what, and the rule's verdict.
    (view,) = explain(ctx, f"{MENTOR}:{MENTEE}").pairings
    (shown,) = view.sessions
    assert {(a.email, a.happened) for a in shown.answers} == {(MENTOR, True), (MENTEE, False)}
    assert any("mentee answered that it did not take place" in e for e in shown.evidence)
    (rule,) = [r for r in view.rules if r.rule == "attendance_disputed"]
    assert rule.verdict == "holds"
    assert rule.finding is not None
    stages.send_notifications(ctx)
    with ctx.db() as db:
        told = db.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.template == "escalation")
        ).all()
    assert told == [ADMIN]
    (to_admin,) = [m for m in mails(ctx) if ADMIN in str(m["To"])]
    assert "disagree on whether their session of 2026-03-18" in text_of(to_admin)

    # Ben changes his mind (answering again replaces his answer): held, dispute over.
    again = web.post(ben["no"], data={"answer": "yes"})
    assert 'data-answer="yes"' in again.text
    assert session_state(ctx)[0] == "held"
    stages.evaluate_rules(ctx)
    assert ("attendance_disputed", "firing") not in firing(ctx)
    with ctx.db() as db:
        answers = {(a.email, a.happened) for a in db.scalars(select(AttendanceAnswer))}
    assert answers == {(MENTOR, True), (MENTEE, True)}


def test_a_no_turns_the_session_missed(deploy: Deploy) -> None:
    ctx, _clock = deploy(check="{ask: [mentor]}")
    stages.send_notifications(ctx)
    (only,) = mails(ctx)
    assert MENTOR in str(only["To"])
    no = links(only)["no"]
    page = client(ctx).get(no)
    assert NO_BUTTON in page.text
    assert YES_BUTTON not in page.text
    done = client(ctx).post(no, data={"answer": "no"})
    assert 'data-answer="no"' in done.text
    assert session_state(ctx) == (
        "missed",
        ["participant_confirmation", "accepted", "accepted", "time_passed"],
    )


def test_expired_and_forged_links_get_their_pages_and_the_log_no_token(deploy: Deploy) -> None:
    ctx, clock = deploy(check="{ask: [mentor], answer_within: 3d}")
    stages.send_notifications(ctx)
    (only,) = mails(ctx)
    yes = links(only)["yes"]
    token = yes.split("/")[-1].split("?")[0]
    web = client(ctx)
    before = answer_requests(web)
    with capture_logs() as logs:
        # A forged link: a character changed; a link for a sign-in; someone else's address.
        forged = yes.replace(token, token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"))
        assert web.get(forged).status_code == 400
        assert 'id="link-invalid"' in web.get(forged).text
        with ctx.db() as db:
            keys = signing_keys(db)
            session_id = db.scalars(select(MentoringSession.id)).one()
        other_use = Signer(keys, SIGN_IN).sign({"s": session_id, "e": MENTOR, "d": 2**31})
        assert web.get(f"/answer/{other_use}").status_code == 400
        stranger = Signer(keys, ANSWER).sign({"s": session_id, "e": "eve@example.org", "d": 2**31})
        assert web.post(f"/answer/{stranger}", data={"answer": "no"}).status_code == 400
        assert web.post(f"/answer/{token[:20]}", data={"answer": "no"}).status_code == 400
        # The question closes answer_within after the session's end.
        clock.now = SLOT + timedelta(days=3, hours=2)
        expired = web.get(yes)
        assert expired.status_code == 410
        assert 'id="link-expired"' in expired.text
        assert "expired" in expired.text
        late = web.post(yes, data={"answer": "yes"})
        assert late.status_code == 410
        assert 'id="link-expired"' in late.text
    with ctx.db() as db:
        assert db.scalars(select(AttendanceAnswer)).all() == []
    assert answer_requests(web) == {
        **before,
        ("GET", "invalid"): before.get(("GET", "invalid"), 0) + 3,
        ("POST", "invalid"): before.get(("POST", "invalid"), 0) + 2,
        ("GET", "expired"): before.get(("GET", "expired"), 0) + 1,
        ("POST", "expired"): before.get(("POST", "expired"), 0) + 1,
    }
    refused = [e for e in logs if e["event"] == "answer_link_refused"]
    assert {e["reason"] for e in refused} == {"invalid", "expired"}
    assert len(refused) == 7
    for entry in logs:
        for value in entry.values():
            assert token[:20] not in str(value)
            assert other_use[:20] not in str(value)
    assert session_state(ctx)[0] == "presumed_held"  # no answer: confirmed by default


def test_questions_wait_for_the_recipients_morning_and_digest(deploy: Deploy) -> None:
    # NOW is 12:00 UTC: past midnight in Auckland, so the mentor's question waits for 08:00.
    ctx, clock = deploy(
        [vevent("s1@a", SLOT), vevent("s2@a", SLOT + timedelta(days=1))],
        check="{ask: [mentor], digest: 1d}",
        extra="notify:\n  send_window: {start: '08:00', end: '20:00'}\n",
        mentor_zone="Pacific/Auckland",
    )
    stages.send_notifications(ctx)
    asked = questions(ctx)
    assert len(asked) == 2
    assert {q.status for q in asked} == {"digest"}
    local = [q.next_attempt_at.astimezone(ZoneInfo("Pacific/Auckland")) for q in asked]
    assert {(t.hour, t.minute) for t in local} == {(8, 0)}
    assert mails(ctx) == []
    clock.now = max(q.next_attempt_at for q in asked) + timedelta(minutes=1)
    stages.send_notifications(ctx)
    (digest,) = mails(ctx)
    body = text_of(digest)
    assert body.count("?a=yes") == 2
    assert body.count("?a=no") == 2
    assert "with Ben on Thu 19 Mar, 01:00:" in body  # Auckland
    assert "with Ben on Fri 20 Mar, 01:00:" in body
    stages.send_notifications(ctx)
    assert len(mails(ctx)) == 1


def test_a_question_held_back_is_dropped_when_the_session_is_cancelled(deploy: Deploy) -> None:
    ctx, clock = deploy(
        check="{ask: [mentor]}",
        extra="notify:\n  send_window: {start: '08:00', end: '20:00'}\n",
        mentor_zone="Pacific/Auckland",  # 01:00 there: the question waits for 08:00
    )
    stages.send_notifications(ctx)
    (waiting,) = questions(ctx)
    assert waiting.status == "pending"
    (ctx.config.base_dir / "calendars" / f"{MENTOR}.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        f"{vevent('s1@a', SLOT, sequence=1, status='CANCELLED')}END:VCALENDAR\r\n"
    )
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    assert session_state(ctx)[0] == "cancelled"
    clock.now = waiting.next_attempt_at + timedelta(minutes=1)
    stages.send_notifications(ctx)
    (dropped,) = questions(ctx)
    assert dropped.status == "cancelled"
    assert mails(ctx) == []


def test_an_oversized_answer_is_refused(deploy: Deploy) -> None:
    ctx, _clock = deploy(check="{ask: [mentor]}")
    stages.send_notifications(ctx)
    (only,) = mails(ctx)
    flood = client(ctx).post(links(only)["yes"], data={"answer": "yes", "x": "y" * 5000})
    assert flood.status_code == 413
    with ctx.db() as db:
        assert db.scalars(select(AttendanceAnswer)).all() == []


def test_a_form_of_too_many_fields_gets_the_invalid_page(deploy: Deploy) -> None:
    ctx, _clock = deploy(check="{ask: [mentor]}")
    stages.send_notifications(ctx)
    (only,) = mails(ctx)
    fields = {"answer": "yes", **{f"f{i}": "x" for i in range(60)}}
    refused = client(ctx).post(links(only)["yes"], data=fields)
    assert refused.status_code == 400
    assert 'id="link-invalid"' in refused.text
    with ctx.db() as db:
        assert db.scalars(select(AttendanceAnswer)).all() == []


def test_a_database_error_gets_our_error_page_and_a_log_line_without_the_token(
    deploy: Deploy,
) -> None:
    ctx, _clock = deploy(check="{ask: [mentor]}")
    stages.send_notifications(ctx)
    (only,) = mails(ctx)
    yes = links(only)["yes"]
    token = yes.split("/")[-1].split("?")[0]
    with ctx.db.begin() as db:
        db.execute(text("DROP TABLE attendance_answers"))
    web = client(ctx)
    with capture_logs() as logs:
        shown, posted = web.get(yes), web.post(yes, data={"answer": "yes"})
    for page in (shown, posted):
        assert page.status_code == 500
        assert 'id="answer-failed"' in page.text
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert [e["method"] for e in logs if e["event"] == "answer_page_failed"] == ["GET", "POST"]
    for entry in logs:
        assert token[:20] not in str(entry)


def test_two_first_answers_at_once_both_land_the_later_kept(
    deploy: Deploy, database_url: str
) -> None:
    """Two tabs answering at the same moment: the second insert meets the first's
    uncommitted row (PostgreSQL waits on it), and updates it instead of failing."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: one answer simply comes after the other")
    ctx, _clock = deploy(check="{ask: [mentor]}")
    with ctx.db() as db:
        session_id = db.scalars(select(MentoringSession.id)).one()
    first = ctx.db()
    assert record_answer(first, session_id, MENTOR, happened=True, now=NOW)  # not committed
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with ctx.db.begin() as db:
                record_answer(db, session_id, MENTOR, happened=False, now=NOW)
        except BaseException as exc:
            failures.append(exc)

    racer = threading.Thread(target=second)
    racer.start()
    with ctx.engine.connect() as watch:  # wait until the second insert waits on the first
        while (
            racer.is_alive()
            and not watch.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
            ).scalar_one()
        ):
            watch.rollback()
    first.commit()
    first.close()
    racer.join(timeout=30)
    assert failures == []
    with ctx.db() as db:
        (kept,) = db.scalars(select(AttendanceAnswer)).all()
        assert kept.happened is False


def test_a_purge_does_not_let_an_open_question_be_asked_again(deploy: Deploy) -> None:
    ctx, clock = deploy(check="{ask: [mentor]}")
    stages.send_notifications(ctx)
    (asked,) = questions(ctx)
    assert asked.status == "sent"
    clock.now = NOW + timedelta(days=1)  # the session is still in its answer window

    def purge(at: datetime) -> str:
        with time_machine.travel(at, tick=False):
            result = CliRunner().invoke(
                app, ["outbox", "purge", "--older-than", "0s", "--config", str(ctx.config_path)]
            )
        assert result.exit_code == 0, result.output
        return result.output

    assert "0 rows purged" in purge(clock.now)
    stages.send_notifications(ctx)
    assert len(questions(ctx)) == 1
    assert len(mails(ctx)) == 1  # asked once, ever
    # Once no run could ask about the session any more, the row may go.
    clock.now = NOW + timedelta(days=7, hours=3)
    assert "1 rows purged" in purge(clock.now)
    stages.send_notifications(ctx)
    assert len(mails(ctx)) == 1


def test_a_question_quiet_hours_would_deliver_nearly_closed_is_not_sent(deploy: Deploy) -> None:
    """Ended 3h ago, answers for 10h: at 01:00 in Auckland the question would wait for 08:00,
    leaving less than the margin (1h) to answer, so it is not queued; in London it goes."""
    quiet = "notify:\n  send_window: {start: '08:00', end: '20:00'}\n"
    check = "{ask: [mentor], after: 2h, answer_within: 10h}"
    ended_3h_ago = [vevent("s1@a", NOW - timedelta(hours=4))]
    ctx, _clock = deploy(ended_3h_ago, check=check, extra=quiet, mentor_zone="Pacific/Auckland")
    stages.send_notifications(ctx)
    assert questions(ctx) == []
    assert mails(ctx) == []


def test_a_question_in_the_window_is_sent(deploy: Deploy) -> None:
    quiet = "notify:\n  send_window: {start: '08:00', end: '20:00'}\n"
    check = "{ask: [mentor], after: 2h, answer_within: 10h}"
    ended_3h_ago = [vevent("s1@a", NOW - timedelta(hours=4))]
    ctx, _clock = deploy(ended_3h_ago, check=check, extra=quiet, mentor_zone="Europe/London")
    stages.send_notifications(ctx)
    assert [q.status for q in questions(ctx)] == ["sent"]


def test_a_question_held_back_until_nearly_closed_is_cancelled(deploy: Deploy) -> None:
    ctx, clock = deploy(
        check="{ask: [mentor], answer_within: 3d}",
        extra="notify:\n  send_window: {start: '08:00', end: '20:00'}\n",
        mentor_zone="Pacific/Auckland",  # 01:00 there: the question waits for 08:00
    )
    stages.send_notifications(ctx)
    (waiting,) = questions(ctx)
    assert waiting.status == "pending"
    # Nothing ran until 5h before the question closes (less than its margin, 7.2h).
    clock.now = SLOT + timedelta(hours=1) + timedelta(days=3) - timedelta(hours=5)
    stages.send_notifications(ctx)
    (dropped,) = questions(ctx)
    assert dropped.status == "cancelled"
    assert "closed" in (dropped.last_error or "")
    assert mails(ctx) == []

"""The outbox under injected faults: whatever fails, nothing is lost, and the only
duplicates are re-sends (same Message-ID) after a crash between send and commit.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import timedelta
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import notifications_for
from mentorpulse.notify.transport import SendResult
from mentorpulse.storage.models import Base, OutboxMessage
from tests.notify_support import FIRED, alert

START = FIRED  # the findings are due at once
FAULTS = ("ok", "4xx", "5xx", "crash_before", "crash_after", "transport_bug")


class Crash(BaseException):
    """The process dies (not an Exception: nothing may swallow it)."""


class ScriptedServer:
    """Answers each send from a script of faults, then accepts everything."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.received: Counter[str] = Counter()
        self.crashed_after: Counter[str] = Counter()

    def send(self, message: EmailMessage) -> SendResult:
        message_id = str(message["Message-ID"])
        fault = self.script.pop(0) if self.script else "ok"
        if fault == "crash_before":
            raise Crash
        if fault == "transport_bug":
            raise RuntimeError("a bug in a transport")
        if fault == "4xx":
            return SendResult(ok=False, retryable=True, error="451 later")
        if fault == "5xx":
            return SendResult(ok=False, retryable=False, error="550 no")
        self.received[message_id] += 1
        if fault == "crash_after":
            self.crashed_after[message_id] += 1
            raise Crash
        return SendResult(ok=True)

    def close(self) -> None:
        pass


@settings(max_examples=30, deadline=None)
@given(
    emails=st.integers(min_value=1, max_value=6),
    script=st.lists(st.sampled_from(FAULTS), max_size=25),
    rounds=st.integers(min_value=1, max_value=6),
)
def test_nothing_is_lost_and_only_crash_resends_duplicate(
    emails: int, script: list[str], rounds: int
) -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool)  # in memory: no fsync
    Base.metadata.create_all(engine)
    sessions = sessionmaker(engine)
    with sessions.begin() as db:
        alerts = [alert(n) for n in range(emails)]
        enqueue(db, notifications_for(alerts, now=START), now=START)
    server = ScriptedServer(list(script))
    now = START
    # Faults while the script lasts, then enough calm rounds to drain the queue.
    for _ in range(rounds + len(script) + emails + 2):
        with contextlib.suppress(Crash):
            dispatch(sessions, server, sender="mp@example.org", now=now, limit=2)
        now += timedelta(hours=2)  # past any lease and any backoff
    with sessions() as db:
        rows = list(db.scalars(select(OutboxMessage)))
    engine.dispose()
    assert len(rows) == emails
    for row in rows:
        assert row.status in ("sent", "failed"), row.status
        assert row.status == "sent" or row.last_error == "550 no"  # failed only when refused
        delivered_now = 1 if row.status == "sent" else 0
        assert server.received[row.message_id] == (
            server.crashed_after[row.message_id] + delivered_now
        )

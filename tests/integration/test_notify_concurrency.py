"""`notify` runs that die or race, as separate processes against the real SMTP server.

Each worker is a child process running the production dispatcher (real store, real
SmtpTransport over STARTTLS + AUTH to aiosmtpd): a crash is a SIGKILL while the server
holds a message unanswered, a race is four processes released at once over one SQLite
outbox. What the server accepted is the truth every test checks.

Run as a module, this file is that worker: ``python -m tests.integration.test_notify_concurrency
'{json}'``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import notifications_for
from mentorpulse.notify.transport import SmtpTransport
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.models import Base, OutboxMessage
from tests.notify_support import FIRED, alert
from tests.servers.smtpd import Recorder, SmtpServer

REPO = Path(__file__).resolve().parents[2]
SENDER = "mentorpulse@example.org"
LEASE = timedelta(minutes=5)
WAIT = 60.0  # seconds: the bound on every wait below (children, gates, stalls)


# ---------------------------------------------------------------- the worker process


def _worker(args: dict[str, Any]) -> None:
    engine = make_engine(args["url"])
    gate = args.get("gate")
    if gate:
        Path(args["ready"]).touch()
        deadline = time.monotonic() + WAIT
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise SystemExit("the start gate never opened")
            time.sleep(0.005)
    try:
        counts = dispatch(
            session_factory(engine),
            SmtpTransport(SmtpConfig.model_validate(args["smtp"]), ca_file=Path(args["ca"])),
            sender=SENDER,
            now=datetime.fromisoformat(args["now"]),
            lease=LEASE,
            limit=int(args["limit"]),
            domain="example.org",
        )
    finally:
        engine.dispose()
    print(json.dumps(asdict(counts)))


def spawn(server: SmtpServer, url: str, now: datetime, **extra: Any) -> subprocess.Popen[str]:
    args = {
        "url": url,
        "smtp": server.config(),
        "ca": str(server.ca_file),
        "now": now.isoformat(),
        "limit": 100,
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_notify_concurrency", json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------- fixtures and helpers


class StallingRecorder(Recorder):
    """Accepts mail, except the ``stall_at``-th message: it is read in full and never
    answered (until ``release``), the moment a sender is most in doubt."""

    def __init__(self, stall_at: int) -> None:
        super().__init__()
        self.stall_at = stall_at
        self.seen = 0
        self.reached = threading.Event()
        self.release = threading.Event()
        self.in_doubt: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.seen += 1
        if self.seen != self.stall_at:
            return await super().handle_DATA(server, session, envelope)
        text = envelope.content.decode("utf-8", "replace")
        self.in_doubt.append(next(line for line in text.splitlines() if "Message-ID" in line))
        self.reached.set()
        for _ in range(int(WAIT * 100)):
            if self.release.is_set():
                break
            await asyncio.sleep(0.01)
        return "451 4.3.0 stalled"


def queue(url: str, *, reminders: int, reports: int) -> None:
    """``reports`` at-most-once rows (like HR reports) spread evenly among ``reminders``
    ordinary ones, in the order a claim takes them (first, then every n-th)."""
    total = reminders + reports
    notes = notifications_for([alert(n) for n in range(total)], now=FIRED)
    step = total // reports if reports else total + 1
    at_most_once = set(range(0, total, step)[:reports])
    marked = [
        replace(n, recipient=f"hr{i}@example.org", at_most_once=True) if i in at_most_once else n
        for i, n in enumerate(notes)
    ]
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        with session_factory(engine).begin() as db:
            assert enqueue(db, marked, now=FIRED) == total
    finally:
        engine.dispose()


def outbox(url: str) -> list[OutboxMessage]:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as db:
            return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    finally:
        engine.dispose()


def finish(child: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = child.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate(timeout=10)
    return child.returncode, out, err


# ---------------------------------------------------------------- a crash mid-batch


@pytest.mark.parametrize(
    ("reminders", "reports", "kill_at"),
    [(0, 20, 1), (0, 20, 8), (0, 20, 20), (10, 10, 5), (10, 10, 6)],
    ids=["reports-first", "reports-middle", "reports-last", "mixed-a", "mixed-b"],
)
def test_a_crash_mid_batch_leaves_at_most_one_report_in_doubt(
    database_url: str, server: SmtpServer, reminders: int, reports: int, kill_at: int
) -> None:
    stalling = StallingRecorder(stall_at=kill_at)
    server.controller.handler = stalling  # each new SMTP session gets this handler
    queue(database_url, reminders=reminders, reports=reports)
    child = spawn(server, database_url, FIRED)
    try:
        assert stalling.reached.wait(WAIT), finish(child)
        os.kill(child.pid, signal.SIGKILL)  # the worker dies waiting for the server's answer
        code, _, err = finish(child)
        assert code == -signal.SIGKILL, err
    finally:
        stalling.release.set()
        if child.poll() is None:
            child.kill()
    rows = outbox(database_url)
    in_flight = next(r for r in rows if r.message_id in stalling.in_doubt[0])
    # Of the reports, only the one in flight was claimed (the rest of the batch was not).
    reports_claimed = [r.id for r in rows if r.at_most_once and r.status == "sending"]
    assert reports_claimed == ([in_flight.id] if in_flight.at_most_once else [])

    # The next run, after the dead worker's lease: everything else goes out, once.
    later = spawn(server, database_url, FIRED + LEASE + timedelta(minutes=1))
    code, _, err = finish(later)
    assert code == 0, err
    rows = outbox(database_url)
    statuses = Counter(r.status for r in rows)
    accepted = Counter(stalling.message_ids())
    assert all(n == 1 for n in accepted.values()), accepted  # nothing doubled
    if in_flight.at_most_once:
        assert statuses == Counter({"sent": reminders + reports - 1, "unknown": 1})
        assert in_flight.message_id not in accepted  # not sent a second time
    else:
        assert statuses == Counter({"sent": reminders + reports})  # resent, same Message-ID
    assert {r.message_id for r in rows if r.status == "sent"} == set(accepted)  # none lost


# ---------------------------------------------------------------- parallel runs


@pytest.mark.parametrize(
    ("backend", "trial"),
    [
        ("sqlite", 0),
        ("sqlite", 1),
        ("sqlite", 2),
        pytest.param("postgresql", 0, marks=pytest.mark.postgres),
    ],
)
def test_four_notify_processes_send_each_row_once(
    tmp_path: Path, server: SmtpServer, backend: str, trial: int, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'mentorpulse.db'}"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    queue(url, reminders=200, reports=20)
    gate = tmp_path / "go"
    children = [
        spawn(server, url, FIRED, limit=10, gate=str(gate), ready=str(tmp_path / f"ready{i}"))
        for i in range(4)
    ]
    try:
        deadline = time.monotonic() + WAIT
        while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
            assert time.monotonic() < deadline, [c.poll() for c in children]
            time.sleep(0.01)
        gate.touch()  # all four claim at once
        results = [finish(child) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    sent = [json.loads(out.splitlines()[-1])["sent"] for _, out, _ in results]
    ids = Counter(server.recorder.message_ids())
    doubled = {mid: n for mid, n in ids.items() if n > 1}
    assert doubled == {}, f"trial {trial}: {len(doubled)} rows sent more than once"
    assert len(ids) == 220
    assert sum(sent) == 220
    assert Counter(r.status for r in outbox(url)) == Counter({"sent": 220})


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))

"""Dispatch throughput: emails per second from the outbox to a local aiosmtpd, and its floor.

    python -m bench.dispatch [--emails 500] [--workers 1] [--database-url URL]

Queues ``--emails`` reminders, then times the dispatchers draining the outbox over SMTP
(STARTTLS + AUTH on loopback, the server in its own process, one SMTP session per
dispatcher) until every row is ``sent``.
Without ``--database-url`` it runs on a fresh SQLite file; pass a PostgreSQL URL to race
several workers (``--workers``) with ``SKIP LOCKED``.

The floor is bare smtplib sending the same rendered messages over one connection
(STARTTLS + AUTH too) to a server instance of its own, so each count is one run's: what
no outbox could beat on this machine. The goal is ``floor_share`` ≥ 50 %.
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from email.message import EmailMessage
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mentorpulse import logs
from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue, outbox_row
from mentorpulse.notify.render import render
from mentorpulse.notify.route import notifications_for
from mentorpulse.notify.transport import SmtpTransport
from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.models import Base, OutboxMessage
from tests.notify_support import FIRED, alert
from tests.servers.smtpd import smtp_server

NOW = FIRED  # the findings are due at once
SENDER = "mentorpulse@example.org"


def _serve(folder: str, ready: Queue[Any], stop: Event, done: Queue[Any]) -> None:
    """The SMTP server, in its own process so it does not share the dispatcher's GIL."""
    with smtp_server(Path(folder)) as server:
        ready.put(server.config())
        stop.wait()
        ids = server.recorder.message_ids()
        done.put((len(ids), len(set(ids))))


def measure(
    emails: int = 500, workers: int = 1, database_url: str | None = None
) -> dict[str, float | int]:
    """Queue ``emails`` rows, drain them with ``workers`` dispatchers; time the floor on
    the same messages; figures out."""
    cpu = _CpuClock()
    elapsed, sent, received, unique = _with_server(
        lambda folder, config: _drain(folder, config, emails, workers, database_url, cpu)
    )
    messages = _messages(emails)
    floor_cpu = _CpuClock()
    floor_s, _, floor_received, _ = _with_server(
        lambda _folder, config: (_floor(config, messages, floor_cpu), len(messages))
    )
    per_second = received / elapsed
    floor_per_second = floor_received / floor_s
    return {
        "emails": emails,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "emails_per_second": round(per_second, 1),
        "floor_emails_per_second": round(floor_per_second, 1),
        "floor_share_pct": round(100 * per_second / floor_per_second, 1),
        "cpu_ms_per_email": round(1000 * cpu.seconds / received, 2),
        "floor_cpu_ms_per_email": round(1000 * floor_cpu.seconds / floor_received, 2),
        "rows_sent": sent,
        "received": received,
        "duplicates": received - unique,
    }


class _CpuClock:
    """This process's CPU seconds over what it times (the servers run in others): the
    figure the machine's load disturbs least."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def start(self) -> None:
        self._started = time.process_time()

    def stop(self) -> None:
        self.seconds += time.process_time() - self._started


def _with_server(
    run: Callable[[str, SmtpConfig], tuple[float, int]],
) -> tuple[float, int, int, int]:
    """``run`` against an SMTP server of its own; its figures plus what the server got."""
    context = multiprocessing.get_context("spawn")
    ready: Queue[Any] = context.Queue()
    done: Queue[Any] = context.Queue()
    stop = context.Event()
    with tempfile.TemporaryDirectory() as folder:
        server = context.Process(target=_serve, args=(folder, ready, stop, done), daemon=True)
        server.start()
        try:
            config = SmtpConfig.model_validate(ready.get(timeout=60))
            elapsed, sent = run(folder, config)
        finally:
            stop.set()
        received, unique = done.get(timeout=60)
        server.join(timeout=30)
    return elapsed, sent, received, unique


def _messages(emails: int) -> list[EmailMessage]:
    """The messages the dispatcher sends, rendered from the same rows, outside the timing."""
    rows = [
        OutboxMessage(id=n, **outbox_row(note, now=NOW, domain="example.org"))
        for n, note in enumerate(notifications_for([alert(n) for n in range(emails)], now=NOW))
    ]
    return [render(row, sender=SENDER, now=NOW) for row in rows]


def _floor(config: SmtpConfig, messages: list[EmailMessage], cpu: _CpuClock) -> float:
    """Seconds for bare smtplib to send ``messages`` over one STARTTLS + AUTH session."""
    tls = ssl.create_default_context(cafile=config.ca_file)
    started = time.perf_counter()
    cpu.start()
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout.total_seconds()) as client:
        client.starttls(context=tls)
        client.login(config.username or "", config.password or "")
        for message in messages:
            client.send_message(message)
    cpu.stop()
    return time.perf_counter() - started


def _drain(
    folder: str,
    config: SmtpConfig,
    emails: int,
    workers: int,
    database_url: str | None,
    cpu: _CpuClock,
) -> tuple[float, int]:
    engine = make_engine(database_url or f"sqlite:///{folder}/bench.db")  # WAL, as deployed
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    alerts = [alert(n) for n in range(emails)]
    with factory.begin() as db:
        enqueue(db, notifications_for(alerts, now=NOW), now=NOW, domain="example.org")
    ca_file = Path(config.ca_file) if config.ca_file else None
    barrier = threading.Barrier(workers)

    def work() -> None:
        barrier.wait()
        dispatch(
            factory,
            SmtpTransport(config, ca_file=ca_file),
            sender=SENDER,
            now=NOW,
            limit=50,
            domain="example.org",
        )

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    cpu.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu.stop()
    elapsed = time.perf_counter() - started
    with factory() as db:
        sent = db.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sent")
        )
    if database_url:
        Base.metadata.drop_all(engine)
    engine.dispose()
    return elapsed, int(sent or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logs.configure(level="warning", json=False)  # one line per email would be the bench
    figures = measure(args.emails, args.workers, args.database_url)
    for key, value in figures.items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()

"""Dispatch throughput: emails per second from the outbox to a local aiosmtpd.

    python -m bench.dispatch [--emails 500] [--workers 1] [--database-url URL]

Queues ``--emails`` reminders, then times the dispatchers draining the outbox over SMTP
(STARTTLS + AUTH on loopback, the server in its own process, one SMTP session per
dispatcher) until every row is ``sent``.
Without ``--database-url`` it runs on a fresh SQLite file; pass a PostgreSQL URL to race
several workers (``--workers``) with ``SKIP LOCKED``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mentorpulse import logs
from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import notifications_for
from mentorpulse.notify.transport import SmtpTransport
from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.models import Base, OutboxMessage
from tests.notify_support import FIRED, alert
from tests.servers.smtpd import smtp_server

NOW = FIRED  # the findings are due at once


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
    """Queue ``emails`` rows, drain them with ``workers`` dispatchers; figures out."""
    context = multiprocessing.get_context("spawn")
    ready: Queue[Any] = context.Queue()
    done: Queue[Any] = context.Queue()
    stop = context.Event()
    with tempfile.TemporaryDirectory() as folder:
        server = context.Process(target=_serve, args=(folder, ready, stop, done), daemon=True)
        server.start()
        try:
            config = SmtpConfig.model_validate(ready.get(timeout=60))
            elapsed, sent = _drain(folder, config, emails, workers, database_url)
        finally:
            stop.set()
        received, unique = done.get(timeout=60)
        server.join(timeout=30)
    return {
        "emails": emails,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "emails_per_second": round(received / elapsed, 1),
        "rows_sent": sent,
        "received": received,
        "duplicates": received - unique,
    }


def _drain(
    folder: str, config: SmtpConfig, emails: int, workers: int, database_url: str | None
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
            sender="mentorpulse@example.org",
            now=NOW,
            limit=50,
            domain="example.org",
        )

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
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
        print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()

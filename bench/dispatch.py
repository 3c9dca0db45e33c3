"""Dispatch throughput: emails per second from the outbox to a local aiosmtpd.

    python -m bench.dispatch [--emails 500] [--workers 1] [--database-url URL]

Queues ``--emails`` reminders, then times the dispatchers draining the outbox over SMTP
(STARTTLS + AUTH on loopback, one session per dispatcher) until every row is ``sent``.
Without ``--database-url`` it runs on a fresh SQLite file; pass a PostgreSQL URL to race
several workers (``--workers``) with ``SKIP LOCKED``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from mentorpulse import logs
from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import Alert, notifications_for
from mentorpulse.notify.transport import SmtpTransport
from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.models import Base, OutboxMessage
from tests.servers.smtpd import smtp_server

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TEMPLATE = Alert(
    fingerprint="",
    rule_id="lapsed",
    severity="warning",
    state="firing",
    firing_since=NOW,
    facts={"last_attended": "2026-02-10"},
    program="eng",
    program_name="Engineering mentoring",
    mentor_email="",
    mentor_name="Mentor",
    mentee_email="mentee@example.org",
    mentee_name="Mentee",
    mentor_timezone="Europe/Berlin",
)


def measure(
    emails: int = 500, workers: int = 1, database_url: str | None = None
) -> dict[str, float | int]:
    """Queue ``emails`` rows, drain them with ``workers`` dispatchers; figures out."""
    with tempfile.TemporaryDirectory() as folder, smtp_server(Path(folder)) as server:
        url = database_url or f"sqlite:///{folder}/bench.db"
        engine = make_engine(url)  # what the daemon uses: SQLite in WAL mode
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        factory = sessionmaker(engine)
        alerts = [
            replace(TEMPLATE, fingerprint=f"{n:016x}", mentor_email=f"mentor{n}@example.org")
            for n in range(emails)
        ]
        with factory.begin() as db:
            enqueue(db, notifications_for(alerts, now=NOW), now=NOW, domain="example.org")
        config = SmtpConfig.model_validate(server.config())
        barrier = threading.Barrier(workers)

        def work() -> None:
            barrier.wait()
            dispatch(
                factory,
                SmtpTransport(config, ca_file=server.ca_file),
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
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "sent")
            )
        received = len(server.recorder.messages)
        unique = len(set(server.recorder.message_ids()))
        if database_url:
            Base.metadata.drop_all(engine)
        engine.dispose()
    return {
        "emails": emails,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "emails_per_second": round(received / elapsed, 1),
        "rows_sent": int(sent or 0),
        "received": received,
        "duplicates": received - unique,
    }


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

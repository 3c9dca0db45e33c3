"""Full and no-change sync of many on-premises Exchange mailboxes from the EWS fake.

    python -m bench.exchange_sync [--mailboxes 2000] [--events 5]

Each sync is ``mentorpulse sync --once`` through the real sync stage on SQLite. Prints
the HTTP requests it sent to EWS, per operation and per mailbox (the figure that scales
with the organisation: a quiet poll should cost one SyncFolderItems per mailbox), the
event rows it wrote (none for a quiet poll), and the time and CPU taken. The fake runs
in-process over HTTPS on loopback, so the seconds measure mentorpulse, exchangelib and
the fake together, not a real server's latency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fakes.ews_api import CalendarItem, EwsFake, Occurrence

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _populate(fake: EwsFake, mailboxes: int, events: int) -> list[str]:
    """Each mailbox holds one weekly series of ``events`` occurrences with its neighbour
    (one copy in each of the two mailboxes, as Exchange keeps them)."""
    addresses = [f"person{n:05d}@contoso.example" for n in range(mailboxes)]
    for index, address in enumerate(addresses):
        partner = addresses[index ^ 1] if index ^ 1 < mailboxes else address
        organizer = addresses[min(index, index ^ 1)] if partner != address else address
        first = NOW - timedelta(weeks=events - 1, hours=index % 24)
        starts = [first + timedelta(weeks=week) for week in range(events)]
        fake.put(
            address,
            CalendarItem(
                id=fake.next_id(),
                uid=f"uid-{min(index, index ^ 1)}",
                subject="Mentoring",
                organizer=organizer,
                start=starts[0],
                end=starts[0] + timedelta(hours=1),
                attendees=[(partner, "required", "accepted")],
                my_response="Organizer" if organizer == address else "Accept",
                occurrences=[Occurrence(s, s, s + timedelta(hours=1)) for s in starts],
            ),
        )
    return addresses


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _deployment(folder: Path, fake: EwsFake, addresses: list[str]) -> Path:
    """mentorpulse.yaml (SQLite) reading every mailbox, and a roster of neighbour pairs."""
    roster = ["program,mentor_email,mentee_email,started_on"]
    roster += [
        f"eng,{a},{b},2026-01-05" for a, b in zip(addresses[::2], addresses[1::2], strict=False)
    ]
    (folder / "roster.csv").write_text("\n".join(roster) + "\n")
    config = {
        "database": f"sqlite:///{folder / 'mentorpulse.db'}",
        "sources": [
            {
                "id": "exchange",
                "kind": "exchange",
                "url": fake.url,
                "auth": "basic",
                "username": fake.username,
                "password": "${MP_BENCH_EWS_PASSWORD}",
                "mailboxes": addresses,
                "ca_bundle": str(fake.ca_path),
                "window_past": "90d",
                "window_future": "30d",
            }
        ],
        "roster": {"path": "roster.csv"},
        "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
    }
    path = folder / "mentorpulse.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def measure(mailboxes: int = 2000, events: int = 5) -> dict[str, float | int]:
    """Figures of one full and one no-change ``sync --once`` of ``mailboxes`` mailboxes
    through the real sync stage on SQLite."""
    from bench.common import RowCounter
    from mentorpulse import stages

    os.environ.pop("REQUESTS_CA_BUNDLE", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fake = EwsFake(folder)
        addresses = _populate(fake, mailboxes, events)
        os.environ["MP_BENCH_EWS_PASSWORD"] = fake.password
        server = fake.serve()
        next(server)
        try:
            ctx = stages.Context.open(_deployment(folder, fake, addresses), clock=lambda: NOW)
            figures: dict[str, float | int] = {"mailboxes": mailboxes, "events": events}
            for phase in ("full", "no_change"):
                logged_before = len(fake.log)
                counter = RowCounter()
                with counter.attached(ctx.engine):
                    began, cpu_began = time.perf_counter(), _cpu()
                    [result] = stages.sync_sources(ctx)
                    figures[f"{phase}_seconds"] = round(time.perf_counter() - began, 2)
                    figures[f"{phase}_cpu_seconds"] = round(_cpu() - cpu_began, 2)
                assert result.ok, result.error
                requests = len(fake.log) - logged_before
                figures[f"{phase}_http_requests"] = requests
                figures[f"{phase}_requests_per_mailbox"] = round(requests / mailboxes, 3)
                for operation in ("ConvertId", "SyncFolderItems", "FindItem", "GetItem"):
                    figures[f"{phase}_{operation}"] = sum(
                        r.operation == operation for r in fake.log[logged_before:]
                    )
                figures[f"{phase}_events_stored"] = result.stored
                figures[f"{phase}_pages"] = result.pages
                figures[f"{phase}_event_rows_written"] = counter.of("events", "event_pairings")
                figures[f"{phase}_bookkeeping_rows_written"] = counter.of("sources")
            ctx.engine.dispose()
            return figures
        finally:
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--events", type=int, default=5, help="Occurrences per mailbox.")
    args = parser.parse_args()
    for name, value in measure(args.mailboxes, args.events).items():
        print(f"{name:36} {value}")


if __name__ == "__main__":
    main()

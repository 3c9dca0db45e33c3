"""Full and no-change sync of many on-premises Exchange mailboxes from the EWS fake.

    python -m bench.exchange_sync [--mailboxes 2000] [--events 5]

Prints the HTTP requests each sync sent to EWS (the figure that scales with the
organisation: a quiet poll should cost one SyncFolderItems per mailbox and yield no
record, so the sync stage writes no event row), the records and pages yielded, and the
time and CPU taken. The fake runs in-process over HTTPS on loopback, so the seconds
measure mentorpulse, exchangelib and the fake together, not a real server's latency.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mentorpulse.config.schema import ExchangeSource
from mentorpulse.connectors.exchange import ExchangeConnector
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


def measure(mailboxes: int = 2000, events: int = 5) -> dict[str, float | int]:
    """Figures of one full sync and one no-change sync of ``mailboxes`` mailboxes."""
    os.environ.pop("REQUESTS_CA_BUNDLE", None)
    with tempfile.TemporaryDirectory() as tmp:
        fake = EwsFake(Path(tmp))
        addresses = _populate(fake, mailboxes, events)
        server = fake.serve()
        next(server)
        try:
            source = ExchangeSource.model_validate(
                {
                    "id": "bench",
                    "kind": "exchange",
                    "url": fake.url,
                    "auth": "basic",
                    "username": fake.username,
                    "password": fake.password,
                    "mailboxes": addresses,
                    "ca_bundle": str(fake.ca_path),
                    "window_past": "90d",
                    "window_future": "30d",
                }
            )
            figures: dict[str, float | int] = {"mailboxes": mailboxes, "events": events}
            cursor = None
            for phase in ("full", "no_change"):
                connector = ExchangeConnector(source, base_dir=Path(tmp), now=NOW)
                logged_before = len(fake.log)
                began, cpu_began = time.perf_counter(), _cpu()
                records = pages = pages_with_records = 0
                for page in connector.sync(cursor):
                    records += len(page.records)
                    pages += 1
                    pages_with_records += bool(page.records or page.deleted)
                    cursor = page.cursor
                figures[f"{phase}_seconds"] = round(time.perf_counter() - began, 2)
                figures[f"{phase}_cpu_seconds"] = round(_cpu() - cpu_began, 2)
                figures[f"{phase}_http_requests"] = connector.requests
                figures[f"{phase}_requests_per_mailbox"] = round(connector.requests / mailboxes, 3)
                for operation in ("ConvertId", "SyncFolderItems", "FindItem", "GetItem"):
                    figures[f"{phase}_{operation}"] = sum(
                        r.operation == operation for r in fake.log[logged_before:]
                    )
                figures[f"{phase}_records"] = records
                figures[f"{phase}_pages"] = pages
                figures[f"{phase}_pages_with_changes"] = pages_with_records
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

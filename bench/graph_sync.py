"""Full and no-change sync of many Microsoft 365 mailboxes from the Graph fake.

    python -m bench.graph_sync [--mailboxes 2000] [--events 5]

Prints the HTTP requests each sync sent to Graph (the figure that scales with the
organisation: a quiet poll should cost one request per 20 mailboxes) and the time taken.
The fake runs in-process over HTTPS on loopback, so the seconds measure mentorpulse and
the fake together, not a real tenant's latency.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mentorpulse.config.schema import MicrosoftSource
from mentorpulse.connectors.microsoft import MicrosoftConnector
from tests.fakes.graph_api import FakeEvent, GraphFake

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _populate(fake: GraphFake, mailboxes: int, events: int) -> list[str]:
    addresses = [f"person{n:05d}@contoso.example" for n in range(mailboxes)]
    for index, address in enumerate(addresses):
        # Pairs of neighbours; with an odd count the last mailbox meets itself.
        partner = addresses[index ^ 1] if index ^ 1 < mailboxes else address
        fake.mailbox(address)
        for week in range(events):
            start = NOW - timedelta(weeks=week, hours=index % 24)
            fake.put(
                address,
                FakeEvent(
                    id=fake.next_id(),
                    ical_uid=f"uid-{min(index, index ^ 1)}-{week}",
                    subject="Mentoring",
                    start=start,
                    end=start + timedelta(hours=1),
                    organizer=address,
                    attendees=[(partner, "required", "accepted")],
                ),
            )
    return addresses


def measure(mailboxes: int = 2000, events: int = 5) -> dict[str, float | int]:
    """Figures of one full sync and one no-change sync of ``mailboxes`` mailboxes."""
    os.environ.pop("REQUESTS_CA_BUNDLE", None)
    with tempfile.TemporaryDirectory() as tmp:
        fake = GraphFake(Path(tmp))
        addresses = _populate(fake, mailboxes, events)
        server = fake.serve()
        next(server)
        try:
            source = MicrosoftSource.model_validate(
                {
                    "id": "bench",
                    "kind": "microsoft",
                    "tenant_id": fake.tenant,
                    "client_id": fake.client_id,
                    "client_secret": fake.client_secret,
                    "mailboxes": addresses,
                    "authority_host": fake.url,
                    "graph_url": f"{fake.url}/v1.0",
                    "ca_bundle": str(fake.ca_path),
                    "window_past": "90d",
                    "window_future": "30d",
                }
            )
            figures: dict[str, float | int] = {"mailboxes": mailboxes, "events": events}
            cursor = None
            for phase in ("full", "no_change"):
                connector = MicrosoftConnector(source, base_dir=Path(tmp), now=NOW)
                tokens_before = fake.tokens_issued
                logged_before = len(fake.log)
                began = time.perf_counter()
                records = pages = 0
                for page in connector.sync(cursor):
                    records += len(page.records)
                    pages += 1
                    cursor = page.cursor
                figures[f"{phase}_seconds"] = round(time.perf_counter() - began, 2)
                figures[f"{phase}_graph_requests"] = connector.requests
                # What crossed the wire: sign-in (OIDC metadata, token) and Graph requests;
                # the sub-requests inside a $batch are not extra HTTP requests.
                figures[f"{phase}_http_requests"] = sum(
                    not r.in_batch for r in fake.log[logged_before:]
                )
                figures[f"{phase}_batched_sub_requests"] = sum(
                    r.in_batch for r in fake.log[logged_before:]
                )
                figures[f"{phase}_token_requests"] = fake.tokens_issued - tokens_before
                figures[f"{phase}_records"] = records
                figures[f"{phase}_pages"] = pages
            return figures
        finally:
            server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=2000)
    parser.add_argument("--events", type=int, default=5, help="Events per mailbox.")
    args = parser.parse_args()
    for name, value in measure(args.mailboxes, args.events).items():
        print(f"{name:32} {value}")


if __name__ == "__main__":
    main()

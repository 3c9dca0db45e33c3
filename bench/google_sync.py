"""Full and no-change sync of N Google calendars from the loopback fake, with request counts.

Run as ``python -m bench.google_sync [N]`` (default 2,000). Each calendar holds a one-off
meeting and a weekly series; the figures count every HTTP request the fake served (token
requests of domain-wide delegation included) and every API call inside them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mentorpulse import logs
from mentorpulse.config.schema import GoogleSource
from mentorpulse.connectors.google import GoogleConnector
from tests.fakes.google_api import GoogleFake, serve

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _populate(fake: GoogleFake, users: list[str]) -> None:
    for n, user in enumerate(users):
        fake.add_user(user)
        partner = users[(n + 1) % len(users)]
        fake.meeting(
            [user],
            event_id=f"kickoff{n}",
            start=NOW - timedelta(days=n % 60),
            organizer=user,
            attendees={user: "accepted", partner: "needsAction"},
            meet_code=f"abc-{n:04d}-xyz",
        )
        fake.series(
            [user],
            series_id=f"weekly{n}",
            first=NOW - timedelta(days=28),
            count=8,
            organizer=user,
            attendees={user: "accepted", partner: "accepted"},
        )


def _sync(connector: GoogleConnector, cursor: Any) -> tuple[Any, int, int]:
    pages = records = 0
    for page in connector.sync(cursor):
        pages += 1
        records += len(page.records)
        cursor = json.loads(json.dumps(page.cursor))
    return cursor, pages, records


def measure(calendars: int = 2000) -> dict[str, float | int]:
    """Figures of one full sync and one no-change sync of ``calendars`` calendars."""
    fake = GoogleFake()
    running_server = serve(fake)
    running = next(running_server)
    try:
        users = [f"user{n:05d}@example.org" for n in range(calendars)]
        _populate(fake, users)
        with tempfile.TemporaryDirectory() as folder:
            key = Path(folder) / "sa.json"
            key.write_text(json.dumps(running.service_account))
            source = GoogleSource.model_validate(
                {
                    "id": "bench",
                    "kind": "google",
                    "users": users,
                    "service_account_key": str(key),
                    "api_root": running.url,
                }
            )

            def connector() -> GoogleConnector:
                return GoogleConnector(source, base_dir=Path(folder), now=NOW)

            figures: dict[str, float | int] = {"calendars": calendars}
            cursor = None
            for name in ("full", "nochange"):
                http, calls, tokens = fake.http_requests, fake.api_calls, fake.token_requests
                started = time.perf_counter()
                cursor, pages, records = _sync(connector(), cursor)
                figures[f"{name}_seconds"] = round(time.perf_counter() - started, 2)
                figures[f"{name}_http_requests"] = fake.http_requests - http
                figures[f"{name}_token_requests"] = fake.token_requests - tokens
                figures[f"{name}_api_calls"] = fake.api_calls - calls
                figures[f"{name}_pages"] = pages
                figures[f"{name}_records"] = records
            return figures
    finally:
        running_server.close()


def main() -> None:
    logs.configure(level="warning")
    calendars = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    for name, value in measure(calendars).items():
        print(f"{name:28} {value}")


if __name__ == "__main__":
    main()

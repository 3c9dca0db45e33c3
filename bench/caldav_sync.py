"""CalDAV sync cost on a real Radicale: first sync, unchanged re-sync, re-sync after 1% changed.

Run ``python -m bench.caldav_sync [events] [sync-token|etag]``. The calendar holds
``events`` objects (one in ten a weekly series), uploaded in one PUT of the collection;
the figures time the connector alone (requests, parsing, expansion, pages), not storage.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from mentorpulse.config.schema import CaldavSource
from mentorpulse.connectors.caldav import CaldavConnector
from tests.servers import caldav as servers

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
FIRST_DAY = NOW - timedelta(days=90)


class _CountingClient:
    """Wraps the connector's client to count HTTP requests per run."""

    def __init__(self, server: servers.CaldavServer) -> None:
        from caldav.davclient import DAVClient

        counter = self

        class Client(DAVClient):
            def request(self, *args: Any, **kwargs: Any) -> Any:
                counter.requests += 1
                return super().request(*args, **kwargs)

        self.requests = 0
        self.client = Client(
            url=server.url,
            username=server.username,
            password=server.password,
            timeout=600,
            auth_type="basic",
        )


def _event(n: int, version: int = 0) -> list[str]:
    start = FIRST_DAY + timedelta(days=n % 170, hours=8 + n % 9)
    lines = [
        "BEGIN:VEVENT",
        f"UID:bench-{n}",
        "DTSTAMP:20261101T000000Z",
        f"DTSTART:{start:%Y%m%dT%H%M%SZ}",
        "DURATION:PT45M",
        f"SUMMARY:Mentoring 1:1 #{n} v{version}",
        f"ORGANIZER:mailto:mentor{n % 200}@example.org",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:mentor{n % 200}@example.org",
        f"ATTENDEE;PARTSTAT={'ACCEPTED' if version else 'NEEDS-ACTION'}:"
        f"mailto:mentee{n % 500}@example.org",
        f"SEQUENCE:{version}",
    ]
    if n % 10 == 0:
        lines.append("RRULE:FREQ=WEEKLY;COUNT=12")
    return [*lines, "END:VEVENT"]


def _calendar(events: list[list[str]]) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//mentorpulse bench//EN"]
    for event in events:
        lines += event
    return "\r\n".join([*lines, "END:VCALENDAR", ""]).encode()


def _run(
    config: CaldavSource, server: servers.CaldavServer, cursor: Any
) -> tuple[float, dict[str, Any]]:
    counting = _CountingClient(server)
    connector = CaldavConnector(config, now=NOW, client=counting.client)
    pages = records = 0
    started, cpu = time.perf_counter(), time.process_time()
    for page in connector.sync(cursor):
        pages += 1
        records += len(page.records)
        if page.cursor is not None:
            cursor = page.cursor
    seconds = time.perf_counter() - started
    return seconds, {
        "client_cpu_s": time.process_time() - cpu,
        "cursor": cursor,
        "pages": pages,
        "records": records,
        "requests": counting.requests,
    }


def measure(events: int = 5000, method: str = "sync-token") -> dict[str, float | int]:
    """Seconds and requests of each of the three syncs of an ``events``-object calendar."""
    with tempfile.TemporaryDirectory() as tmp, servers.radicale(Path(tmp)) as server:
        auth = (server.username, server.password)
        url = f"{server.home}bench/"
        with httpx.Client(auth=auth, timeout=600) as http:
            # Radicale takes a whole calendar in one PUT of the collection.
            body = _calendar([_event(n) for n in range(events)])
            http.put(url, content=body, headers={"Content-Type": "text/calendar"})
            config = CaldavSource.model_validate(
                {
                    "id": "bench",
                    "kind": "caldav",
                    "url": server.url,
                    "username": server.username,
                    "password": server.password,
                    "calendars": [{"url": url}],
                    "sync": method,
                    "window_past": "120d",
                    "window_future": "120d",
                }
            )
            first_s, first = _run(config, server, None)
            same_s, same = _run(config, server, first["cursor"])
            changed = max(1, events // 100)
            for n in range(0, events, events // changed)[:changed]:
                http.put(
                    f"{url}bench-{n}.ics",
                    content=_calendar([_event(n, version=1)]),
                    headers={"Content-Type": "text/calendar"},
                )
            delta_s, delta = _run(config, server, same["cursor"])
    return {
        "events": events,
        "first_sync_s": round(first_s, 2),
        "first_sync_client_cpu_s": round(first["client_cpu_s"], 2),
        "first_sync_requests": first["requests"],
        "first_sync_occurrences": first["records"],
        "resync_unchanged_s": round(same_s, 3),
        "resync_unchanged_requests": same["requests"],
        "changed_objects": changed,
        "resync_1pct_s": round(delta_s, 2),
        "resync_1pct_client_cpu_s": round(delta["client_cpu_s"], 2),
        "resync_1pct_requests": delta["requests"],
        "resync_1pct_pages": delta["pages"],
    }


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    chosen = sys.argv[2] if len(sys.argv) > 2 else "sync-token"
    figures = measure(size, chosen)
    print(f"CalDAV sync on Radicale, {chosen}:")
    for name, value in figures.items():
        print(f"  {name:28} {value}")

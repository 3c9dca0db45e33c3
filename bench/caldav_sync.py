"""CalDAV sync cost on a real Radicale: first sync, unchanged re-sync, re-sync after 1% changed.

Run ``python -m bench.caldav_sync [events] [sync-token|etag] [sqlite|postgresql]``. The
calendar holds ``events`` objects (one in ten a weekly series), uploaded in one PUT of the
collection. The ``first_sync``/``resync`` figures time the connector alone (requests,
parsing, expansion, pages); the ``stored_`` ones run the real sync stage
(``sync_sources``: connector, ``store_page``, commits) into a scratch database of
``backend``, with a roster that pairs every organizer with their attendee, so every
occurrence is stored: what an operator's first ``mentorpulse sync --once`` costs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import common
from mentorpulse import stages
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


def _stored(
    folder: Path, source: dict[str, Any], events: int, backend: str
) -> dict[str, float | int]:
    """A first and an unchanged ``sync_sources`` into an empty database: wall and CPU."""
    pairs = {(f"mentor{n % 200}", f"mentee{n % 500}") for n in range(events)}
    (folder / "roster.csv").write_text(
        "program,mentor_email,mentee_email,started_on\n"
        + "".join(f"eng,{a}@example.org,{b}@example.org,2026-01-01\n" for a, b in sorted(pairs))
    )
    os.environ["MP_BENCH_CALDAV_PASSWORD"] = str(source.pop("password"))
    figures: dict[str, float | int] = {}
    with common.scratch_database(backend, common.workdir()) as url:
        config = {
            "database": url,
            "timezone": "UTC",
            "sources": [{**source, "password": "${MP_BENCH_CALDAV_PASSWORD}"}],
            "roster": {"path": "roster.csv"},
            "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
        }
        (folder / "mentorpulse.yaml").write_text(json.dumps(config))  # JSON is YAML
        ctx = stages.Context.open(folder / "mentorpulse.yaml", clock=lambda: NOW)
        try:
            for run in ("stored_first_sync", "stored_resync_unchanged"):
                started, cpu = time.perf_counter(), time.process_time()
                (result,) = stages.sync_sources(ctx)
                figures[f"{run}_s"] = round(time.perf_counter() - started, 2)
                figures[f"{run}_cpu_s"] = round(time.process_time() - cpu, 2)
                figures[f"{run}_pages"] = result.pages
                assert result.ok, result.error
            figures["stored_events"] = common.table_count(ctx, "events")
        finally:
            ctx.engine.dispose()
    return figures


def measure(
    events: int = 5000, method: str = "sync-token", backend: str = "sqlite"
) -> dict[str, float | int]:
    """Seconds and requests of each of the three syncs of an ``events``-object calendar."""
    with tempfile.TemporaryDirectory() as tmp, servers.radicale(Path(tmp)) as server:
        auth = (server.username, server.password)
        url = f"{server.home}bench/"
        with httpx.Client(auth=auth, timeout=600) as http:
            # Radicale takes a whole calendar in one PUT of the collection.
            body = _calendar([_event(n) for n in range(events)])
            http.put(url, content=body, headers={"Content-Type": "text/calendar"})
            settings = {
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
            config = CaldavSource.model_validate(settings)
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
            # After the connector's runs: the server has its caches warm, as it would for
            # a source added to a running deployment.
            stored = _stored(Path(tmp), dict(settings), events, backend)
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
        **stored,
    }


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    chosen = sys.argv[2] if len(sys.argv) > 2 else "sync-token"
    database = sys.argv[3] if len(sys.argv) > 3 else "sqlite"
    common.quiet()
    figures = measure(size, chosen, database)
    print(f"CalDAV sync on Radicale, {chosen}, stored on {database}:")
    for name, value in figures.items():
        print(f"  {name:28} {value}")

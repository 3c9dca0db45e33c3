"""Figure 2: what a poll costs when nothing changed, and when 1 % of the events did.

Starting from a fully ingested organisation, the real sync stage runs once with no
change to any calendar, then once after :func:`mentorpulse.sample.mutate` changed 1 % of all
occurrences (mentoring instances cancelled, other meetings moved). For each poll: wall
time, rows written per table (events and links apart from the source's own bookkeeping)
and provider requests per calendar (for ``kind: ics`` folders: files read). Then the
sessions stage runs on what changed, next to a full rebuild of every pairing's sessions.

    python -m bench.poll [--scale small] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from mentorpulse.connectors.ics import IcsConnector
from mentorpulse.sample import mutate, read_manifest
from mentorpulse.stages import rebuild_sessions, sync_sources
from mentorpulse.storage.models import Pairing

EVENT_TABLES = ("events", "event_pairings")


@contextmanager
def counted_reads() -> Iterator[dict[str, int]]:
    """Calendar files read while inside: the ICS connector's "provider requests"."""
    counter = {"reads": 0}
    real = IcsConnector._read

    def read(self: IcsConnector, path: Path, inside: Path | None) -> bytes:
        counter["reads"] += 1
        return real(self, path, inside)

    IcsConnector._read = read  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        IcsConnector._read = real  # type: ignore[method-assign]


def _poll(ctx: Any, calendars: int) -> dict[str, float | int]:
    counter = common.RowCounter()
    with counter.attached(ctx.engine), counted_reads() as reads:
        start = time.perf_counter()
        results = sync_sources(ctx)
        seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "event_rows_written": counter.of(*EVENT_TABLES),
        "pairings_flagged": counter.of("pairings"),
        "bookkeeping_rows_written": counter.of("sources"),
        "requests_per_calendar": round(reads["reads"] / calendars, 3),
        "pages": sum(r.pages for r in results),
    }


def measure(scale: str = "small", backend: str = "sqlite") -> dict[str, float | int]:
    org = common.fresh_org(scale, "poll")
    expected = read_manifest(org).counts
    calendars = expected["calendars"]
    figures: dict[str, float | int] = {}
    with common.ingested_database(scale, backend, org) as url:
        ctx = common.open_context(org, url)
        try:
            start = time.perf_counter()
            full = rebuild_sessions(ctx)
            figures["sessions_full_seconds"] = round(time.perf_counter() - start, 3)
            figures["sessions_full_pairings"] = full.pairings
            figures["sessions"] = sum(full.outcomes.values())
            figures["expected_sessions"] = expected["sessions"]

            for key, value in _poll(ctx, calendars).items():
                figures[f"nochange_{key}"] = value

            changed = mutate(org, 0.01)
            figures["changed_occurrences"] = changed["changed_occurrences"]
            figures["expected_changed_event_rows"] = changed["changed_session_copies"]
            for key, value in _poll(ctx, calendars).items():
                figures[f"changed_{key}"] = value

            with ctx.db() as db:
                due = db.scalar(sa.select(sa.func.count()).where(Pairing.events_changed))
            start = time.perf_counter()
            incremental = rebuild_sessions(ctx)
            figures["sessions_incremental_seconds"] = round(time.perf_counter() - start, 3)
            figures["sessions_incremental_pairings"] = incremental.pairings
            figures["pairings_due"] = int(due or 0)
            figures["peak_rss_mb"] = common.peak_rss_mb()
        finally:
            ctx.engine.dispose()
    return figures


if __name__ == "__main__":
    common.figure_main(measure, prog="python -m bench.poll", doc=__doc__)

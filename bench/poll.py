"""Figure 2: what a poll costs when nothing changed, and when 1 % of the events did.

Starting from a fully ingested organisation, the real sync stage runs once with no
change to any calendar, then once after :func:`mentorpulse.sample.mutate` changed 1 % of all
occurrences (mentoring instances cancelled, other meetings moved). For each poll: wall
time, rows written per table (events and links apart from the source's own bookkeeping)
and provider requests per calendar (for ``kind: ics`` folders: files read). Then the
sessions stage runs on what changed, next to a full rebuild of every pairing's sessions.
Each step's peak RSS is its own (``*_peak_rss_mb``); the day of edits is planned in a
child process: planning the whole organisation in memory is the generator's cost, not
mentorpulse's (large: 700 MB).

    python -m bench.poll [--scale small] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from mentorpulse.connectors.ics import IcsConnector
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


def _mutated(org: Path, fraction: float) -> dict[str, int]:
    """:func:`mentorpulse.sample.mutate` in a child process (see the module docstring)."""
    code = (
        "import json, sys; from pathlib import Path; from mentorpulse.sample import mutate; "
        "print(json.dumps(mutate(Path(sys.argv[1]), float(sys.argv[2]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(org), str(fraction)],
        check=True,
        capture_output=True,
        text=True,
    )
    changed: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return changed


def measure(scale: str = "small", backend: str = "sqlite") -> dict[str, float | int]:
    org = common.fresh_org(scale, "poll")
    expected = common.summary(org).counts
    calendars = expected["calendars"]
    figures: dict[str, float | int] = {}
    peaks: list[float] = []

    def step_peak(name: str) -> None:
        figures[f"{name}_peak_rss_mb"] = common.peak_rss_mb()
        peaks.append(common.peak_rss_mb())
        common.reset_peak_rss()

    with common.ingested_database(scale, backend, org) as url:
        ctx = common.open_context(org, url)
        try:
            common.reset_peak_rss()  # the stages' own peaks, not the setup's
            start = time.perf_counter()
            full = rebuild_sessions(ctx)
            figures["sessions_full_seconds"] = round(time.perf_counter() - start, 3)
            figures["sessions_full_pairings"] = full.pairings
            figures["sessions"] = sum(full.outcomes.values())
            figures["expected_sessions"] = expected["sessions"]
            step_peak("sessions_full")

            for key, value in _poll(ctx, calendars).items():
                figures[f"nochange_{key}"] = value
            step_peak("nochange")

            changed = _mutated(org, 0.01)
            figures["changed_occurrences"] = changed["changed_occurrences"]
            figures["expected_changed_event_rows"] = changed["changed_session_copies"]
            common.reset_peak_rss()
            for key, value in _poll(ctx, calendars).items():
                figures[f"changed_{key}"] = value
            step_peak("changed")

            with ctx.db() as db:
                due = db.scalar(sa.select(sa.func.count()).where(Pairing.events_changed))
            start = time.perf_counter()
            incremental = rebuild_sessions(ctx)
            figures["sessions_incremental_seconds"] = round(time.perf_counter() - start, 3)
            figures["sessions_incremental_pairings"] = incremental.pairings
            figures["pairings_due"] = int(due or 0)
            step_peak("sessions_incremental")
            figures["peak_rss_mb"] = max(peaks)
        finally:
            ctx.engine.dispose()
    return figures


if __name__ == "__main__":
    common.figure_main(measure, prog="python -m bench.poll", doc=__doc__)

"""Figure 1: full ingest of the organisation, next to the floor.

Ingest is the real sync stage (``sync_sources``) reading every calendar file from
scratch. Its time is split in two: the connector (reading and expanding iCalendar) and
storing (matching, ``store_page``, commits). The **floor** is the same normalised rows
(events and their pairing links, exactly as ingest stored them) inserted by one plain
``executemany`` per table in one transaction into an empty schema: what storing cannot
beat. ``store / floor`` is the ratio the target (at most 3x) is about.

    python -m bench.ingest [--scale small] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import common
from mentorpulse.model import SyncPage
from mentorpulse.stages import sync as sync_job
from mentorpulse.storage.models import Event, EventPairing, Source


class _TimedConnector:
    """Wraps a connector: time spent producing pages is the connector's, not storage's."""

    def __init__(self, inner: Any, clock: dict[str, float]) -> None:
        self.inner = inner
        self.source_id = inner.source_id
        self.clock = clock

    def sync(self, cursor: Mapping[str, object] | None) -> Iterator[SyncPage]:
        pages = self.inner.sync(cursor)
        while True:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                page = next(pages)
            except StopIteration:
                self.clock["connector"] += time.perf_counter() - start
                self.clock["connector_cpu"] += time.process_time() - cpu
                return
            self.clock["connector"] += time.perf_counter() - start
            self.clock["connector_cpu"] += time.process_time() - cpu
            self.clock["records"] += len(page.records)
            self.clock["pages"] += 1
            yield page


def timed_sync(ctx: Any) -> tuple[float, dict[str, float], list[Any]]:
    """``sync_sources`` once, with the connector's share of the time measured apart."""
    clock = {"connector": 0.0, "connector_cpu": 0.0, "records": 0, "pages": 0}
    real = sync_job.build_connector

    def build(*args: Any, **kwargs: Any) -> Any:
        return _TimedConnector(real(*args, **kwargs), clock)

    sync_job.build_connector = build  # type: ignore[assignment]
    try:
        start, cpu = time.perf_counter(), time.process_time()
        results = sync_job.sync_sources(ctx)
        total = time.perf_counter() - start
        clock["total_cpu"] = time.process_time() - cpu
    finally:
        sync_job.build_connector = real
    return total, clock, results


def floor_seconds(ctx: Any, org: Path, backend: str) -> tuple[float, float, int]:
    """Insert ingest's rows again, one executemany per table in one transaction.

    Returns the wall time, this process's CPU time and the rows inserted.
    """
    with ctx.engine.connect() as connection:
        events = [dict(r._mapping) for r in connection.execute(sa.select(Event.__table__))]
        links = [dict(r._mapping) for r in connection.execute(sa.select(EventPairing.__table__))]
        sources = [dict(r._mapping) for r in connection.execute(sa.select(Source.__table__))]
    with common.scratch_database(backend, common.workdir()) as url:
        target = common.open_context(org, url)
        try:
            with target.engine.begin() as connection:
                connection.execute(sa.insert(Source.__table__), sources)
            start, cpu = time.perf_counter(), time.process_time()
            with target.engine.begin() as connection:
                connection.execute(sa.insert(Event.__table__), events)
                connection.execute(sa.insert(EventPairing.__table__), links)
            seconds = time.perf_counter() - start
            cpu = time.process_time() - cpu
        finally:
            target.engine.dispose()
    return seconds, cpu, len(events) + len(links)


def _cursor_bytes(ctx: Any) -> int:
    """The stored cursors' size: every source's, as its connector reads it back."""
    with ctx.db() as db:
        return sum(
            len(json.dumps(sync_job.stored_cursor(db, source))) for source in ctx.config.sources
        )


def measure(scale: str = "small", backend: str = "sqlite") -> dict[str, float | int]:
    org = common.org_dir(scale)
    expected = common.summary(org).counts
    with common.scratch_database(backend, common.workdir()) as url:
        ctx = common.open_context(org, url)
        try:
            common.reset_peak_rss()  # the ingest's own peak, not the setup's
            total, clock, results = timed_sync(ctx)
            rss = common.peak_rss_mb()
            events = common.table_count(ctx, "events")
            links = common.table_count(ctx, "event_pairings")
            cursor = _cursor_bytes(ctx)
            floor, floor_cpu, floor_rows = floor_seconds(ctx, org, backend)
        finally:
            ctx.engine.dispose()
        common.save_ingested(scale, backend, url)
    store = total - clock["connector"]
    return {
        "occurrences": int(clock["records"]),
        "expected_occurrences": expected["occurrences"],
        "events_stored": events,
        "expected_events_stored": expected["events_stored"],
        "event_links": links,
        "events_dropped": sum(r.dropped for r in results),
        "item_errors": sum(r.item_errors for r in results),
        "pages": int(clock["pages"]),
        "seconds_total": round(total, 3),
        "seconds_connector": round(clock["connector"], 3),
        "seconds_store": round(store, 3),
        "seconds_floor": round(floor, 3),
        # CPU time of this process: steadier than wall time on a busy machine, but blind
        # to the database server's share (PostgreSQL).
        "cpu_seconds_connector": round(clock["connector_cpu"], 3),
        "cpu_seconds_store": round(clock["total_cpu"] - clock["connector_cpu"], 3),
        "cpu_seconds_floor": round(floor_cpu, 3),
        "floor_rows": floor_rows,
        "events_per_s": round(clock["records"] / total, 1),
        "stored_rows_per_s": round((events + links) / store, 1) if store else 0,
        "store_over_floor": round(store / floor, 2) if floor else 0,
        # Every page stores the source's whole cursor: what one full ingest writes of it.
        "cursor_bytes_final": cursor,
        "cursor_bytes_written_estimate": cursor * int(clock["pages"]) // 2,
        "peak_rss_mb": rss,
    }


if __name__ == "__main__":
    common.figure_main(measure, prog="python -m bench.ingest", doc=__doc__)

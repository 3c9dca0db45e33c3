"""What one worker spends on one shard of Google calendars: the README's "Scaling" figures.

Run as ``python -m bench.sizing [--calendars 1000] [--backend sqlite|postgresql]``.

The real sync stage (connector, matching, storage) reads ``--calendars`` calendars from
the Google fake of ``tests/fakes/google_api.py`` (each calendar: a one-off meeting and a
weekly series, as ``bench.google_sync`` plants them; half the people are paired in the
roster) into a fresh database, then syncs again with nothing changed. The fake runs in a
process of its own, so the CPU seconds are the worker's alone (this process, user +
system); requests are what the fake served (HTTP requests, the API calls inside batch
requests, OAuth token requests of domain-wide delegation); memory is this process's peak
RSS during the sync, beside its RSS before it (interpreter, libraries, the context).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import peak_rss_mb, quiet, reset_peak_rss, scratch_database
from bench.google_sync import NOW, _populate

SENT = ("http_requests", "api_calls", "token_requests")


def _serve_fake(calendars: int, pipe: Connection) -> None:
    """The child: plant the calendars, serve them, answer "counts" until "stop"."""
    from tests.fakes.google_api import GoogleFake, serve

    fake = GoogleFake()
    _populate(fake, _users(calendars))
    running_server = serve(fake)
    running = next(running_server)
    pipe.send({"url": running.url, "service_account": running.service_account})
    while pipe.recv() != "stop":
        pipe.send({name: getattr(fake, name) for name in SENT})
    running_server.close()


def _users(calendars: int) -> list[str]:
    return [f"user{n:05d}@example.org" for n in range(calendars)]


def _write_config(folder: Path, calendars: int, url: str, account: dict[str, str]) -> Path:
    (folder / "sa.json").write_text(json.dumps(account), encoding="utf-8")
    users = _users(calendars)
    roster = ["program,mentor_email,mentee_email,started_on"]
    roster += [f"eng,{users[n]},{users[n + 1]},2025-09-01" for n in range(0, calendars - 1, 2)]
    (folder / "roster.csv").write_text("\n".join(roster) + "\n", encoding="utf-8")
    config = folder / "mentorpulse.yaml"
    config.write_text(
        "database: sqlite:///unused.db\n"
        "sources:\n"
        "  - id: workspace\n"
        "    kind: google\n"
        f"    users: [{', '.join(users)}]\n"
        "    service_account_key: sa.json\n"
        f"    api_root: {url}\n"
        "    quota_share: 1\n"
        "programs:\n"
        "  - id: eng\n"
        "    cadence: {every: 14d}\n",
        encoding="utf-8",
    )
    return config


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def measure(calendars: int = 1000, backend: str = "sqlite") -> dict[str, Any]:
    """One first and one no-change sync of ``calendars`` Google calendars."""
    from mentorpulse.stages import sync_sources
    from mentorpulse.stages.context import Context

    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=_serve_fake, args=(calendars, theirs), daemon=True
    )
    server.start()
    figures: dict[str, Any] = {"calendars": calendars, "backend": backend}
    try:
        fake = ours.recv()
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            config = _write_config(folder, calendars, fake["url"], fake["service_account"])
            with scratch_database(backend, folder) as url:
                os.environ["MP_SIZING_DATABASE"] = url
                text = config.read_text(encoding="utf-8")
                config.write_text(
                    text.replace("sqlite:///unused.db", "${MP_SIZING_DATABASE}"), encoding="utf-8"
                )
                ctx = Context.open(config, clock=lambda: NOW)
                try:
                    for sync in ("first", "nochange"):
                        figures |= _one_sync(ctx, ours, sync, sync_sources)
                finally:
                    ctx.engine.dispose()
    finally:
        ours.send("stop")
        server.join(timeout=10)
    figures["load_average"] = round(os.getloadavg()[0], 2)
    figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return figures


def _one_sync(ctx: Any, fake: Connection, name: str, sync_sources: Any) -> dict[str, Any]:
    fake.send("counts")
    before = fake.recv()
    rss_before = _rss_mb()
    reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    [result] = sync_sources(ctx)
    wall = time.perf_counter() - started
    after_usage = resource.getrusage(resource.RUSAGE_SELF)
    fake.send("counts")
    after = fake.recv()
    if not result.ok:
        raise RuntimeError(f"the {name} sync failed: {result.error}")
    cpu = (after_usage.ru_utime - usage.ru_utime) + (after_usage.ru_stime - usage.ru_stime)
    return {
        f"{name}_wall_seconds": round(wall, 2),
        f"{name}_cpu_seconds": round(cpu, 2),
        f"{name}_rss_before_mb": rss_before,
        f"{name}_peak_rss_mb": peak_rss_mb(),
        f"{name}_stored": result.stored,
        f"{name}_dropped": result.dropped,
        f"{name}_pages": result.pages,
        **{f"{name}_{key}": after[key] - before[key] for key in SENT},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("--calendars", type=int, default=1000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    quiet()
    print(json.dumps(measure(args.calendars, args.backend), indent=2))


if __name__ == "__main__":
    main()

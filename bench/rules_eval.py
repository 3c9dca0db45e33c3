"""Rules evaluation cost: full and incremental, for 10,000 pairings with a year of sessions.

Timelines are written straight into the database (no calendars, no sync): each pairing
meets every other week for a year, with a mix of held, missed, cancelled and rescheduled
sessions, and is judged by eight rules (one of each kind). Figures:

- ``full_first_s``: first full evaluation (every finding is created);
- ``full_again_s``: a full evaluation over unchanged data (writes nothing);
- ``incremental_idle_s``: an incremental run with nothing due;
- ``incremental_15min_s``: the next scheduled run, 15 minutes later, nothing changed;
- ``incremental_day_s``: an incremental run a day later, after 1% of pairings changed;
- ``*_cpu_s``: the same runs in CPU seconds of this process (what load disturbs least);
- ``full_peak_rss_mb``: peak RSS of a full evaluation run alone in a fresh process over
  the same database (evaluation streams pairings in batches: it should stay flat as
  pairings and months of history grow).

Run: ``python -m bench.rules_eval [PAIRINGS] [postgresql | DATABASE_URL] [MONTHS]``
(default SQLite in a temporary folder, 12 months of history; ``postgresql``: a scratch
database made and dropped by the figure; a URL's database must be empty).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text, update

from bench.common import scratch_database
from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.stages import Context, evaluate_rules
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.migrate import upgrade
from mentorpulse.storage.models import Finding, MentoringSession, Pairing, Person, Program

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
STARTED = date(2025, 11, 1)
CONFIG = MentorpulseConfig.model_validate(
    {
        "timezone": "Europe/Berlin",
        "programs": [
            {
                "id": "eng",
                "cadence": {"every": "14d", "grace": "3d"},
                "rules": [
                    {"id": "gap", "kind": "cadence_gap", "for": "1d"},
                    {"id": "first", "kind": "first_meeting"},
                    {"id": "upcoming", "kind": "no_upcoming"},
                    {"id": "misses", "kind": "consecutive_misses", "count": 2},
                    {"id": "party", "kind": "party_disengagement"},
                    {"id": "late", "kind": "late_cancellations"},
                    {"id": "rate", "kind": "attendance_rate"},
                    {"id": "decline", "kind": "declining_frequency"},
                ],
            }
        ],
    }
)
OUTCOMES = ["presumed_held"] * 14 + ["held"] * 3 + ["missed", "cancelled", "rescheduled"]


def _populate(ctx: Context, pairings: int, rng: random.Random, months: int = 12) -> None:
    with ctx.db.begin() as db:
        db.add(Program(id="eng", name="eng"))
        db.execute(
            insert(Person),
            [
                {"email": f"p{i}@bench.example", "timezone": "Europe/Berlin"}
                for i in range(2 * pairings)
            ],
        )
        ids = dict(db.execute(select(Person.email, Person.id)).all())
        db.execute(
            insert(Pairing),
            [
                {
                    "key": f"eng:p{2 * i}@bench.example:p{2 * i + 1}@bench.example",
                    "program_id": "eng",
                    "mentor_id": ids[f"p{2 * i}@bench.example"],
                    "mentee_id": ids[f"p{2 * i + 1}@bench.example"],
                    "started_on": STARTED,
                    "active": True,
                    "events_changed": False,
                    "sessions_changed": True,
                }
                for i in range(pairings)
            ],
        )
        pairing_ids = list(db.scalars(select(Pairing.id)))
        count = 30 * months // 12  # every other week, a couple of months ahead
        first = datetime(2025, 11, 3, 9, tzinfo=UTC) + timedelta(weeks=2 * (30 - count))
        rows: list[dict[str, Any]] = []
        for pairing_id in pairing_ids:
            offset = timedelta(days=rng.randrange(14), hours=rng.randrange(9))
            for n in range(count):
                start = first + offset + timedelta(weeks=2 * n)
                outcome = "upcoming" if start > NOW else rng.choice(OUTCOMES)
                cancelled = outcome in ("cancelled", "rescheduled")
                rows.append(
                    {
                        "pairing_id": pairing_id,
                        "key": f"s{n}",
                        "start": start,
                        "end": start + timedelta(hours=1),
                        "outcome": outcome,
                        "confidence": 0.8,
                        "cancelled_by": f"p{rng.randrange(2)}@bench.example" if cancelled else None,
                        "cancelled_hours_before": rng.choice([2.0, 30.0]) if cancelled else None,
                        "updated_at": NOW,
                    }
                )
            if len(rows) > 5_000:
                db.execute(insert(MentoringSession), rows)
                rows = []
        if rows:
            db.execute(insert(MentoringSession), rows)
    if ctx.engine.dialect.name == "postgresql":
        # Statistics, as autovacuum gathers them within a minute of such a load: without
        # them the planner scans every session for each batch of pairings.
        with ctx.engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()


class _Timer:
    """Wall and CPU seconds of each timed action, by name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str, action: Any) -> None:
        began, cpu = time.perf_counter(), time.process_time()
        action()
        self.wall[name] = time.perf_counter() - began
        self.cpu[name] = time.process_time() - cpu


def _full_peak_rss_mb(url: str, folder: str) -> float:
    """Peak RSS of one full evaluation over the database at ``url``, in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.rules_eval", "_full_rss", url, folder],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def _full_rss(url: str, folder: str) -> None:
    """The child of :func:`_full_peak_rss_mb`: one full evaluation, then its peak RSS."""
    from bench.common import peak_rss_mb

    engine = make_engine(url, Path(folder))
    evaluate_rules(Context(CONFIG, [], engine, session_factory(engine), lambda: NOW), full=True)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def measure(
    pairings: int = 10_000, database_url: str | None = None, months: int = 12
) -> dict[str, float | int]:
    """Build the timelines, then time full and incremental evaluations."""
    rng = random.Random(7)
    timed = _Timer()
    with tempfile.TemporaryDirectory() as folder:
        url = database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = make_engine(url, Path(folder))
        upgrade(engine)
        clock = [NOW]
        roster: list[RosterPairing] = []  # overrides only; pairings are in the database
        ctx = Context(CONFIG, roster, engine, session_factory(engine), lambda: clock[0])
        try:
            _populate(ctx, pairings, rng, months)
            with ctx.db() as db:
                sessions = db.scalar(select(func.count()).select_from(MentoringSession)) or 0
            timed("full_first", lambda: evaluate_rules(ctx, full=True))
            timed("full_again", lambda: evaluate_rules(ctx, full=True))
            timed("incremental_idle", lambda: evaluate_rules(ctx))
            clock[0] = NOW + timedelta(minutes=15)  # the daemon's default evaluate_every
            timed("incremental_15min", lambda: evaluate_rules(ctx))
            clock[0] = NOW + timedelta(days=1)
            with ctx.db.begin() as db:
                changed = rng.sample(range(1, pairings + 1), max(1, pairings // 100))
                db.execute(
                    update(Pairing).where(Pairing.id.in_(changed)).values(sessions_changed=True)
                )
            due = 0
            with ctx.db() as db:
                due = (
                    db.scalar(
                        select(func.count())
                        .select_from(Pairing)
                        .where((Pairing.sessions_changed) | (Pairing.next_deadline <= clock[0]))
                    )
                    or 0
                )
            timed("incremental_day", lambda: evaluate_rules(ctx))
            with ctx.db() as db:
                findings = db.scalar(select(func.count()).select_from(Finding)) or 0
            rss = _full_peak_rss_mb(url, folder)  # last: it writes what it finds
        finally:
            engine.dispose()
    wall, cpu = timed.wall, timed.cpu
    return {
        "pairings": pairings,
        "months": months,
        "sessions": sessions,
        "findings": findings,
        "full_first_s": round(wall["full_first"], 2),
        "full_again_s": round(wall["full_again"], 2),
        "incremental_idle_s": round(wall["incremental_idle"], 3),
        "incremental_15min_s": round(wall["incremental_15min"], 3),
        "incremental_day_due_pairings": due,
        "incremental_day_s": round(wall["incremental_day"], 2),
        **{f"{name}_cpu_s": round(seconds, 3) for name, seconds in cpu.items()},
        "full_peak_rss_mb": rss,
    }


def main() -> None:
    if sys.argv[1:2] == ["_full_rss"]:
        _full_rss(sys.argv[2], sys.argv[3])
        return
    pairings = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    where = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] != "-" else None
    months = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    if where == "postgresql":  # a scratch database, dropped afterwards
        with scratch_database("postgresql", Path(tempfile.gettempdir())) as url:
            figures = measure(pairings, url, months)
    else:  # a URL is used as given: its database must be empty
        figures = measure(pairings, where, months)
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()

"""``python -m bench``: measure what it costs to keep an organisation current.

    python -m bench run [--scale small|medium|large] [--json OUT] [--only ingest,poll]
    python -m bench generate --pairs N --months M --noise K --seed S --out DIR

``run`` measures every figure in a process of its own (so peak RSS is that figure's),
on SQLite and on PostgreSQL, and prints one table per figure, then the targets. Figure
modules other engineers add (``bench/rules_eval.py`` …) are found by name: when the
module exists its ``measure(...)`` runs, otherwise the figure says "not yet measured".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Figure:
    name: str  # the module: bench/<name>.py
    title: str
    per_backend: bool = True


FIGURES = (
    Figure("ingest", "1. full ingest, next to the executemany floor"),
    Figure("poll", "2. poll with no change and with 1% changed events"),
    Figure("rules_eval", "3. rule evaluation, full and incremental (issue 3)"),
    Figure("report", "4. quarterly report"),
    Figure("dispatch", "5. notification dispatch to a local SMTP server (issue 4)"),
    Figure("caldav_sync", "CalDAV sync against Radicale/Xandikos (issue 5)"),
    Figure("google_sync", "Google Calendar sync against the fake (issue 6)"),
    Figure("graph_sync", "Microsoft Graph sync against the fake (issue 7)"),
    Figure("exchange_sync", "on-premises Exchange (EWS) sync against the fake (issue 16)"),
)
NOT_MEASURED = "not yet measured"


def _arguments(fn: Any, offered: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``offered`` that ``fn`` accepts (all of them for **kwargs)."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return offered
    return {k: v for k, v in offered.items() if k in parameters}


def accepts_backend(name: str) -> bool:
    """Whether the figure runs once per database: it takes ``backend`` or ``database_url``."""
    module = importlib.import_module(f"bench.{name}")
    return bool(_arguments(module.measure, {"backend": None, "database_url": None}))


def offered_arguments(
    fn: Any, scale: str, backend: str | None, database_url: str | None
) -> dict[str, Any]:
    """What ``run`` can tell a figure's ``measure``, reduced to what it accepts.

    The scale's sizes go by the names the figure modules use (``pairings``; ``calendars``
    and ``mailboxes`` for the people of the organisation), so ``--scale large`` asks every
    figure about 10,000 pairings.
    """
    from bench import common
    from mentorpulse.sample import SCALES

    spec = SCALES[scale]
    offered: dict[str, Any] = {"scale": scale, "pairings": spec.pairs}
    if backend is not None:
        offered |= {"backend": backend, "database_url": database_url}
    wanted = set(inspect.signature(fn).parameters)
    if {"org", "org_dir", "workdir", "calendars", "mailboxes"} & wanted:
        org = common.org_dir(scale)
        people = common.summary(org).counts["people"]
        offered |= {"org": org, "org_dir": org, "workdir": common.workdir()}
        offered |= {"calendars": people, "mailboxes": people}
    return _arguments(fn, offered)


def measure_here(name: str, scale: str, backend: str | None) -> dict[str, Any]:
    """Run ``bench.<name>.measure`` in this process with the arguments it takes."""
    from bench import common

    common.quiet()
    # Stopped from outside: unwind, so the scratch databases are dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    module = importlib.import_module(f"bench.{name}")
    wants_url = "database_url" in _arguments(module.measure, {"database_url": None})
    if backend is None or not wants_url:
        result: dict[str, Any] = module.measure(
            **offered_arguments(module.measure, scale, backend, None)
        )
        return result
    with common.scratch_database(backend, common.workdir()) as url:
        return dict(module.measure(**offered_arguments(module.measure, scale, backend, url)))


def measure_in_child(name: str, scale: str, backend: str | None) -> dict[str, Any]:
    """One figure in a fresh interpreter; its last line of output is the JSON result."""
    command = [sys.executable, "-m", "bench", "_measure", name, "--scale", scale]
    if backend is not None:
        command += ["--backend", backend]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": "no output"}
    return result


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def run(
    scale: str, only: list[str] | None, backends: list[str], json_out: Path | None = None
) -> dict[str, Any]:
    """Every figure on every backend, one backend after the other.

    With ``json_out`` the results so far are written after each figure, so a long run
    that is stopped still leaves what it measured.
    """
    from bench import common

    results: dict[str, Any] = {"scale": scale, "machine": machine(), "figures": {}}
    results["run"] = common.run_id()  # the figures started below inherit it
    try:
        _measure_all(results, scale, only, backends, json_out)
    finally:
        common.forget_run([scale])
    results["targets"] = targets_of(results["figures"])
    return results


def _measure_all(
    results: dict[str, Any],
    scale: str,
    only: list[str] | None,
    backends: list[str],
    json_out: Path | None,
) -> None:
    figures = [f for f in FIGURES if not only or f.name in only]
    for figure in figures:
        if importlib.util.find_spec(f"bench.{figure.name}") is None:
            results["figures"][figure.name] = NOT_MEASURED
        else:
            results["figures"][figure.name] = {}
    for backend in backends:
        for figure in figures:
            measured = results["figures"][figure.name]
            if measured == NOT_MEASURED:
                continue
            target = backend if accepts_backend(figure.name) else None
            column = target or "-"
            if column in measured:
                continue
            print(f"measuring {figure.name} on {column} ...", file=sys.stderr, flush=True)
            load = round(os.getloadavg()[0], 2)  # what else the machine did as it started
            measured[column] = {"load_average_1m": load} | measure_in_child(
                figure.name, scale, target
            )
            results["targets"] = targets_of(results["figures"])
            if json_out is not None:
                json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _get(figures: dict[str, Any], name: str, backend: str, key: str) -> Any:
    figure = figures.get(name)
    if not isinstance(figure, dict):
        return None
    return figure.get(backend, {}).get(key)


def targets_of(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(target: str, value: Any, ok: bool | None) -> None:
        rows.append({"target": target, "measured": value, "met": ok})

    for backend in BACKENDS:
        ratio = _get(figures, "ingest", backend, "store_over_floor")
        if ratio is not None:
            add(f"ingest store within 3x of the floor ({backend})", ratio, ratio <= 3)
        rows_written = _get(figures, "poll", backend, "nochange_event_rows_written")
        if rows_written is not None:
            add(f"no-change poll writes no rows ({backend})", rows_written, rows_written == 0)
        requests = _get(figures, "poll", backend, "nochange_requests_per_calendar")
        if requests is not None:
            add(f"no-change poll: <= 1 request per calendar ({backend})", requests, requests <= 1)
        poll = _get(figures, "poll", backend, "nochange_seconds")
        full = _get(figures, "ingest", backend, "seconds_total")
        if poll is not None and full:
            share = round(poll / full, 4)
            add(f"no-change poll under 5% of full ingest ({backend})", share, share < 0.05)
        report = _get(figures, "report", backend, "report_csv_seconds")
        if report is not None:
            add(f"quarterly report under 3 s at 10,000 pairings ({backend})", report, None)
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(results: dict[str, Any]) -> None:
    info = results["machine"]
    print(
        f"mentorpulse bench: scale {results['scale']}, {info['date']}, {info['cpus']} CPUs, "
        f"Python {info['python']}, load {info['load_average_1m']}"
    )
    for figure in FIGURES:
        if figure.name not in results["figures"]:
            continue
        value = results["figures"][figure.name]
        print(f"\n{figure.title}")
        if not isinstance(value, dict):
            print(f"  {value}")
            continue
        columns = list(value)
        keys: list[str] = []
        for per in value.values():
            keys += [k for k in per if k not in keys]
        width = max([len(k) for k in keys] + [10])
        print("  " + "".ljust(width) + "".join(c.rjust(14) for c in columns))
        for key in keys:
            cells = "".join(_cell(value[c].get(key, "")).rjust(14) for c in columns)
            print("  " + key.ljust(width) + cells)
    if results.get("targets"):
        print("\ntargets")
        for row in results["targets"]:
            verdict = {True: "met", False: "MISSED", None: "see scale"}[row["met"]]
            print(f"  {row['target']:<60} {_cell(row['measured']):>10}  {verdict}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure what it costs to keep an organisation's sessions current.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,generate}")
    run_p = commands.add_parser("run", help="Measure every figure and print a table.")
    run_p.add_argument(
        "--scale", choices=("small", "medium", "large"), default="small", help="Organisation size."
    )
    run_p.add_argument("--json", type=Path, help="Also write the results as JSON here.")
    run_p.add_argument("--only", help="Comma-separated figure names (ingest,poll,report,...).")
    run_p.add_argument(
        "--backends", default=",".join(BACKENDS), help="Comma-separated: sqlite,postgresql."
    )
    commands.add_parser(
        "generate",
        help="Write a synthetic organisation (see python -m bench.generate --help).",
        add_help=False,
    )
    child = commands.add_parser("_measure")  # one figure, in the child process run starts
    child.add_argument("name")
    child.add_argument("--scale", default="small")
    child.add_argument("--backend")

    args, rest = parser.parse_known_args(argv)
    if args.command == "generate":
        from bench import generate

        generate.main(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "_measure":
        print(json.dumps(measure_here(args.name, args.scale, args.backend)))
        return
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = run(args.scale, only, backends, args.json)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

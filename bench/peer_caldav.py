"""The peer figure: mentorpulse's CalDAV source beside vdirsyncer, on Radicale and Xandikos.

    python -m bench.peer_caldav [--events 5000] [--runs 3] [--servers radicale,xandikos]
                                [--json OUT]

Each server runs in a process of its own and holds the same collection (bench/caldav_sync's
``events`` objects, one in ten a weekly series). On each, A = ``mentorpulse sync --once``
(a subprocess on its own fresh SQLite database, the way a user runs it) and B = vdirsyncer
0.21 (``vdirsyncer sync``, caldav → filesystem, a fresh status and folder) each do a first
sync and then a no-change sync, ``--runs`` times. The CPU is the children's user + sys
(``getrusage(RUSAGE_CHILDREN)`` deltas): the client's share only, never the server's.

Beside each figure stands the server's share: a bare ``curl`` of the same sync-collection
REPORT mentorpulse sends (ETags only; first: token-less; no-change: with the token), timed
the same way; the first sync's multigets that follow it are not in it.
The goals are on the client: first sync ≤ 1 times vdirsyncer's CPU, no-change ≤ 0.5 times.
Without vdirsyncer (``pip install -e '.[bench]'``) B's column says why it is empty.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx

from bench.caldav_sync import _calendar, _event
from tests.servers import caldav as servers

SERVERS = servers.SERVERS
GOALS = {"first": 1.0, "no-change": 0.5}  # A/B of the client's CPU
VDIRSYNCER_MISSING = "skipped: vdirsyncer not installed"
# What mentorpulse's caldav source asks first (the ETags; bodies follow in multigets).
SYNC_REPORT = """<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:">
  <d:sync-token>{token}</d:sync-token>
  <d:sync-level>1</d:sync-level>
  <d:prop><d:getetag/></d:prop>
</d:sync-collection>
"""
_TOKEN = re.compile(rb"<(?:\w+:)?sync-token>([^<]+)</(?:\w+:)?sync-token>")


@dataclass(frozen=True)
class Timing:
    """One client run: the children's CPU seconds (user + sys) and the wall seconds."""

    cpu: float
    wall: float


def timed_child(command: list[str], **kwargs: Any) -> tuple[Timing, bytes]:
    """Run ``command`` to its end; its timing and its output (stdout, then stderr). The CPU
    is from RUSAGE_CHILDREN, so a server (in a process of its own, not waited for here) is
    never counted as the client's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False, **kwargs)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])}… exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(cpu=cpu, wall=wall), done.stdout + done.stderr


# -- the servers, each in a process of its own ---------------------------------------------


def _serve(kind: str, folder: str, ready: Queue[Any], stop: Event) -> None:
    with servers.start(kind, Path(folder)) as server:
        ready.put(asdict(server))
        stop.wait()


@contextmanager
def server_process(kind: str, folder: Path) -> Iterator[servers.CaldavServer]:
    """``kind`` (tests/servers/caldav.py starts it) in a process apart from the clients'."""
    context = multiprocessing.get_context("spawn")
    ready: Queue[Any] = context.Queue()
    stop = context.Event()
    process = context.Process(target=_serve, args=(kind, str(folder), ready, stop), daemon=True)
    process.start()
    try:
        yield servers.CaldavServer(**ready.get(timeout=120))
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def seed(server: servers.CaldavServer, folder: Path, events: int) -> str:
    """The bench collection of ``events`` objects on ``server``; returns its URL."""
    objects = {f"bench-{n}.ics": _calendar([_event(n)]) for n in range(events)}
    auth = (server.username, server.password)
    if server.kind == "radicale":
        # Radicale takes a whole calendar in one PUT of the collection.
        url = f"{server.home}bench/"
        body = _calendar([_event(n) for n in range(events)])
        response = httpx.put(
            url, content=body, headers={"Content-Type": "text/calendar"}, auth=auth, timeout=600
        )
        response.raise_for_status()
        return url
    calendar = servers.new_calendar(server, "bench")
    _commit_to_xandikos(folder / "svc" / "calendars" / "bench", objects)
    return str(calendar.url)


def _commit_to_xandikos(repository: Path, objects: dict[str, bytes]) -> None:
    """Every object in one commit of the collection's Git tree (5,000 PUTs would be 5,000
    commits of a growing tree: minutes); the server re-reads its index on the next request."""
    import dulwich.repo
    from dulwich.index import index_entry_from_stat, locked_index
    from dulwich.objects import Blob

    repo = dulwich.repo.Repo(str(repository))
    with locked_index(repo.index_path()) as index:
        for name, data in objects.items():
            path = repository / name
            path.write_bytes(data)
            blob = Blob.from_string(data)
            repo.object_store.add_object(blob)
            index[name.encode()] = index_entry_from_stat(os.lstat(path), blob.id)
        tree = index.commit(repo.object_store)
        repo.get_worktree().commit(message=b"bench collection", tree=tree)


# -- the clients ---------------------------------------------------------------------------


def _mentorpulse_config(folder: Path, server: servers.CaldavServer, calendar: str) -> Path:
    """A user's config: one caldav source, its own SQLite file, a roster of the collection's
    pairs (so every event is a session, as in a real program)."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = sorted({(n % 200, n % 500) for n in range(1000)})
    (folder / "roster.csv").write_text(
        "program,mentor_email,mentee_email,started_on\n"
        + "".join(f"eng,mentor{a}@example.org,mentee{b}@example.org,2025-01-01\n" for a, b in pairs)
    )
    config = {
        "database": f"sqlite:///{folder / 'mentorpulse.db'}",
        "sources": [
            {
                "id": "bench",
                "kind": "caldav",
                "url": server.url,
                "username": server.username,
                "password": server.password,
                "calendars": [{"url": calendar}],
                "sync": "sync-token",
                # the collection's events lie within ~90 days of when bench/caldav_sync
                # dates them; these windows hold all of them whenever the figure runs
                "window_past": "730d",
                "window_future": "730d",
            }
        ],
        "roster": {"path": "roster.csv"},
        "programs": [
            {
                "id": "eng",
                "name": "Engineering mentoring",
                "match": {"title_keywords": ["mentoring"]},
                "cadence": {"every": "14d", "grace": "3d"},
            }
        ],
    }
    path = folder / "mentorpulse.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def mentorpulse_runs(
    server: servers.CaldavServer, calendar: str, folder: Path, runs: int
) -> dict[str, list[Timing]]:
    """``runs`` pairs of (first sync, no-change sync), each pair on a fresh database."""
    byte_compiled()
    times: dict[str, list[Timing]] = {"first": [], "no-change": []}
    command = [sys.executable, "-m", "mentorpulse", "sync", "--once", "--config"]
    for run in range(runs):
        config = _mentorpulse_config(folder / f"mentorpulse-{run}", server, calendar)
        env = {**os.environ, "MENTORPULSE_DATA_DIR": str(config.parent)}
        for sync in ("first", "no-change"):
            timing, output = timed_child([*command, str(config)], env=env)
            stored = _stored(output)
            if (stored > 0) != (sync == "first"):
                raise RuntimeError(f"mentorpulse's {sync} sync stored {stored} occurrences")
            times[sync].append(timing)
    return times


def byte_compiled() -> None:
    """mentorpulse's modules byte-compiled, as ``pip install`` leaves an installed package
    (and left vdirsyncer). An editable checkout under PYTHONDONTWRITEBYTECODE (as on the
    bench machine) otherwise compiles every module it loads on every run: ~0.05 s of a
    no-change sync's CPU that no installed copy pays."""
    import compileall

    import mentorpulse

    compileall.compile_dir(str(Path(mentorpulse.__file__).parent), quiet=1)


def _stored(output: bytes) -> int:
    """The occurrences a ``sync --once`` stored, from its ``source_synced`` log line."""
    for line in output.splitlines():
        if b'"source_synced"' in line:
            return int(json.loads(line)["stored"])
    raise RuntimeError("mentorpulse sync --once logged no source_synced line")


def vdirsyncer_command() -> list[str] | None:
    """How to run vdirsyncer here (beside this Python first), or None if it is missing."""
    beside = Path(sys.executable).with_name("vdirsyncer")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("vdirsyncer")
    return [found] if found else None


def _vdirsyncer_config(folder: Path, server: servers.CaldavServer, calendar: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "local").mkdir()
    path = folder / "config"
    path.write_text(
        f"""[general]
status_path = "{folder / "status"}/"

[pair bench]
a = "bench_remote"
b = "bench_local"
collections = null
conflict_resolution = "a wins"

[storage bench_remote]
type = "caldav"
url = "{calendar}"
username = "{server.username}"
password = "{server.password}"
read_only = true

[storage bench_local]
type = "filesystem"
path = "{folder / "local"}/"
fileext = ".ics"
"""
    )
    return path


def vdirsyncer_runs(
    command: list[str],
    server: servers.CaldavServer,
    calendar: str,
    folder: Path,
    runs: int,
    objects: int,
) -> dict[str, list[Timing]]:
    """``runs`` pairs of (first sync, no-change sync), each pair from an empty status."""
    times: dict[str, list[Timing]] = {"first": [], "no-change": []}
    for run in range(runs):
        config = _vdirsyncer_config(folder / f"vdirsyncer-{run}", server, calendar)
        sync = [*command, "--config", str(config), "sync"]
        # Setting up the pair is done once by a user, before any sync: not timed.
        subprocess.run(
            [*command, "--config", str(config), "discover", "bench"],
            input=b"y\n" * 4,
            capture_output=True,
            check=True,
        )
        times["first"].append(timed_child(sync)[0])
        times["no-change"].append(timed_child(sync)[0])
        copied = len(list((config.parent / "local").glob("*.ics")))
        if copied != objects:
            raise RuntimeError(f"vdirsyncer copied {copied} of the {objects} objects")
    return times


def server_share(server: servers.CaldavServer, calendar: str, runs: int) -> dict[str, list[Timing]]:
    """A bare curl of the sync-collection REPORT: what the server alone takes to answer."""
    times: dict[str, list[Timing]] = {"first": [], "no-change": []}
    with tempfile.TemporaryDirectory() as tmp:
        answer = Path(tmp) / "answer.xml"

        def report(token: str) -> Timing:
            return timed_child(
                [
                    "curl", "--silent", "--show-error", "--fail", "--request", "REPORT",
                    "--user", f"{server.username}:{server.password}",
                    "--header", "Depth: 1",
                    "--header", "Content-Type: application/xml; charset=utf-8",
                    "--data-binary", SYNC_REPORT.format(token=token),
                    "--output", str(answer), calendar,
                ]
            )[0]  # fmt: skip

        for _ in range(runs):
            times["first"].append(report(""))
            found = _TOKEN.search(answer.read_bytes())
            if found is None:
                raise RuntimeError(f"{server.kind} answered the REPORT without a sync-token")
            times["no-change"].append(report(found.group(1).decode()))
    return times


# -- the figure ----------------------------------------------------------------------------


def _median(timings: list[Timing], field: str) -> float:
    return round(float(statistics.median(getattr(t, field) for t in timings)), 3)


def measure(events: int = 5000, runs: int = 3, kinds: tuple[str, ...] = SERVERS) -> dict[str, Any]:
    """Medians per server and sync: A (mentorpulse), B (vdirsyncer), the server's share."""
    vdirsyncer = vdirsyncer_command()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peer-caldav-") as tmp:
        for kind in kinds:
            folder = Path(tmp) / kind
            with server_process(kind, folder / "server") as server:
                calendar = seed(server, folder / "server", events)
                a = mentorpulse_runs(server, calendar, folder, runs)
                b = (
                    vdirsyncer_runs(vdirsyncer, server, calendar, folder, runs, events)
                    if vdirsyncer
                    else None
                )
                bare = server_share(server, calendar, runs)
            for sync in ("first", "no-change"):
                rows.append(_row(kind, sync, a[sync], b[sync] if b else None, bare[sync]))
    return {
        "events": events,
        "runs": runs,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "vdirsyncer": "installed" if vdirsyncer else VDIRSYNCER_MISSING,
        "rows": rows,
    }


def _row(
    kind: str, sync: str, a: list[Timing], b: list[Timing] | None, bare: list[Timing]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "server": kind,
        "sync": sync,
        "mentorpulse_cpu_s": _median(a, "cpu"),
        "mentorpulse_wall_s": _median(a, "wall"),
        "server_share_wall_s": _median(bare, "wall"),
        "goal_cpu_ratio": GOALS[sync],
    }
    if b is not None:
        row |= {
            "vdirsyncer_cpu_s": _median(b, "cpu"),
            "vdirsyncer_wall_s": _median(b, "wall"),
            "cpu_ratio": round(row["mentorpulse_cpu_s"] / max(_median(b, "cpu"), 1e-3), 2),
            "wall_ratio": round(row["mentorpulse_wall_s"] / max(_median(b, "wall"), 1e-3), 2),
        }
    return row


def table(figures: dict[str, Any]) -> str:
    """The rows as a text table, A/B ratios and the server's share beside them."""
    head = (
        f"{'server':9} {'sync':9} {'A cpu s':>8} {'B cpu s':>8} {'cpu A/B':>8} {'goal':>5} "
        f"{'A wall s':>9} {'B wall s':>9} {'wall A/B':>9} {'server s':>9}"
    )
    lines = [
        f"CalDAV peer figure: {figures['events']} events, medians of {figures['runs']} runs, "
        f"load average {figures['load_average']}",
        "A = mentorpulse sync --once, B = vdirsyncer sync (caldav -> filesystem); "
        "CPU = the client's user+sys; server s = a bare curl of the sync-collection REPORT",
        head,
        "-" * len(head),
    ]
    for row in figures["rows"]:

        def cell(key: str, width: int, row: dict[str, Any] = row) -> str:
            return f"{row.get(key, '-'):>{width}}"

        lines.append(
            f"{row['server']:9} {row['sync']:9} {row['mentorpulse_cpu_s']:>8} "
            f"{cell('vdirsyncer_cpu_s', 8)} {cell('cpu_ratio', 8)} {row['goal_cpu_ratio']:>5} "
            f"{row['mentorpulse_wall_s']:>9} {cell('vdirsyncer_wall_s', 9)} "
            f"{cell('wall_ratio', 9)} {row['server_share_wall_s']:>9}"
        )
    if figures["vdirsyncer"] != "installed":
        lines.append(f"vdirsyncer: {figures['vdirsyncer']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures = measure(args.events, args.runs, tuple(args.servers.split(",")))
    print(table(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

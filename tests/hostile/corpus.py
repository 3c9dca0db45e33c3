"""A hostile iCalendar corpus, built on the fly, and a runner that syncs it under limits.

Every case is one .ics file: something malicious or mutated (RRULE bombs, NUL bytes and
control characters, a 5,000-character UID, deep nesting, garbage, huge lines, a real-world
file from ../shared/testdata/ics-realworld read in place and mutated) beside valid events
between a rostered pair. :func:`run` syncs the folder with the real CLI in a subprocess
with ``resource`` limits and a wall timeout, then reads the database and the JSON logs;
:func:`judge` turns that into the figures: cases tried, survived, lost, doubled.

``python -m tests.hostile.corpus [--database URL]`` builds, runs and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from mentorpulse.connectors.base import ITEM_MAX, UID_MAX, short_text, stable_id
from mentorpulse.storage.models import Event, Source

REPO = Path(__file__).resolve().parents[2]
MENTOR, MENTEE = "alice@example.org", "bob@example.org"
# Planted where no message has a reason to quote it (DESCRIPTION is never read).
SECRET = "S3CR3T-f00d-DESCRIPTION"
MEMORY_LIMIT = 1536 * 1024 * 1024  # RLIMIT_AS of the sync process
CPU_LIMIT = 240  # RLIMIT_CPU seconds
WALL_TIMEOUT = 400.0  # the 2 shared cores may be busy with other work
REALWORLD_NAME = "calendars__x_location.ics"


@dataclass
class Case:
    """One file of the corpus and what a user expects from it."""

    name: str
    body: bytes
    valid: tuple[str, ...] = ()  # UIDs (as written) of one-off pair events to store
    series: tuple[str, ...] = ()  # UIDs (as written) of pair series to store (once each)
    bad: tuple[str, ...] = ()  # UIDs (as written) that must be item errors
    file_error: bool = False  # the file as a whole cannot be read: an error naming it
    note: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.ics"


def _day(offset: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=offset)).strftime("%Y%m%d")


def pair_event(uid: str, offset: int = 7, extra: str = "") -> str:
    """A one-off meeting of the rostered pair ``offset`` days ago (inside any window)."""
    day = _day(offset)
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
        f"DTSTART:{day}T100000Z\r\nDTEND:{day}T110000Z\r\nSUMMARY:Mentoring\r\n"
        f"DESCRIPTION:{SECRET}\r\nORGANIZER:mailto:{MENTOR}\r\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTOR}\r\n"
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{MENTEE}\r\n{extra}END:VEVENT\r\n"
    )


def bad_event(uid: str, lines: str, *, start: str | None = None) -> str:
    """An event of the pair made hostile by ``lines`` (a start inside the window)."""
    dtstart = start or f"DTSTART:{_day(20)}T090000Z"
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\n{dtstart}\r\nDURATION:PT1H\r\n"
        f"SUMMARY:Mentoring\r\nDESCRIPTION:{SECRET}\r\nORGANIZER:mailto:{MENTOR}\r\n"
        f"ATTENDEE:mailto:{MENTEE}\r\n{lines}END:VEVENT\r\n"
    )


def calendar(*events: str) -> bytes:
    body = "".join(events)
    text = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\n{body}END:VCALENDAR\r\n"
    return text.encode("utf-8", "surrogatepass")


def _rrule_case(name: str, rule: str, start: str | None = None) -> Case:
    return Case(
        name,
        calendar(pair_event(f"{name}-ok"), bad_event(name, f"RRULE:{rule}\r\n", start=start)),
        valid=(f"{name}-ok",),
        bad=(name,),
    )


def cases(realworld: Path | None) -> list[Case]:
    """The corpus; ``realworld`` is ../shared/testdata/ics-realworld, read in place."""
    every = lambda n: ",".join(map(str, range(n)))  # noqa: E731 - a one-line helper
    found = [
        # -- recurrence bombs: the figures on main
        _rrule_case("rrule-interval-zero", "FREQ=DAILY;INTERVAL=0"),
        _rrule_case("rrule-every-second", f"FREQ=HOURLY;BYMINUTE={every(60)};BYSECOND={every(60)}"),
        _rrule_case("rrule-every-minute", f"FREQ=DAILY;BYHOUR={every(24)};BYMINUTE={every(60)}"),
        _rrule_case("rrule-hourly-pair", "FREQ=HOURLY"),
        _rrule_case("rrule-year-one-hourly", "FREQ=HOURLY", start="DTSTART:00010101T090000Z"),
        _rrule_case("rrule-never-matches", "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"),
        _rrule_case("rrule-setpos-never", "FREQ=WEEKLY;BYDAY=MO;BYSETPOS=5"),
        _rrule_case(
            "rrule-count-from-year-one",
            "FREQ=DAILY;COUNT=100000000",
            start="DTSTART:00010101T090000Z",
        ),
        _rrule_case("rrule-byhour-out-of-range", "FREQ=DAILY;BYHOUR=99"),
        _rrule_case("rrule-secondly", "FREQ=SECONDLY"),
        _rrule_case("rrule-huge-interval", "FREQ=DAILY;INTERVAL=999999999999"),
        Case(
            "rdate-flood",
            calendar(
                pair_event("rdate-flood-ok"),
                bad_event(
                    "rdate-flood",
                    "".join(
                        "RDATE:"
                        + ",".join(
                            f"{_day(d)}T{h:02d}{m:02d}00Z" for h in range(24) for m in range(60)
                        )
                        + "\r\n"
                        for d in (1, 2, 3)
                    ),
                ),
            ),
            valid=("rdate-flood-ok",),
            bad=("rdate-flood",),
        ),
        Case(
            "rdate-dense-day",
            calendar(
                pair_event("rdate-dense-ok"),
                bad_event(
                    "rdate-dense-day",
                    "RDATE:" + ",".join(f"{_day(1)}T{h:02d}0000Z" for h in range(24)) + "\r\n",
                ),
            ),
            valid=("rdate-dense-ok",),
            bad=("rdate-dense-day",),
        ),
        # -- values PostgreSQL refuses or that do not fit their columns: stored, cleaned
        Case(
            "nul-in-uid",
            calendar(pair_event("nul\x00uid")),
            valid=("nul\x00uid",),
        ),
        Case(
            "controls-everywhere",
            calendar(
                pair_event(
                    "ctrl\x01\x1b[31muid",
                    extra="CATEGORIES:Mentor\x00ing,\x1b]8;;http://evil.example\x07link\r\n"
                    "ATTENDEE;CN=Eve\x00:mailto:eve\x00@example.org\r\n",
                ).replace("SUMMARY:Mentoring", "SUMMARY:Ment\x00oring \x1b[2J\x7f\u202e")
            ),
            valid=("ctrl\x01\x1b[31muid",),
        ),
        Case("uid-5000", calendar(pair_event("u" * 5000)), valid=("u" * 5000,)),
        Case("uid-only-controls", calendar(pair_event("\x01\x02\x03")), valid=("\x01\x02\x03",)),
        Case(
            "long-everything",
            calendar(
                pair_event(
                    "long-everything",
                    extra=f"CATEGORIES:{'c' * 5000},{','.join(f'k{i}' for i in range(5000))}\r\n"
                    f"ATTENDEE:mailto:{'x' * 400}@example.org\r\n"
                    f"X-GOOGLE-CONFERENCE:https://meet.example/{'m' * 3000}\r\n"
                    "SEQUENCE:99999999999\r\n",
                ).replace("SUMMARY:Mentoring", "SUMMARY:" + "Mentoring " * 2000)
            ),
            valid=("long-everything",),
        ),
        Case(
            "invalid-utf8",
            calendar(pair_event("invalid-utf8", extra="LOCATION:here\r\n")).replace(
                b"SUMMARY:Mentoring", b"SUMMARY:Ment\xff\xfe\xed\xa0\x80oring"
            ),
            valid=("invalid-utf8",),
        ),
        Case(
            "long-organizer",
            calendar(
                pair_event("long-organizer").replace(
                    f"ORGANIZER:mailto:{MENTOR}", "ORGANIZER:mailto:" + "o" * 500 + "@example.org"
                )
            ),
            valid=("long-organizer",),
        ),
        # -- broken times and zones: an item error, the rest of the file stored
        Case(
            "broken-times",
            calendar(
                pair_event("broken-times-ok"),
                bad_event("dtstart-garbage", "", start="DTSTART:2024-13-45"),
                bad_event("dtstart-year-zero", "", start="DTSTART:00000101T000000Z"),
                bad_event("dtend-garbage", "DTEND:tomorrow\r\n").replace("DURATION:PT1H\r\n", ""),
                bad_event("duration-garbage", "").replace("DURATION:PT1H", "DURATION:P9999999999W"),
                bad_event("no-dtstart", "", start="X-NOTHING:1"),
            ),
            valid=("broken-times-ok",),
            bad=(
                "dtstart-garbage",
                "dtstart-year-zero",
                "dtend-garbage",
                "duration-garbage",
                "no-dtstart",
            ),
        ),
        Case(
            "bad-tzids",
            calendar(
                pair_event("bad-tzids-ok"),
                bad_event("tz-mars", "", start=f"DTSTART;TZID=Mars/Olympus_Mons:{_day(20)}T090000"),
                bad_event("tz-long", "", start=f"DTSTART;TZID={'Z' * 10000}:{_day(20)}T090000"),
                bad_event(
                    "tz-path", "", start=f"DTSTART;TZID=../../../etc/passwd:{_day(20)}T090000"
                ),
            ),
            valid=("bad-tzids-ok",),
            bad=("tz-mars", "tz-long", "tz-path"),
        ),
        # -- size and shape
        Case(
            "many-vevents",
            calendar(
                pair_event("many-vevents-ok"),
                *(
                    f"BEGIN:VEVENT\r\nUID:crowd-{n}\r\nDTSTART:{_day(n % 60)}T120000Z\r\n"
                    f"DURATION:PT30M\r\nATTENDEE:mailto:p{n}@example.org\r\nEND:VEVENT\r\n"
                    for n in range(20000)
                ),
            ),
            valid=("many-vevents-ok",),
            note="20,000 events of strangers: dropped, counted",
        ),
        Case(
            "many-attendees-series",
            calendar(
                pair_event("many-attendees-ok"),
                bad_event("all-hands", "")
                .replace(f"ORGANIZER:mailto:{MENTOR}\r\n", "")
                .replace(
                    f"ATTENDEE:mailto:{MENTEE}\r\n",
                    "RRULE:FREQ=DAILY;BYHOUR=9,13\r\n"
                    + "".join(f"ATTENDEE:mailto:staff{n}@example.org\r\n" for n in range(3000)),
                ),
            ),
            valid=("many-attendees-ok",),
            note="3,000 attendees times a daily series: shared, not copied",
        ),
        Case(
            "deep-nesting",
            calendar(
                pair_event("deep-nesting-ok"),
                bad_event(
                    "deep-nesting",
                    "BEGIN:X-NEST\r\n" * 3000 + "X-A:1\r\n" + "END:X-NEST\r\n" * 3000,
                ),
            ),
            valid=("deep-nesting-ok",),
            note="3,000 nested components inside one VEVENT",
        ),
        Case(
            "duplicate-uids",
            calendar(
                *(
                    pair_event("dup").replace("DTSTAMP", f"SEQUENCE:{n}\r\nDTSTAMP")
                    for n in range(500)
                )
            ),
            valid=("dup",),
        ),
        Case(
            "huge-line",
            calendar(pair_event("huge-line", extra=f"X-BLOB:{SECRET}{'A' * 5_000_000}\r\n")),
            valid=("huge-line",),
        ),
        Case(
            "huge-broken-line",
            calendar(pair_event("huge-broken-ok"))
            + b"\r\n"
            + b"B" * 150
            + SECRET.encode()
            + b"B" * 1_000_000,
            file_error=True,
            note="a 1 MB line that is no content line: the file is refused",
        ),
        Case(
            "garbage",
            bytes(range(256)) * 4096 + SECRET.encode(),
            file_error=True,
        ),
        Case(
            "truncated",
            calendar(pair_event("truncated-ok"))[:-40],
            file_error=True,
            note="half-written: refused as a whole, what it held before is kept",
        ),
        Case(
            "nul-in-property-name",
            calendar(pair_event("nul-name-ok")).replace(b"SUMMARY:", b"SUM\x00MARY:"),
            valid=("nul-name-ok",),
            note="a NUL inside a property name: an unknown property, ignored",
        ),
    ]
    if realworld is not None:
        found += _mutated_realworld(realworld)
    return found


def _mutated_realworld(realworld: Path) -> list[Case]:
    """A real exporter's file (Apple Calendar, Europe/Zurich), read in place, mutated."""
    text = (realworld / REALWORLD_NAME).read_bytes().decode()
    rule = "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    assert rule in text, f"{REALWORLD_NAME} changed: the mutation needs its RRULE"
    uid = "BFE33ADD-5553-48B5-B5A5-F9DA5CA4C393"
    people = f"ORGANIZER:mailto:{MENTOR}\r\nATTENDEE:mailto:{MENTEE}\r\n"
    # Keep the real VTIMEZONE and event, bring the pair in, and make its rule a bomb.
    bomb = text.replace(rule, f"{people}RRULE:FREQ=WEEKLY;INTERVAL=0;BYDAY=MO,TU,WE,TH,FR")
    bomb = bomb.replace("END:VCALENDAR", pair_event("realworld-ok") + "END:VCALENDAR")
    nul = text.replace(f"UID:{uid}", f"UID:{uid}\x00tail").replace(rule, f"{people}{rule}")
    return [
        Case("realworld-interval-zero", bomb.encode(), valid=("realworld-ok",), bad=(uid,)),
        Case(
            "realworld-nul-uid",
            nul.encode(),
            series=(f"{uid}\x00tail",),
            note="the real weekly series with the pair and a NUL in its UID: stored cleaned",
        ),
    ]


def one_uid_per_object(case: Case, most: int = 50) -> list[Case]:
    """``case`` cut into one file per UID (CalDAV servers store one UID per object), each
    with the calendar's header and time zones; files of more events stay whole."""
    text = case.body.decode("latin-1")
    events = re.findall(r"BEGIN:VEVENT\r\n.*?END:VEVENT\r\n", text, re.DOTALL)
    if case.file_error or not 1 < len(events) <= most:
        return [case]
    head = text[: text.index("BEGIN:VEVENT")]
    tail = text[text.rindex("END:VEVENT\r\n") + len("END:VEVENT\r\n") :]
    groups: dict[str, list[str]] = {}
    for event in events:
        found = re.search(r"^UID:(.*?)\r\n", event, re.MULTILINE)
        groups.setdefault(found[1] if found else "", []).append(event)
    return [
        Case(
            f"{case.name}-{n}",
            (head + "".join(group) + tail).encode("latin-1"),
            valid=tuple(u for u in case.valid if u == uid),
            series=tuple(u for u in case.series if u == uid),
            bad=tuple(u for u in case.bad if u == uid),
        )
        for n, (uid, group) in enumerate(groups.items())
    ]


def build(folder: Path, realworld: Path | None) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    built = cases(realworld)
    for case in built:
        (folder / case.file).write_bytes(case.body)
    return built


# --------------------------------------------------------------------------------------
# Running: the real CLI in a subprocess with resource limits.


@dataclass
class Outcome:
    """What one sync of the corpus left behind."""

    exit_code: int
    status_code: int
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float
    events: list[dict[str, Any]]
    source: dict[str, Any]
    logs: list[dict[str, Any]]
    raw_output: str


def _limits() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT, CPU_LIMIT))


def _cli(workdir: Path, *args: str) -> tuple[int, str, float, float, float]:
    """Run ``mentorpulse ARGS`` under the limits; (exit, output, wall, cpu, max rss MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from mentorpulse.cli import main; main()", *args],
        cwd=workdir,
        capture_output=True,
        timeout=WALL_TIMEOUT,
        preexec_fn=_limits,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    return done.returncode, output, wall, cpu, after.ru_maxrss / 1024


def folder_source(folder: Path) -> str:
    """The YAML of an ``ics`` source reading ``folder``."""
    return f"  - id: hostile\n    kind: ics\n    path: {folder}\n"


def run(source: Path | str, database_url: str, workdir: Path) -> Outcome:
    """Sync one source (a folder, or the YAML of any source with id ``hostile``) into
    ``database_url``, then ask ``status``."""
    source_yaml = folder_source(source) if isinstance(source, Path) else source
    (workdir / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\nengineering,{MENTOR},{MENTEE},2025-09-01\n"
    )
    (workdir / "mentorpulse.yaml").write_text(
        f"database: {database_url}\n"
        "timezone: Europe/Berlin\n"
        "privacy:\n  store_titles: true\n"
        f"sources:\n{source_yaml}"
        "    window_past: 90d\n    window_future: 30d\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: engineering\n    cadence: {every: 14d, grace: 3d}\n"
        "    rules:\n      - {id: lapsed, kind: cadence_gap, severity: warning}\n"
    )
    config = str(workdir / "mentorpulse.yaml")
    code, output, wall, cpu, rss = _cli(workdir, "--log-json", "sync", "--config", config, "--once")
    if "sync_failed_to_start" in output or code not in (0, 1):
        raise RuntimeError(f"sync --once exited {code}:\n{output[-3000:]}")
    status_code, status_output, *_ = _cli(workdir, "status", "--config", config)
    engine = create_engine(make_url(database_url).set(drivername=_driver(database_url)))
    try:
        with engine.connect() as db:
            events = [dict(row._mapping) for row in db.execute(select(Event.__table__))]
            row = db.execute(select(Source.__table__)).first()
            source = dict(row._mapping) if row is not None else {}
    finally:
        engine.dispose()
    logs = []
    for line in output.splitlines():
        try:
            logs.append(json.loads(line))
        except ValueError:
            continue
    return Outcome(code, status_code, wall, cpu, rss, events, source, logs, output + status_output)


def _driver(url: str) -> str:
    return "postgresql+psycopg" if url.startswith("postgresql") else make_url(url).drivername


# --------------------------------------------------------------------------------------
# Judging: what a user would check.


@dataclass
class Figures:
    tried: int = 0
    survived: int = 0
    lost: list[str] = field(default_factory=list)  # valid events not stored
    doubled: list[str] = field(default_factory=list)  # occurrences stored twice
    unreported: list[str] = field(default_factory=list)  # bad items without an item error
    leaks: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"cases tried {self.tried}, survived {self.survived}, lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, unreported {len(self.unreported)}, "
            f"leaks {len(self.leaks)}"
        )


def _controls(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def judge(
    corpus: list[Case], outcome: Outcome, scope_of: Callable[[Case], str] = lambda c: c.file
) -> Figures:
    """What a user would check; ``scope_of`` names a case's file as the source does."""
    figures = Figures(tried=len(corpus))
    stored = Counter((e["scope"], e["ical_uid"]) for e in outcome.events)
    keys = Counter((e["source_id"], e["provider_id"]) for e in outcome.events)
    figures.doubled += [f"{p}" for p, n in keys.items() if n > 1]
    errors = [
        (str(e.get("item", "")), str(e.get("message", "")))
        for e in outcome.source.get("item_errors") or []
    ]
    for case in corpus:
        ok = True
        for uid in case.valid:
            key = (scope_of(case), stable_id(uid, UID_MAX))
            if stored[key] == 0:
                figures.lost.append(f"{case.name}: {short_text(uid, 40)}")
                ok = False
            elif stored[key] > 1:
                figures.doubled.append(f"{case.name}: {short_text(uid, 40)} x{stored[key]}")
                ok = False
        for uid in case.series:
            if stored[(scope_of(case), stable_id(uid, UID_MAX))] == 0:
                figures.lost.append(f"{case.name}: series {short_text(uid, 40)}")
                ok = False
        for uid in case.bad:
            # How the connector names an item: the file and a short, cleaned UID.
            # (A file refused as a whole also names it; its valid events count as lost.)
            expected = short_text(f"{scope_of(case)}: UID {short_text(uid, 80)}", ITEM_MAX)
            if not any(item in (expected, scope_of(case)) for item, _m in errors):
                figures.unreported.append(f"{case.name}: {short_text(uid, 40)}")
                ok = False
        if case.file_error and not any(item == scope_of(case) for item, _m in errors):
            figures.unreported.append(case.name)
            ok = False
        if ok:
            figures.survived += 1
    for event in outcome.events:
        for text in _strings(event):
            if SECRET in text or _controls(text):
                figures.leaks.append(f"database: {short_text(text, 60)!r}")
    for text in _strings(outcome.source.get("item_errors") or []):
        if SECRET in text or _controls(text) or len(text) > 500:
            figures.leaks.append(f"item error: {short_text(text, 60)!r}")
    for text in _strings(outcome.source.get("last_error") or ""):
        if SECRET in text or _controls(text):
            figures.leaks.append(f"last_error: {short_text(text, 60)!r}")
    for entry in outcome.logs:
        for text in _strings(entry):
            if SECRET in text or _controls(text) or len(text) > 1000:
                figures.leaks.append(f"log {entry.get('event')}: {short_text(text, 60)!r}")
    return figures


def main(argv: list[str] | None = None, report: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="a database URL (default: a new SQLite file)")
    args = parser.parse_args(argv)
    realworld = REPO.parent / "shared" / "testdata" / "ics-realworld"
    if not realworld.is_dir():
        realworld = REPO.parent.parent / "shared" / "testdata" / "ics-realworld"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = build(work / "calendars", realworld if realworld.is_dir() else None)
        url = args.database or f"sqlite:///{work / 'mentorpulse.db'}"
        outcome = run(work / "calendars", url, work)
        figures = judge(corpus, outcome)
    report(
        f"{figures.line()}; sync exit {outcome.exit_code}, status exit {outcome.status_code}, "
        f"{outcome.wall_seconds:.1f} s wall, {outcome.cpu_seconds:.1f} s CPU, "
        f"max RSS {outcome.max_rss_mb:.0f} MB, {len(outcome.events)} events stored"
    )
    for kind in ("lost", "doubled", "unreported", "leaks"):
        for item in getattr(figures, kind)[:20]:
            report(f"  {kind}: {item}")
    return 0 if figures.survived == figures.tried and not figures.leaks else 1


if __name__ == "__main__":
    sys.exit(main())

"""End to end: `mentorpulse demo` writes an organisation and reports what its calendars hold.

The expected figures come from what the generator planted in the calendars (the manifest
it writes beside them), never from mentorpulse's own attendance logic.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
import yaml
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.reports.export import write_report
from mentorpulse.sample import Manifest, read_manifest, write_demo

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # late, so today's sessions have ended
HOURS_4, DAYS_6, DAYS_8 = timedelta(hours=4), timedelta(days=6), timedelta(days=8)

PLANTED_TO_COLUMN = {
    "attended": "presumed_held",
    "declined_by_mentor": "missed",
    "declined_by_mentee": "missed",
    "cancelled": "cancelled",
    "late_cancelled": "cancelled",
    "rebooked": "rescheduled",
}
# What the sessions stage calls each planted kind, as `mentorpulse demo` prints it.
PLANTED_TO_OUTCOME = {**PLANTED_TO_COLUMN, "upcoming": "upcoming"}


def expected_figures(truth: Manifest) -> dict[str, Counter[str]]:
    expected: dict[str, Counter[str]] = {key: Counter() for key in truth.pairings}
    for planted in truth.sessions:
        column = PLANTED_TO_COLUMN.get(planted.planted)
        if column:
            expected[planted.pairing_key][column] += 1
    for counts in expected.values():
        counts["attended"] = counts["presumed_held"] + counts["held"]
        counts["scheduled"] = counts["attended"] + counts["missed"] + counts["cancelled"]
    return expected


def report_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return {
            f"{row['program']}:{row['mentor_email']}:{row['mentee_email']}": row
            for row in csv.DictReader(stream)
        }


def run_demo_cli(workdir: Path) -> str:
    with time_machine.travel(NOW, tick=False):
        result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_reports_what_the_calendars_contain(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    output = run_demo_cli(workdir)
    truth = read_manifest(workdir)
    assert truth.today == TODAY
    rows = report_rows(workdir / "report.csv")

    assert set(rows) == set(truth.pairings)
    for key, counts in expected_figures(truth).items():
        row = rows[key]
        for column in (
            "scheduled",
            "attended",
            "presumed_held",
            "missed",
            "cancelled",
            "rescheduled",
        ):
            assert int(row[column]) == counts[column], f"{key} {column}"
    assert "report.html" in output
    html = (workdir / "report.html").read_text(encoding="utf-8")
    assert all(key.split(":")[1] in html for key in truth.pairings)

    printed = dict(re.findall(r"│ (pairs|sessions \w+)\s+│ (\d+)", output))
    outcomes: Counter[str] = Counter()
    for kind, count in truth.planted.items():
        outcomes[f"sessions {PLANTED_TO_OUTCOME[kind]}"] += count
    assert printed == {"pairs": str(truth.counts["pairings"])} | {
        k: str(v) for k, v in outcomes.items()
    }


def test_lapsed_pairs_get_one_reminder_each_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run_demo_cli(workdir)
    outbox = workdir / "outbox"
    first = {p.name: p.read_bytes() for p in outbox.glob("*.eml")}
    assert first, "the demo has a lapsed pair and a pair that never met"
    recipients = Counter(
        email.message_from_bytes(b)["To"]
        for b in first.values()
        if not email.message_from_bytes(b)["Subject"].startswith("Did your session")
    )
    rows = report_rows(workdir / "report.csv")
    flagged_mentors = {
        key.split(":")[1] for key, row in rows.items() if int(row["open_findings"]) > 0
    }
    addresses = {r.split("<")[-1].rstrip(">") for r in recipients}
    assert addresses == flagged_mentors | {"hr@demo.example"}  # HR: last month's report
    report_before = (workdir / "report.csv").read_text()

    run_demo_cli(workdir)
    second = {p.name: p.read_bytes() for p in outbox.glob("*.eml")}
    assert second == first, "nothing is sent twice"
    assert (workdir / "report.csv").read_text() == report_before


def mails_of(workdir: Path) -> list[EmailMessage]:
    found = []
    for path in sorted((workdir / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def test_the_pair_of_each_recent_session_is_asked_whether_it_took_place(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run_demo_cli(workdir)
    truth = read_manifest(workdir)
    asked: Counter[str] = Counter()
    for message in mails_of(workdir):
        if message["Subject"].startswith("Did your session with "):
            asked[message["To"].addresses[0].addr_spec] += 1
    assert asked, "the demo's programs ask after each session"

    def parties(keys: set[str]) -> set[str]:
        return {email for key in keys for email in key.split(":")[1:]}

    attended = [s for s in truth.sessions if s.planted == "attended"]
    # Sessions that surely ended 2h to 7d ago (they last at most 2h), and those that may.
    surely = {s.pairing_key for s in attended if NOW - DAYS_6 < s.start < NOW - HOURS_4}
    maybe = {s.pairing_key for s in attended if NOW - DAYS_8 < s.start < NOW}
    assert parties(surely) <= set(asked) <= parties(maybe)
    assert set(asked.values()) == {1}  # one session each within the week here


def test_demo_answer_confirms_some_sessions_and_disputes_one(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run_demo_cli(workdir)
    before = report_rows(workdir / "report.csv")
    assert sum(int(r["held"]) for r in before.values()) == 0  # nobody has answered yet
    with time_machine.travel(NOW, tick=False):
        result = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), "--answer"])
    assert result.exit_code == 0, result.output
    assert re.search(r"answered yes \(demo --answer\)\s+│ 4", result.output)
    assert re.search(r"answered no \(demo --answer\)\s+│ 1", result.output)
    after = report_rows(workdir / "report.csv")
    assert sum(int(r["held"]) for r in after.values()) == 3  # confirmed by their mentors
    assert sum(int(r["presumed_held"]) for r in after.values()) == (
        sum(int(r["presumed_held"]) for r in before.values()) - 4
    )
    # The disputed session's program admins hear of it.
    disputes = [
        m for m in mails_of(workdir) if "disagree on whether" in str(m.get_body(("plain",)))
    ]
    assert len(disputes) == 1
    assert disputes[0]["To"].addresses[0].addr_spec.endswith("-mentoring@demo.example")
    # A second run the same day changes nothing.
    outbox = {p.name: p.read_bytes() for p in (workdir / "outbox").glob("*.eml")}
    with time_machine.travel(NOW, tick=False):
        again = CliRunner().invoke(app, ["demo", "--workdir", str(workdir), "--answer"])
    assert again.exit_code == 0, again.output
    assert {p.name: p.read_bytes() for p in (workdir / "outbox").glob("*.eml")} == outbox
    assert report_rows(workdir / "report.csv") == after


def test_hr_gets_last_months_figures_by_email(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    run_demo_cli(workdir)
    truth = read_manifest(workdir)
    london = ZoneInfo("Europe/London")  # the demo's timezone: October there
    october = Counter(
        s.pairing_key
        for s in truth.sessions
        if s.start.astimezone(london).strftime("%Y-%m") == "2026-10"
        and PLANTED_TO_COLUMN.get(s.planted) not in (None, "rescheduled")
    )
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in (workdir / "outbox").glob("*.eml")
    ]
    (report,) = [m for m in mails if m["To"].addresses[0].addr_spec == "hr@demo.example"]
    assert isinstance(report, EmailMessage)
    total = sum(october.values())
    assert report["Subject"].startswith("Mentoring report, October 2026: ")
    assert report["Subject"].endswith(f" of {total} sessions attended")
    files = {part.get_filename(): part.get_content() for part in report.iter_attachments()}
    assert set(files) == {"report-2026-10.csv", "report-2026-10.html"}
    rows = {
        f"{r['program']}:{r['mentor_email']}:{r['mentee_email']}": int(r["scheduled"])
        for r in csv.DictReader(io.StringIO(files["report-2026-10.csv"]))
    }
    assert rows == {key: october[key] for key in truth.pairings}
    kept = workdir / "reports" / "report-2026-10.csv"
    assert kept.read_text(encoding="utf-8") == files["report-2026-10.csv"]


@pytest.mark.usefixtures("database_url")
def test_the_pipeline_gives_the_same_figures_on_each_backend(
    tmp_path: Path, database_url: str
) -> None:
    truth = write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["database"] = database_url
    config_file.write_text(yaml.safe_dump(config))
    ctx = stages.Context.open(config_file, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        stages.evaluate_rules(ctx)
        out = tmp_path / "report.csv"
        write_report(
            ctx.db,
            first=date(2026, 8, 1),
            last=date(2027, 3, 1),
            zone=ctx.config.timezone,
            now=NOW,
            fmt="csv",
            out=out,
        )
        again = stages.sync_sources(ctx)
        assert sum(r.stored + r.deleted for r in again) == 0, "an unchanged folder writes nothing"
        assert stages.rebuild_sessions(ctx).changed == 0
        assert stages.evaluate_rules(ctx).changed == 0
    finally:
        ctx.engine.dispose()
    rows = report_rows(out)
    for key, counts in expected_figures(truth).items():
        assert int(rows[key]["scheduled"]) == counts["scheduled"], key
        assert int(rows[key]["attended"]) == counts["attended"], key

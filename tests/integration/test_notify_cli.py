"""`mentorpulse notify` and `mentorpulse outbox` as an operator uses them, over real SMTP.

The demo organisation provides calendars and a roster; the config is pointed at an
aiosmtpd server (STARTTLS + AUTH) and given routes that escalate to program admins in a
daily digest.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
import yaml
from openpyxl import load_workbook
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from mentorpulse import stages
from mentorpulse.cli import app, common
from mentorpulse.notify.outbox import claim_due, claim_one, enqueue
from mentorpulse.notify.route import Notification
from mentorpulse.sample import write_demo
from mentorpulse.storage.models import Finding, OutboxMessage
from tests.servers.smtpd import PASSWORD, SmtpServer

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)  # a Monday, late: today's sessions ended
NEXT = NOW + timedelta(days=1)  # the admins' daily digest windows have closed by then
cli = CliRunner()


@pytest.fixture
def org(tmp_path: Path, server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo organisation, evaluated, with SMTP and escalation routes configured."""
    write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    config = yaml.safe_load(config_file.read_text())
    monkeypatch.setenv("TEST_SMTP_PASSWORD", PASSWORD)
    config["notify"]["transport"] = server.config(password="${TEST_SMTP_PASSWORD}")
    config["notify"]["routes"] = [
        {
            "to": ["mentor"],
            "escalate": [{"after": "0d", "to": ["program_admin"], "digest": "1d"}],
        }
    ]
    config["reports"]["send"] = []  # the scheduled HR report has tests of its own below
    for program in config["programs"]:  # attendance checks have tests of their own
        program.pop("attendance_check", None)
    config_file.write_text(yaml.safe_dump(config))
    ctx = stages.Context.open(config_file, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        stages.evaluate_rules(ctx)
        with ctx.db() as db:
            firing = db.scalar(select(func.count()).where(Finding.state == "firing"))
        assert firing, "the demo has lapsed pairs"
    finally:
        ctx.engine.dispose()
    return config_file


def run(config: Path, *args: str, at: datetime = NOW) -> Result:
    with time_machine.travel(at, tick=False):
        return cli.invoke(app, [*args, "--config", str(config)])


def outbox_rows(config: Path) -> list[OutboxMessage]:
    ctx = stages.Context.open(config, clock=lambda: NOW)
    try:
        with ctx.db() as db:
            return list(db.scalars(select(OutboxMessage)))
    finally:
        ctx.engine.dispose()


def test_dry_run_prints_what_would_go_and_sends_nothing(org: Path, server: SmtpServer) -> None:
    result = run(org, "notify", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would be sent (dry run: nothing sent)" in result.output
    assert "Mentoring: you and" in result.output
    assert server.recorder.messages == []
    assert outbox_rows(org) == []

    assert run(org, "notify").exit_code == 0
    reminders = len(server.recorder.messages)
    tomorrow = run(org, "notify", "--dry-run", at=NEXT)
    assert "eng-mentoring@demo.example" in tomorrow.output  # the digests are due
    assert "Mentoring digest" in tomorrow.output
    assert len(server.recorder.messages) == reminders
    dry_count = int(tomorrow.output.split(" emails would be sent")[0].split()[-1])
    assert run(org, "notify", at=NEXT).exit_code == 0
    assert len(server.recorder.messages) == reminders + dry_count


def test_notify_sends_reminders_and_one_digest_per_admin_once(
    org: Path, server: SmtpServer
) -> None:
    result = run(org, "notify")
    assert result.exit_code == 0, result.output
    assert not any("mentoring@" in str(m["To"]) for m in server.recorder.messages)
    assert run(org, "notify", at=NEXT).exit_code == 0
    by_recipient: dict[str, int] = {}
    for message in server.recorder.messages:
        address = message["To"].addresses[0].addr_spec
        by_recipient[address] = by_recipient.get(address, 0) + 1
    admins = {a for a in by_recipient if "mentoring@" in a}
    assert admins, "program admins are told"
    assert all(by_recipient[a] == 1 for a in admins), "one digest each, not one per pair"
    digests = [m for m in server.recorder.messages if m["Subject"].startswith("Mentoring digest")]
    assert len(digests) == len(admins)
    mentors = set(by_recipient) - admins
    with_pairs = sum(
        len(str(d.get_body(("plain",)).get_content()).split("\n  - ")) - 1 for d in digests
    )
    assert with_pairs == sum(by_recipient[m] for m in mentors), "each reminded pair is in a digest"

    again = run(org, "notify", at=NEXT)
    assert again.exit_code == 0
    assert "0 queued, 0 sent" in again.output
    assert len(server.recorder.messages) == sum(by_recipient.values())


def test_a_permanent_refusal_fails_the_command_and_the_operator_can_retry(
    org: Path, server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common.out, "width", 250)  # a wide terminal: one row per line
    server.recorder.refuse = "550 5.7.1 Relaying denied"
    result = run(org, "notify")
    assert result.exit_code == 1
    assert "outbox list --status failed" in result.output

    listed = run(org, "outbox", "list", "--status", "failed")
    assert listed.exit_code == 0, listed.output
    failed_lines = [line for line in listed.output.splitlines() if " failed " in line]
    assert failed_lines
    assert all("550 5.7.1 Relaying denied" in line for line in failed_lines)
    assert PASSWORD not in listed.output
    failed = sum(1 for r in outbox_rows(org) if r.status == "failed")
    assert failed > 0
    assert f"{failed} failed" in listed.output.splitlines()[-1]

    server.recorder.refuse = None
    retried = run(org, "outbox", "retry")
    assert f"{failed} rows queued again" in retried.output
    assert run(org, "notify").exit_code == 0
    assert len(server.recorder.messages) == failed
    assert {r.status for r in outbox_rows(org)} == {"sent", "digest"}  # digests: tomorrow


def test_a_row_that_cannot_become_an_email_fails_alone(org: Path, server: SmtpServer) -> None:
    # Queued before addresses were checked at config time (or by a hand-edited database).
    ctx = stages.Context.open(org, clock=lambda: NOW)
    try:
        with ctx.db.begin() as db:
            hostile = Notification(
                recipient="=hyperlink(x)@evil.example",
                template="report",
                idempotency_key="hostile",
                payload={},
            )
            enqueue(db, [hostile], now=NOW - timedelta(hours=1))  # due first
    finally:
        ctx.engine.dispose()
    dry = run(org, "notify", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "cannot render" in dry.output

    result = run(org, "notify")
    assert result.exit_code == 1  # one failed for good, said once, no traceback
    assert isinstance(result.exception, SystemExit)
    assert "outbox list --status failed" in result.output
    [row] = [r for r in outbox_rows(org) if r.idempotency_key == "hostile"]
    assert row.status == "failed"
    assert "is not an email address" in (row.last_error or "")
    assert server.recorder.messages, "the rest of the batch went out"
    assert not [m for m in server.recorder.messages if "evil.example" in str(m["To"])]
    assert run(org, "notify").exit_code == 0  # and the next run is not stuck on it


def test_purge_keeps_the_rows_of_findings_still_firing(org: Path) -> None:
    assert run(org, "notify").exit_code == 0
    before = len(outbox_rows(org))
    result = run(org, "outbox", "purge", "--older-than", "0s", at=NOW.replace(hour=23, minute=59))
    assert result.exit_code == 0, result.output
    assert "0 rows purged" in result.output  # every row belongs to a firing episode
    assert len(outbox_rows(org)) == before
    # Re-running notify after a purge attempt still sends nothing twice.
    assert "0 sent" in run(org, "notify").output


def test_bad_outbox_options_are_one_clear_message(org: Path) -> None:
    result = run(org, "outbox", "list", "--status", "bogus")
    assert result.exit_code == 2
    assert "--status: expected one of" in result.output
    result = run(org, "outbox", "purge", "--older-than", "soon")
    assert result.exit_code == 2
    assert "--older-than: expected a duration" in result.output


def test_mail_held_back_is_cancelled_when_its_finding_resolves(
    org: Path, server: SmtpServer
) -> None:
    assert run(org, "notify").exit_code == 0
    reminders = len(server.recorder.messages)
    waiting = [r for r in outbox_rows(org) if r.status == "digest"]
    assert waiting, "the admins' digest items wait for the window to close"
    # The pairs meet: every finding resolves before the digest window closes.
    ctx = stages.Context.open(org, clock=lambda: NOW)
    try:
        with ctx.db.begin() as db:
            for finding in db.scalars(select(Finding).where(Finding.state == "firing")):
                finding.state, finding.until = "resolved", NOW
    finally:
        ctx.engine.dispose()
    assert run(org, "notify", at=NEXT).exit_code == 0
    assert len(server.recorder.messages) == reminders, "no digest about resolved pairs"
    assert {r.status for r in outbox_rows(org) if r.id in {w.id for w in waiting}} == {"cancelled"}


def test_templates_from_the_config_folder_override_ours(org: Path, server: SmtpServer) -> None:
    folder = org.parent / "my-templates"
    folder.mkdir()
    (folder / "reminder.subject.j2").write_text("Time for a mentoring chat with {{ other_name }}")
    config = yaml.safe_load(org.read_text())
    config["notify"]["templates"] = "my-templates"
    org.write_text(yaml.safe_dump(config))
    assert run(org, "notify").exit_code == 0
    subjects = {m["Subject"] for m in server.recorder.messages}
    assert subjects
    assert all(s.startswith("Time for a mentoring chat with ") for s in subjects)


def schedule_reports(
    org: Path, every: str = "month", formats: list[str] | None = None, **notify: object
) -> None:
    config = yaml.safe_load(org.read_text())
    schedule: dict[str, object] = {"every": every, "to": ["hr"]}
    if formats is not None:
        schedule["formats"] = formats
    config["reports"]["send"] = [schedule]
    config["notify"].update(notify)
    org.write_text(yaml.safe_dump(config))


def reports_to_hr(server: SmtpServer) -> list[str]:
    return [str(m["Subject"]) for m in server.recorder.to("hr@demo.example")]


def test_hr_gets_each_months_report_once_and_never_from_stale_data(
    org: Path, server: SmtpServer
) -> None:
    schedule_reports(org)
    assert run(org, "notify").exit_code == 0
    [october] = server.recorder.to("hr@demo.example")
    assert str(october["Subject"]).startswith("Mentoring report, October 2026: ")
    names = sorted(str(part.get_filename()) for part in october.iter_attachments())
    assert names == ["report-2026-10.csv", "report-2026-10.html"]
    assert (org.parent / "reports" / "report-2026-10.csv").exists()

    # Re-runs, and a purge of every delivered row, do not send it again.
    assert run(org, "notify", at=NOW + timedelta(hours=1)).exit_code == 0
    assert run(org, "outbox", "purge", "--older-than", "0s", at=NOW + timedelta(hours=2))
    assert run(org, "notify", at=NOW + timedelta(hours=3)).exit_code == 0
    assert len(reports_to_hr(server)) == 1

    # November ends while the calendars have not been read for a week: the report waits.
    december = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert run(org, "notify", at=december).exit_code == 0
    assert len(reports_to_hr(server)) == 1
    assert run(org, "sync", "--once", at=december).exit_code == 0
    assert run(org, "notify", at=december + timedelta(minutes=5)).exit_code == 0
    subjects = reports_to_hr(server)
    assert len(subjects) == 2
    assert subjects[1].startswith("Mentoring report, November 2026: ")


def test_a_report_with_formats_html_and_xlsx_attaches_the_workbook(
    org: Path, server: SmtpServer
) -> None:
    schedule_reports(org, formats=["html", "xlsx"])
    assert run(org, "notify").exit_code == 0
    [october] = server.recorder.to("hr@demo.example")
    parts = {str(part.get_filename()): part for part in october.iter_attachments()}
    assert sorted(parts) == ["report-2026-10.html", "report-2026-10.xlsx"]
    workbook = parts["report-2026-10.xlsx"]
    assert workbook.get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    data = workbook.get_payload(decode=True)
    assert isinstance(data, bytes)
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["Summary", "Engineering mentoring", "Leadership mentoring"]
    summary = book["Summary"]
    assert summary["A2"].value.startswith("1 \u2013 31 Oct 2026, Europe/London")
    page = str(parts["report-2026-10.html"].get_content())
    assert page.count('<figure class="chart') == 6
    body = str(october.get_body(("plain",)).get_content())
    assert "as HTML with charts to read and as XLSX workbook" in body
    # The files are kept too: the usual two, and the workbook it was asked for.
    kept = sorted(p.name for p in (org.parent / "reports").glob("report-2026-10.*"))
    assert kept == ["report-2026-10.csv", "report-2026-10.html", "report-2026-10.xlsx"]
    assert (org.parent / "reports" / "report-2026-10.xlsx").read_bytes() == data


def test_an_attachment_too_large_for_an_email_is_left_out_and_named(
    org: Path, server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mentorpulse.stages.reports.MAX_ATTACHMENTS", 30_000)
    schedule_reports(org, formats=["csv", "html"])
    assert run(org, "notify").exit_code == 0
    [october] = server.recorder.to("hr@demo.example")
    names = [str(part.get_filename()) for part in october.iter_attachments()]
    assert names == ["report-2026-10.csv"]  # the HTML with charts weighs more
    body = str(october.get_body(("plain",)).get_content())
    assert "Not attached (too large for an email): report-2026-10.html" in body
    assert (org.parent / "reports" / "report-2026-10.html").exists()


def test_the_report_waits_for_hrs_working_hours(org: Path, server: SmtpServer) -> None:
    # NOW is Monday 23:30 in London, where the demo's HR contact works.
    schedule_reports(org, send_window={"start": "08:00", "end": "18:00"})
    assert run(org, "notify").exit_code == 0
    assert reports_to_hr(server) == []
    assert run(org, "notify", at=datetime(2026, 11, 24, 7, 59, tzinfo=UTC)).exit_code == 0
    assert reports_to_hr(server) == []
    assert run(org, "notify", at=datetime(2026, 11, 24, 8, 0, tzinfo=UTC)).exit_code == 0
    assert len(reports_to_hr(server)) == 1


def test_a_report_interrupted_mid_send_is_not_sent_twice(org: Path, server: SmtpServer) -> None:
    schedule_reports(org, send_window={"start": "08:00", "end": "18:00"})
    assert run(org, "notify").exit_code == 0  # queued, due in the morning
    morning = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    ctx = stages.Context.open(org, clock=lambda: morning)
    try:
        with ctx.db.begin() as db:  # a worker claims the morning's mail ...
            listed = claim_due(db, now=morning, lease=timedelta(minutes=5))
            claimed = {r.recipient for r in listed}
            report = next(r.id for r in listed if r.at_most_once)
        with ctx.db.begin() as db:  # ... and dies while sending the report
            assert claim_one(db, report, now=morning, lease=timedelta(minutes=5))
    finally:
        ctx.engine.dispose()
    assert "hr@demo.example" in claimed
    assert len(claimed) > 1, "reminders to mentors wait for the morning too"
    # The lease has long expired. The report may or may not have gone out, so it is not
    # sent again; the reminders are (with their Message-ID, so a duplicate is recognised).
    result = run(org, "notify", at=morning + timedelta(hours=1))
    assert "1 emails may or may not have been delivered" in result.output
    assert reports_to_hr(server) == []
    assert {str(m["To"].addresses[0].addr_spec) for m in server.recorder.messages} == (
        claimed - {"hr@demo.example"}
    )
    report_rows = [r for r in outbox_rows(org) if r.recipient == "hr@demo.example"]
    assert [r.status for r in report_rows] == ["unknown"]


@pytest.mark.parametrize(
    "command",
    [["notify"], ["outbox"], ["outbox", "list"], ["outbox", "retry"], ["outbox", "purge"]],
)
def test_every_notifier_command_has_help(command: list[str]) -> None:
    result = cli.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    assert "--config" in result.output or command == ["outbox"]

"""Hostile roster and config values, and outbox rows that cannot become an email.

A roster or a contact is written by people we do not control: each bad value is one
message at its file:line from `config check` (exit 2, no traceback), and a row that
still cannot be rendered (queued before an upgrade, a template bug) fails alone while
the rest of its batch is delivered over real SMTP.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.config.schema import SmtpTransport as SmtpConfig
from mentorpulse.notify.dispatch import dispatch
from mentorpulse.notify.outbox import enqueue
from mentorpulse.notify.route import Notification, notifications_for
from mentorpulse.notify.transport import SmtpTransport
from mentorpulse.stages.notify import preview
from mentorpulse.storage.models import OutboxMessage
from tests.notify_support import FIRED, alert
from tests.servers.smtpd import SmtpServer

REPO = Path(__file__).resolve().parents[2]
SENDER = "mentorpulse@example.org"
NOW = FIRED  # the findings are due at once
cli = CliRunner()

HEADER = "program,mentor_email,mentee_email,started_on,mentor_name,mentee_name"
# (CSV record, the line it starts on, the message expected there)
HOSTILE_ROWS = [
    ("engineering,[/]@evil.example,b1@example.org,2024-09-02,,", "mentor_email: '[/]@evil"),
    (
        "engineering,a2@example.org,=hyperlink(x)@evil.example,2024-09-02,,",
        "mentee_email: '=hyperlink(x)@evil.example' is not an email address",
    ),
    ("engineering,a3@example.org,b3@example.org,2024-09-02,Ana\x00Lima,", "mentor_name: 'Ana\\x00"),
    ("engineering,a4@example.org,b4@example.org,2024-09-02,," + "x" * 201, "201 characters"),
    ("engineering,a5@example.org,b5@example.org,2024-09-02,\x1b[31mRed,", "control character"),
    ('engineering,a6@example.org,b6@example.org,2024-09-02,,"Ben\nBcc: e@x"', "mentee_name"),
    ("engineering,a7@example.org,b7@example.org,2024-09-02,,Zoë Ångström", None),  # fine
    ("engineering,a8@example.org,b8@example.org,2024-09-02,," + "y" * 200, None),  # just fits
]


def example_config(folder: Path, roster: str | None = None) -> Path:
    shutil.copytree(REPO / "config", folder, dirs_exist_ok=True)  # with its calendars
    if roster is not None:
        (folder / "roster.csv").write_bytes(roster.encode("utf-8"))
    return folder / "mentorpulse.yaml"


def edit(config: Path, change: dict[str, object]) -> None:
    data = yaml.safe_load(config.read_text())
    for dotted, value in change.items():
        *parents, key = dotted.split(".")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {}) if not parent.isdigit() else node[int(parent)]
        node[key] = value
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def test_config_check_names_each_hostile_roster_value_at_its_line(tmp_path: Path) -> None:
    lines = [HEADER]
    expected = []
    for record, message in HOSTILE_ROWS:
        if message is not None:
            expected.append((len(lines) + 1, message))
        lines.extend(record.split("\n"))
    config = example_config(tmp_path, "\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "mentorpulse", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    problems = result.stderr.strip().splitlines()
    roster = tmp_path / "roster.csv"
    assert len(problems) == len(expected), problems
    for problem, (line, message) in zip(problems, expected, strict=True):
        assert problem.startswith(f"{roster}:{line}: "), problem
        assert message in problem, problem
    assert all("\x00" not in p and "\x1b" not in p for p in problems)  # shown escaped


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"notify.sender": "mentorpulse"}, "notify.sender: 'mentorpulse' is not an email address"),
        ({"contacts.hr.email": "[/]@evil.example"}, "contacts.hr.email: '[/]@evil.example'"),
        ({"contacts.hr.email": "hr@example.org\nBcc: x@y.org"}, "contacts.hr.email"),
        ({"notify.hr": ["=hyperlink(x)@evil.example"]}, "notify.hr[0]: '=hyperlink(x)"),
        ({"programs.0.admins": ["a@@example.org"]}, "programs[0].admins[0]: 'a@@example.org'"),
        ({"notify.lease": "20s"}, "notify.lease: lease 20s is not longer than one send can take"),
        (
            {"notify.lease": "2m", "notify.transport": {"kind": "smtp", "host": "mail"}},
            "notify.lease: lease 2m is not longer than one send can take (159s: 4 tries",
        ),
    ],
    ids=["sender", "contact", "contact-header", "notify-hr", "admin", "lease", "lease-smtp"],
)
def test_config_check_refuses_what_would_only_fail_at_send_time(
    tmp_path: Path, change: dict[str, object], where: str
) -> None:
    config = example_config(tmp_path)
    edit(config, change)
    result = cli.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    [problem] = [line for line in result.output.splitlines() if str(config) in line]
    assert problem.startswith(f"{config}:"), problem
    assert where in problem, problem


def test_addresses_a_mail_server_takes_pass(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    edit(
        config,
        {
            "notify.sender": "mentorpulse@localhost",  # a local relay: syntax is what counts
            "contacts.hr.email": "people+hr@corp.internal",
            "notify.hr": ["hr", "josé@exämple.org"],
        },
    )
    result = cli.invoke(app, ["config", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- rows that cannot render


HOSTILE_RECIPIENTS = ["[/]@evil.example", "=hyperlink(x)@evil.example", "a@x.example, b@y.example"]


def test_an_unrenderable_row_fails_alone_and_the_batch_is_delivered(
    sessions: sessionmaker[Db], server: SmtpServer
) -> None:
    good = [alert(n) for n in range(6)]
    bad = [alert(100 + n, mentor_email=r) for n, r in enumerate(HOSTILE_RECIPIENTS)]
    broken_template = Notification(
        recipient="hr@example.org", template="no-such-template", idempotency_key="t", payload={}
    )
    # Interleaved, so each batch of 3 holds good and bad rows.
    notes = notifications_for([good[0], bad[0], good[1], bad[1], good[2], bad[2]], now=NOW)
    notes += [broken_template, *notifications_for(good[3:], now=NOW)]
    with sessions.begin() as db:
        assert enqueue(db, notes, now=NOW) == 10
    transport = SmtpTransport(SmtpConfig.model_validate(server.config()), ca_file=server.ca_file)
    counts = dispatch(sessions, transport, sender=SENDER, now=NOW, limit=3)
    assert (counts.sent, counts.failed, counts.retried) == (6, 4, 0)
    with sessions() as db:
        rows = list(db.scalars(select(OutboxMessage)))
    by_recipient = {r.recipient: (r.status, r.last_error or "") for r in rows}
    for recipient in HOSTILE_RECIPIENTS:
        status, error = by_recipient[recipient]
        assert status == "failed"
        assert "is not an email address" in error, error
    assert by_recipient["hr@example.org"][0] == "failed"
    assert "no-such-template" in by_recipient["hr@example.org"][1]
    delivered = sorted(a.addr_spec for m in server.recorder.messages for a in m["To"].addresses)
    assert delivered == sorted(f"mentor{n}@example.org" for n in range(6))
    assert Counter(server.recorder.message_ids()).most_common(1)[0][1] == 1
    # The next run does not pick the failed rows up again: nothing is stuck in "sending".
    again = SmtpTransport(SmtpConfig.model_validate(server.config()), ca_file=server.ca_file)
    assert dispatch(sessions, again, sender=SENDER, now=NOW, limit=3).sent == 0
    with sessions() as db:
        statuses = Counter(db.scalars(select(OutboxMessage.status)))
    assert statuses == Counter({"sent": 6, "failed": 4})


def test_the_dry_run_lists_an_unrenderable_row_instead_of_crashing(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    edit(config, {"sources": []})
    ctx = stages.Context.open(config, clock=lambda: NOW)
    try:
        with ctx.db.begin() as db:
            notes = notifications_for([alert(1), alert(2, mentor_email="[/]@evil.example")])
            # Rows of no finding (as a report's): the stage's cancel_stale leaves them be.
            enqueue(db, [replace(n, finding_key=None) for n in notes], now=NOW)
        previews = {p.recipient: p.subject for p in preview(ctx)}
        with ctx.db() as db:
            statuses = Counter(db.scalars(select(OutboxMessage.status)))
    finally:
        ctx.engine.dispose()
    assert previews["[/]@evil.example"].startswith("(cannot render: bad recipient:")
    assert previews["mentor1@example.org"].startswith("Mentoring")
    assert statuses == Counter({"pending": 2})  # a dry run keeps nothing

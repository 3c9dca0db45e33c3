"""The command line a newcomer and a script meet: options anywhere, one clear message per
mistake, data printed as data, whole lines in a pipe, one zone per view, private files,
and a demo that never overwrites a real deployment.

Every case runs on the demo organisation (`mentorpulse demo`), built once and copied.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import select
from typer.testing import CliRunner, Result

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.storage.models import Evidence, Finding, MentoringSession, OutboxMessage

NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
MARKUP = "[/] [link=http://evil.example]x[/link] :smile: [bold]"
cli = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("built") / "demo"
    with time_machine.travel(NOW, tick=False):
        result = cli.invoke(app, ["demo", "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    return workdir


@pytest.fixture
def demo(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo deployment for one test."""
    return Path(shutil.copytree(built, tmp_path / "demo"))


def run(*args: str | Path) -> Result:
    result = cli.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def mentorpulse(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command in its own process: stdout is a pipe, as in a script."""
    done = subprocess.run(
        [sys.executable, "-m", "mentorpulse", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert "Traceback" not in done.stderr
    return done


def plant(config: Path, *, error: str, evidence: str) -> tuple[int, int]:
    """Untrusted text where the views show it: an SMTP server's answer on an outbox row
    and a calendar-derived evidence line of a session. Returns (outbox id, pairing id)."""
    ctx = stages.Context.open(config)
    try:
        with ctx.db.begin() as db:
            row = db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
            assert row is not None
            row.status, row.last_error = "failed", error
            session = db.scalars(select(MentoringSession).order_by(MentoringSession.id)).first()
            assert session is not None
            proof = db.scalars(select(Evidence).where(Evidence.session_id == session.id)).first()
            assert proof is not None
            proof.detail = evidence
            return row.id, session.pairing_id
    finally:
        ctx.engine.dispose()


# ---------------------------------------------------------------- options anywhere


def test_config_is_accepted_by_every_command_in_any_position(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    schema = run("config", "schema", "--config", config)
    assert schema.exit_code == 0
    assert "cadence_gap" in schema.stdout
    assert run("auth", "key", "--config", config).exit_code == 0
    for args in (
        ("status", "--log-level", "debug", "--config", config),
        ("--config", config, "status"),
        ("--log-level", "warning", "--config", config, "status", "--log-text"),
        ("outbox", "--config", config, "list"),
        ("outbox", "list", "-c", config, "--log-json"),
    ):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "demo-calendars" in result.output or "sent" in result.output, args


def test_log_level_after_the_command_is_obeyed(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    quiet = mentorpulse("status", "--config", config)
    debug = mentorpulse("status", "--config", config, "--log-level", "debug")
    assert quiet.returncode == debug.returncode == 0
    assert '"config_loaded"' not in quiet.stderr
    assert '"config_loaded"' in debug.stderr
    assert '"level": "debug"' in debug.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unknown_log_level_is_one_usage_error(demo: Path, where: str) -> None:
    config = demo / "mentorpulse.yaml"
    args = ["--log-level", "verbose", "status", "-c", str(config)]
    if where == "after":
        args = ["status", "-c", str(config), "--log-level", "verbose"]
    result = run(*args)
    assert result.exit_code == 2
    assert "'verbose' is not one of 'debug', 'info', 'warning', 'error'" in result.output


# ---------------------------------------------------------------- errors


def test_report_into_a_missing_folder_or_a_folder_is_refused_and_leaves_nothing(
    demo: Path,
) -> None:
    config = demo / "mentorpulse.yaml"
    dates = ("--from", "2026-09-01", "--to", "2026-11-30")
    missing = run("report", "-c", config, *dates, "--out", demo / "missing" / "x.csv")
    assert missing.exit_code == 2
    assert f"the folder {demo / 'missing'} does not exist" in missing.output
    folder = run("report", "-c", config, *dates, "--out", demo / "outbox")
    assert folder.exit_code == 2
    assert f"--out {demo / 'outbox'}: is a folder" in folder.output
    assert not list(demo.rglob("*.tmp"))


def test_a_report_that_cannot_be_written_is_one_message(demo: Path) -> None:
    target = demo / ("x" * 300 + ".csv")  # the folder exists; the name is too long for it
    result = run(
        "report",
        "-c",
        demo / "mentorpulse.yaml",
        "--from",
        "2026-09-01",
        "--to",
        "2026-11-30",
        "--out",
        target,
    )
    assert result.exit_code == 2
    assert f"--out {target}: cannot write the report (File name too long)" in result.output
    assert not list(demo.glob("*.tmp"))


def test_a_failed_report_write_removes_its_temporary_file(demo: Path) -> None:
    from mentorpulse.reports.export import atomic_write

    (demo / "taken").mkdir()  # replacing a folder by the report fails after the write
    with pytest.raises(IsADirectoryError):
        atomic_write(demo / "taken", "a,b\n")
    assert not [p for p in demo.iterdir() if p.name.endswith(".tmp")]


def test_report_format_follows_the_extension_and_a_mismatch_is_refused(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    dates = ("--from", "2026-09-01", "--to", "2026-11-30")
    assert run("report", "-c", config, *dates, "--out", demo / "r.html").exit_code == 0
    assert (demo / "r.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert run("report", "-c", config, *dates, "--out", demo / "r.csv").exit_code == 0
    assert (demo / "r.csv").read_text().startswith("program,")

    mismatch = run("report", "-c", config, *dates, "--format", "csv", "--out", demo / "x.html")
    assert mismatch.exit_code == 2
    assert "--format csv does not match --out" in mismatch.output
    unknown = run("report", "-c", config, *dates, "--out", demo / "x.txt")
    assert unknown.exit_code == 2
    assert "give --format csv, html or xlsx" in unknown.output
    assert not (demo / "x.html").exists()
    assert not (demo / "x.txt").exists()


def test_sync_of_an_unknown_source_names_the_known_ones(demo: Path) -> None:
    result = run("sync", "--once", "--source", "nope", "-c", demo / "mentorpulse.yaml")
    assert result.exit_code == 2
    assert "--source: no source 'nope' in the config (sources: demo-calendars)" in result.output
    polling = run("sync", "--source", "demo-calendars", "-c", demo / "mentorpulse.yaml")
    assert polling.exit_code == 2
    assert "--source needs --once" in polling.output


@pytest.mark.parametrize("length", ["0d", "400d"])
def test_a_silence_that_is_already_over_or_lasts_for_ages_is_refused(
    demo: Path, length: str
) -> None:
    result = run(
        "silence",
        "add",
        "-c",
        demo / "mentorpulse.yaml",
        "--program",
        "engineering",
        "--for",
        length,
        "--reason",
        "leave",
    )
    assert result.exit_code == 2
    assert f"--for: a silence lasts more than 0s and at most 366d, got '{length}'" in result.output
    assert "leave" not in run("silence", "list", "-c", demo / "mentorpulse.yaml").output


# ---------------------------------------------------------------- data is data


def test_markup_in_data_is_printed_as_text(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    outbox_id, pairing_id = plant(config, error=f"550 {MARKUP}", evidence=f"cancelled by {MARKUP}")
    listed = run("outbox", "list", "-c", config, "--status", "failed")
    assert listed.exit_code == 0, listed.output
    assert f"550 {MARKUP}" in listed.stdout
    explained = run("explain", "-c", config, str(pairing_id))
    assert explained.exit_code == 0, explained.output
    assert f"cancelled by {MARKUP}" in explained.stdout
    added = run(
        "silence",
        "add",
        "-c",
        config,
        "--program",
        "engineering",
        "--for",
        "1d",
        "--reason",
        MARKUP,
    )
    assert added.exit_code == 0, added.output
    assert MARKUP in run("silence", "list", "-c", config).stdout
    assert outbox_id


def test_piped_output_is_neither_wrapped_nor_cut(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    error = "421 " + " ".join(f"word{n}" for n in range(40)) + " end-of-error"  # 290 chars
    evidence = "the organiser wrote " + "x" * 200 + " end-of-evidence"
    _outbox_id, pairing_id = plant(config, error=error, evidence=evidence)
    listed = mentorpulse("outbox", "list", "-c", config)
    assert listed.returncode == 0, listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if "end-of-error" in x]
    assert error in line
    assert "…" not in listed.stdout
    explained = mentorpulse("explain", "-c", config, str(pairing_id))
    assert explained.returncode == 0, explained.stderr
    assert any(evidence in x for x in explained.stdout.splitlines())
    assert "…" not in explained.stdout


def test_list_commands_print_one_json_document(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    assert (
        run(
            "silence",
            "add",
            "-c",
            config,
            "--program",
            "leadership",
            "--for",
            "2w",
            "--reason",
            "offsite",
        ).exit_code
        == 0
    )

    outbox = json.loads(run("outbox", "list", "-c", config, "--format", "json").stdout)
    assert outbox["zone"] == "Europe/London"
    assert len(outbox["messages"]) == sum(outbox["totals"].values())
    assert set(outbox["messages"][0]) == {
        "id",
        "status",
        "recipient",
        "template",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "last_error",
    }

    silences = json.loads(run("silence", "list", "-c", config, "--format", "json").stdout)
    [silence] = silences["silences"]
    assert (silence["program"], silence["reason"]) == ("leadership", "offsite")

    status = json.loads(run("status", "-c", config, "--format", "json").stdout)
    assert status["ok"] is True
    assert [s["id"] for s in status["sources"]] == ["demo-calendars"]
    assert status["sources"][0]["events"] > 0

    replay = json.loads(
        run(
            "rules",
            "test",
            "-c",
            config,
            "--from",
            "2026-09-01",
            "--to",
            "2026-11-23",
            "--format",
            "json",
        ).stdout
    )
    assert replay["pairings_replayed"] == 12
    assert replay["fired"]
    assert {f["config"] for f in replay["fired"]} == {"in force"}

    explained = json.loads(run("explain", "-c", config, "1", "--format", "json").stdout)
    [pairing] = explained["pairings"]
    assert pairing["id"] == 1
    assert pairing["sessions"]
    # (the demo's engineering program asks attendance checks: the implicit dispute rule)
    rules = {r["rule"] for r in pairing["rules"]}
    assert rules == {"engineering-cadence-gap", "attendance_disputed"}


# ---------------------------------------------------------------- one zone per view


def test_each_view_shows_the_config_zone_unless_told_another(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"  # timezone: Europe/London (GMT in November)
    assert "GMT" in run("outbox", "list", "-c", config).stdout
    assert "JST" in run("outbox", "list", "-c", config, "--tz", "Asia/Tokyo").stdout
    assert "GMT" in run("status", "-c", config).stdout
    explained = run("explain", "-c", config, "1").stdout  # the pairing lives in Berlin
    assert "times in Europe/London" in explained
    assert " CET " not in explained.split("facts")[0]
    tokyo = run("explain", "-c", config, "1", "--tz", "Asia/Tokyo").stdout
    assert "JST" in tokyo
    replay = ("rules", "test", "-c", config, "--from", "2026-09-01", "--to", "2026-11-23")
    new_york = run(*replay, "--tz", "America/New_York").stdout
    assert " EDT " in new_york or " EST " in new_york
    assert " BST " not in new_york
    assert " GMT " not in new_york
    assert " BST " in run(*replay).stdout  # September and October in London
    as_json = json.loads(run(*replay, "--tz", "Asia/Tokyo", "--format", "json").stdout)
    assert all(f["firing_since"].endswith("+09:00") for f in as_json["fired"])


def test_an_unknown_zone_is_one_usage_error(demo: Path) -> None:
    result = run("outbox", "list", "-c", demo / "mentorpulse.yaml", "--tz", "Mars/Olympus")
    assert result.exit_code == 2
    assert "unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Berlin)" in (
        result.output
    )


def test_explain_says_each_moment_of_a_finding_once(demo: Path) -> None:
    config = demo / "mentorpulse.yaml"
    ctx = stages.Context.open(config)
    try:
        with ctx.db() as db:
            firing = db.scalars(select(Finding).where(Finding.state == "firing")).first()
            assert firing is not None
            pairing_id = firing.pairing_id
    finally:
        ctx.engine.dispose()
    text = run("explain", "-c", config, str(pairing_id)).stdout
    assert text.count("firing since") == 1, text


# ---------------------------------------------------------------- files


def test_files_the_demo_creates_are_private(tmp_path: Path) -> None:
    done = mentorpulse("demo", "--workdir", tmp_path / "d")
    assert done.returncode == 0, done.stderr
    workdir = tmp_path / "d"
    created = [
        workdir / "mentorpulse.db",
        workdir / "report.csv",
        workdir / "report.html",
        *workdir.glob("reports/*"),
        *workdir.glob("outbox/*.eml"),
        workdir / "outbox",
    ]
    assert len(created) > 6
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"


def test_a_report_file_is_private_whatever_the_umask(demo: Path) -> None:
    from mentorpulse.reports.export import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(demo / "open.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((demo / "open.csv").stat().st_mode) == 0o600


# ---------------------------------------------------------------- demo


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A real deployment's files in the folder someone points the demo at."""
    (tmp_path / "mentorpulse.yaml").write_text("database: postgresql://prod/mentorpulse\n")
    (tmp_path / "roster.csv").write_text("program,mentor_email,mentee_email\n")
    return tmp_path


def test_demo_refuses_to_overwrite_files_it_did_not_write(deployment: Path) -> None:
    before = {p.name: p.read_text() for p in deployment.iterdir()}
    result = run("demo", "--workdir", deployment)
    assert result.exit_code == 2
    assert str(deployment / "mentorpulse.yaml") in result.output
    assert str(deployment / "roster.csv") in result.output
    assert "--force" in result.output
    assert {p.name: p.read_text() for p in deployment.iterdir()} == before

    forced = run("demo", "--workdir", deployment, "--force")
    assert forced.exit_code == 0, forced.output
    assert "demo organisation" in (deployment / "mentorpulse.yaml").read_text()


def test_demo_runs_again_on_its_own_folder_but_not_over_an_edit(tmp_path: Path) -> None:
    workdir = tmp_path / "d"
    with time_machine.travel(NOW, tick=False):
        assert run("demo", "--workdir", workdir).exit_code == 0
        eml = sorted(p.name for p in (workdir / "outbox").glob("*.eml"))
        again = run("demo", "--workdir", workdir, "--config", "unused.yaml")  # accepted
        assert again.exit_code == 0, again.output
        assert sorted(p.name for p in (workdir / "outbox").glob("*.eml")) == eml
        config = workdir / "mentorpulse.yaml"
        config.write_text(config.read_text() + "# my own change\n")
        edited = run("demo", "--workdir", workdir)
    assert edited.exit_code == 2
    assert f"{config}: not written by mentorpulse demo (or changed since)" in edited.output
    assert config.read_text().endswith("# my own change\n")


def test_demo_into_a_file_is_one_message(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine\n")
    for workdir in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        result = run("demo", "--workdir", workdir)
        assert result.exit_code == 2
        assert f"--workdir {workdir}: cannot create it" in result.output
    assert (tmp_path / "afile").read_text() == "mine\n"

"""The rules engine in the pipeline, on the demo organisation and a real database:
staleness, silences, a failing rule, the backtest and explain."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import time_machine
import yaml
from sqlalchemy import event, select
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app, common
from mentorpulse.config.schema import PartyDisengagementRule
from mentorpulse.rules.backtest import Case, replay
from mentorpulse.sample import write_demo
from mentorpulse.stages.explain import explain
from mentorpulse.stages.source_health import RULE_ERROR, SOURCE_STALE
from mentorpulse.stages.timelines import load_timelines
from mentorpulse.storage.models import (
    Finding,
    MentoringSession,
    OutboxMessage,
    Pairing,
    Person,
    Silence,
)
from mentorpulse.storage.models import Source as SourceRow
from tests.conftest import FailingRule

TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)


@pytest.fixture
def demo(tmp_path: Path, database_url: str) -> Path:
    write_demo(tmp_path, today=TODAY)
    config_file = tmp_path / "mentorpulse.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["database"] = database_url
    config["reports"]["send"] = []  # these tests count finding notifications only
    for program in config["programs"]:  # ... not attendance checks
        program.pop("attendance_check", None)
    config_file.write_text(yaml.safe_dump(config))
    return config_file


@pytest.fixture
def clock() -> list[datetime]:
    return [NOW]


@pytest.fixture
def ctx(demo: Path, clock: list[datetime]) -> Iterator[stages.Context]:
    context = stages.Context.open(demo, clock=lambda: clock[0])
    try:
        yield context
    finally:
        context.engine.dispose()


@pytest.fixture(scope="module")
def lapsed(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    """The pairings the demo's cadence rules must flag at NOW, from what the generator
    planted: no session attended within the program's every + grace of NOW (or, for a pair
    that never met, of its start). Each pair is days away from the border, never near it."""
    folder = tmp_path_factory.mktemp("truth")
    truth = write_demo(folder, today=TODAY)
    config = yaml.safe_load((folder / "mentorpulse.yaml").read_text())
    with (folder / "roster.csv").open(encoding="utf-8") as stream:
        started = {
            f"{row['program']}:{row['mentor_email']}:{row['mentee_email']}": row["started_on"]
            for row in csv.DictReader(stream)
        }
    allowed = {
        program["id"]: parse_duration(program["cadence"]["every"])
        + parse_duration(program["cadence"]["grace"])
        for program in config["programs"]
    }
    flagged = set()
    for key in truth.pairings:
        attended = [
            s.start for s in truth.sessions if s.pairing_key == key and s.planted == "attended"
        ]
        anchor = max(
            (s for s in attended if s < NOW),
            default=datetime.combine(date.fromisoformat(started[key]), time(), UTC),
        )
        quiet = NOW - anchor
        assert abs(quiet - allowed[key.split(":")[0]]) > timedelta(days=1), key
        if quiet > allowed[key.split(":")[0]]:
            flagged.add(key)
    assert len(flagged) == 2, "the demo plants a lapsed pair and a pair that never met"
    return frozenset(flagged)


def parse_duration(text: str) -> timedelta:
    """``14d`` as the demo config writes its cadences (days only)."""
    assert text.endswith("d"), text
    return timedelta(days=int(text[:-1]))


def findings(ctx: stages.Context) -> dict[tuple[str | None, str], Finding]:
    with ctx.db() as db:
        rows = db.execute(select(Finding, Pairing.key).outerjoin(Pairing))
        return {(key, f.rule_id): f for f, key in rows}


def open_pair_findings(ctx: stages.Context) -> dict[tuple[str | None, str], Finding]:
    return {k: f for k, f in findings(ctx).items() if k[0] and f.state != "resolved"}


def test_stale_source_suppresses_instead_of_firing(
    ctx: stages.Context, clock: list[datetime], lapsed: frozenset[str]
) -> None:
    clock[0] = NOW - timedelta(days=2)  # the last successful sync was two days ago
    stages.sync_sources(ctx)
    clock[0] = NOW
    stages.rebuild_sessions(ctx)
    stats = stages.evaluate_rules(ctx)
    assert (stats.firing, stats.pending) == (0, 0)
    assert stats.suppressed == len(lapsed), "the demo's lapsed pairs are judged, not fired"
    suppressed = open_pair_findings(ctx)
    assert {key for key, _rule in suppressed} == lapsed
    assert {f.state for f in suppressed.values()} == {"suppressed"}
    assert all("source demo-calendars" in (f.reason or "") for f in suppressed.values())
    operator = findings(ctx)[(None, SOURCE_STALE)]
    assert operator.state == "firing"
    assert operator.facts["source"] == "demo-calendars"
    assert stages.send_notifications(ctx).queued == 0, "no pair is flagged for our broken data"

    stages.sync_sources(ctx)  # the source recovers
    recovered = stages.evaluate_rules(ctx)
    assert recovered.firing == len(suppressed)
    assert findings(ctx)[(None, SOURCE_STALE)].state == "resolved"
    assert stages.send_notifications(ctx).queued == len(suppressed)


def test_unhealthy_source_suppresses_and_incremental_run_notices(
    ctx: stages.Context, lapsed: frozenset[str]
) -> None:
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stats = stages.evaluate_rules(ctx)
    assert (stats.firing, stats.pending, stats.suppressed) == (len(lapsed), 0, 0)
    assert {key for key, _rule in open_pair_findings(ctx)} == lapsed
    with ctx.db.begin() as db:
        source = db.get_one(SourceRow, "demo-calendars")
        source.healthy, source.last_error = False, "HTTP 503 from the calendar server"
    stages.evaluate_rules(ctx)  # incremental: nothing changed but the source's health
    states = {f.state for f in open_pair_findings(ctx).values()}
    assert states == {"suppressed"}
    operator = findings(ctx)[(None, SOURCE_STALE)]
    assert "HTTP 503" in operator.facts["problem"]


def test_silence_marks_findings_and_clears_when_it_ends(
    ctx: stages.Context, clock: list[datetime], lapsed: frozenset[str]
) -> None:
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stages.evaluate_rules(ctx)
    (key, _rule), finding = next(iter(open_pair_findings(ctx).items()))
    assert key is not None
    _program, mentor, mentee = key.split(":")
    with ctx.db.begin() as db:
        silence = Silence(
            program_id=None,
            mentor_email=mentor,
            mentee_email=mentee,
            starts_at=NOW,
            ends_at=NOW + timedelta(days=3),
            reason="on leave",
            created_at=NOW,
        )
        db.add(silence)
    assert stages.evaluate_rules(ctx).changed == 1, "the silenced pair's finding alone"
    silenced = findings(ctx)[(key, finding.rule_id)]
    assert silenced.silence_id is not None
    assert silenced.state == "firing", "a silenced finding still records its state"
    assert stages.send_notifications(ctx).queued == len(lapsed) - 1, "the other lapsed pair"
    with ctx.db() as db:
        mailed = {m.payload["fingerprint"] for m in db.scalars(select(OutboxMessage))}
    assert finding.fingerprint not in mailed, "a silenced finding mails nobody"
    assert stages.evaluate_rules(ctx).changed == 0
    clock[0] = NOW + timedelta(days=3)
    stages.evaluate_rules(ctx)
    assert findings(ctx)[(key, finding.rule_id)].silence_id is None


def test_failing_rule_is_an_error_verdict_and_one_operator_finding(
    ctx: stages.Context, failing_rule: type[FailingRule], lapsed: frozenset[str]
) -> None:
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    engineering = ctx.config.programs[0]
    boom = failing_rule(id="boom-pipeline", kind="cadence_gap")
    broken = engineering.model_copy(update={"rules": (*engineering.rules, boom)})
    ctx.config = ctx.config.model_copy(update={"programs": (broken, *ctx.config.programs[1:])})
    stats = stages.evaluate_rules(ctx)
    engineering_pairs = [e for e in ctx.roster if e.program == engineering.id]
    assert stats.errors == len(engineering_pairs)
    errors = [f for (k, r), f in findings(ctx).items() if k and r == "boom-pipeline"]
    assert {f.state for f in errors} == {"error"}
    assert errors[0].reason == "RuntimeError: bad rule"
    operator = [f for (k, r), f in findings(ctx).items() if k is None and r == RULE_ERROR]
    assert len(operator) == 1
    assert operator[0].facts["rule"] == "boom-pipeline"
    # The other rules still judge every pairing: the lapsed ones fire, no other is near.
    assert (stats.firing, stats.pending, stats.suppressed) == (len(lapsed), 0, 0)
    # explain shows the failure as a verdict of its own, beside the stored error finding.
    pairing = engineering_pairs[0]
    [view] = explain(ctx, f"{pairing.mentor_email}:{pairing.mentee_email}").pairings
    [broken_rule] = [r for r in view.rules if r.rule == "boom-pipeline"]
    assert (broken_rule.verdict, broken_rule.error) == ("error", "RuntimeError: bad rule")
    assert broken_rule.facts == {}
    assert broken_rule.finding is not None
    assert (broken_rule.finding.state, broken_rule.finding.reason) == (
        "error",
        "RuntimeError: bad rule",
    )
    assert {r.error for r in view.rules if r.rule != "boom-pipeline"} == {None}


def test_explain_reads_each_kind_of_row_once_however_many_sessions(ctx: stages.Context) -> None:
    """No query per session: explaining a pairing with many sessions, or every pairing of
    a mentor, takes as many statements as explaining one with few."""
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stages.evaluate_rules(ctx)
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    with ctx.db() as db:
        of_pairing = select(MentoringSession.pairing_id)
        sizes = Counter(db.scalars(of_pairing))
    by_sessions = sorted((n, pairing_id) for pairing_id, n in sizes.items())
    (fewest, few_id), (most, many_id) = by_sessions[0], by_sessions[-1]
    assert most > fewest + 2, by_sessions
    counts = []
    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        for pairing_id in (few_id, many_id):
            statements.clear()
            [view] = explain(ctx, str(pairing_id)).pairings
            assert len(view.sessions) in (fewest, most)
            counts.append(len(statements))
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    assert counts[0] == counts[1], statements


def test_backtest_on_the_demo_replays_what_the_daemon_fired(ctx: stages.Context) -> None:
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stages.evaluate_rules(ctx)
    firing = {
        (k, r): f.firing_since for (k, r), f in findings(ctx).items() if f.state == "firing" and k
    }
    assert firing
    with ctx.db() as db:
        loaded = load_timelines(db, ctx.config, ctx.roster)
    cases = []
    for judged in loaded:
        timeline = judged.timeline
        assert timeline is not None
        program = ctx.config.program(timeline.program)
        assert program is not None
        cases.append(Case(timeline, program, ctx.config.rules_for(program)))
    fired = replay(cases, TODAY - timedelta(days=90), TODAY)
    replayed = {(f.pairing_key, f.rule_id): f.firing_since for f in fired}
    for key, since in firing.items():
        assert replayed[key] == since, key


@pytest.fixture
def demo_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(common.out, "_width", 240)  # whole table cells, not wrapped ones
    with time_machine.travel(NOW, tick=False):
        result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "d")])
        assert result.exit_code == 0, result.output
        yield tmp_path / "d" / "mentorpulse.yaml"


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("demo_cli")
def test_rules_test_compares_a_candidate_with_the_rules_in_force(demo_cli: Path) -> None:
    config = str(demo_cli)
    in_force = run("rules", "test", "-c", config, "--from", "2026-09-01", "--to", "2026-11-23")
    assert "in force" in in_force
    candidate = demo_cli.with_name("candidate.yaml")
    data = yaml.safe_load(demo_cli.read_text())
    data["rules"] = [{"id": "two-late", "kind": "late_cancellations", "count": 1}]
    candidate.write_text(yaml.safe_dump(data))
    out = run("rules", "test", "-c", config, "--rules", str(candidate), "--from", "2026-09-01")
    assert "two-late" in out
    assert "only candidate" in out
    assert "both" in out


@pytest.mark.usefixtures("demo_cli")
def test_explain_and_silences_from_the_command_line(demo_cli: Path) -> None:
    config = str(demo_cli)
    engine_url = yaml.safe_load(demo_cli.read_text())["database"]
    assert engine_url.startswith("sqlite")
    ctx = stages.Context.open(demo_cli, clock=lambda: NOW)
    try:
        with ctx.db() as db:
            row = db.execute(
                select(Finding, Pairing, Person.email)
                .join(Pairing, Pairing.id == Finding.pairing_id)
                .join(Person, Person.id == Pairing.mentee_id)
                .where(Finding.state == "firing")
            ).first()
            assert row is not None
            finding, pairing, mentee = row
            mentor = pairing.key.split(":")[1]
    finally:
        ctx.engine.dispose()
    with time_machine.travel(NOW, tick=False):
        explained = run("explain", "-c", config, f"{mentor}:{mentee}")
        assert finding.rule_id in explained
        assert "firing since" in explained
        assert "presumed_held" in explained or "missed" in explained
        assert "next deadline" in explained
        added = run(
            "silence",
            "add",
            "-c",
            config,
            "--pair",
            f"{mentor}:{mentee}",
            "--for",
            "14d",
            "--reason",
            "parental leave",
        )
        assert "silence #1" in added
        assert "parental leave" in run("silence", "list", "-c", config)
        assert "silenced by #1" in run("explain", "-c", config, str(pairing.id))
        run("silence", "expire", "-c", config, "1")
        assert "parental leave" not in run("silence", "list", "-c", config)
        bad = CliRunner().invoke(app, ["explain", "-c", config, "nobody@x.org:else@x.org"])
        assert bad.exit_code == 1
        assert "no pairing of mentor nobody@x.org" in bad.output
        assert "Traceback" not in bad.output
    ctx = stages.Context.open(demo_cli, clock=lambda: NOW)
    try:
        with ctx.db() as db:
            assert db.scalars(select(OutboxMessage)).first() is not None
            assert db.get_one(Finding, finding.id).silence_id is None
    finally:
        ctx.engine.dispose()


def test_pausing_a_pairing_in_the_roster_resolves_its_findings(
    demo: Path, ctx: stages.Context, clock: list[datetime]
) -> None:
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    stages.evaluate_rules(ctx)
    (key, rule), _finding = next(iter(open_pair_findings(ctx).items()))
    assert key is not None
    roster = demo.with_name("roster.csv")
    lines = roster.read_text(encoding="utf-8").splitlines()
    _program, mentor, mentee = key.split(":")
    lines = [f"{line.rstrip(',')},,yes" if f"{mentor},{mentee}" in line else line for line in lines]
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    clock[0] = NOW + timedelta(minutes=15)
    paused = stages.Context.open(demo, clock=lambda: clock[0])
    try:
        assert stages.evaluate_rules(paused).changed == 1, "a roster edit re-judges (incremental)"
        finding = findings(paused)[(key, rule)]
        assert (finding.state, finding.reason) == ("resolved", "pairing paused")
    finally:
        paused.engine.dispose()


def test_coverage_owner_source_judges_a_pair_a_broken_other_source_cannot_cover(
    tmp_path: Path,
) -> None:
    """A pairing with no events is covered by the source that names its mentor as owner;
    a pairing no source names is covered by every source, so a broken one suppresses it."""
    empty = tmp_path / "ana.ics"
    empty.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nEND:VCALENDAR\r\n",
        encoding="utf-8",
    )
    (tmp_path / "roster.csv").write_text(
        "program,mentor_email,mentee_email,started_on\n"
        "eng,ana@x.org,ben@x.org,2026-10-01\n"
        "eng,cat@x.org,dan@x.org,2026-10-01\n",
        encoding="utf-8",
    )
    (tmp_path / "mentorpulse.yaml").write_text(
        "database: sqlite:///mp.db\n"
        "sources:\n"
        "  - {id: ana-cal, kind: ics, path: ana.ics, owner: ana@x.org}\n"
        "  - {id: team-cal, kind: ics, path: missing-folder/team.ics}\n"
        "programs:\n"
        "  - id: eng\n"
        "    cadence: {every: 14d}\n"
        "    rules: [{id: first, kind: first_meeting, within: 7d}]\n",
        encoding="utf-8",
    )
    ctx = stages.Context.open(tmp_path / "mentorpulse.yaml", clock=lambda: NOW)
    try:
        results = {r.source_id: r.ok for r in stages.sync_sources(ctx)}
        assert results == {"ana-cal": True, "team-cal": False}
        stages.rebuild_sessions(ctx)
        stages.evaluate_rules(ctx)
        states = {key: f.state for (key, _r), f in findings(ctx).items() if key}
        assert states == {
            "eng:ana@x.org:ben@x.org": "firing",
            "eng:cat@x.org:dan@x.org": "suppressed",
        }
        assert findings(ctx)[(None, SOURCE_STALE)].facts["source"] == "team-cal"
    finally:
        ctx.engine.dispose()


def test_party_disengagement_tells_the_side_the_demo_planted(
    tmp_path: Path, ctx: stages.Context
) -> None:
    """Each pair where the generator planted a decline is flagged on the decliner's side."""
    truth = write_demo(tmp_path / "truth", today=TODAY)
    planted: dict[str, set[str]] = {}
    for session in truth.sessions:
        if session.planted in ("declined_by_mentor", "declined_by_mentee") and session.start < NOW:
            planted.setdefault(session.pairing_key, set()).add(session.planted.rsplit("_", 1)[1])
    assert planted, "the demo plants declines on both sides"
    stages.sync_sources(ctx)
    stages.rebuild_sessions(ctx)
    rule = PartyDisengagementRule(
        id="one-decline", kind="party_disengagement", count=1, window=timedelta(days=365)
    )
    ctx.config = ctx.config.model_copy(update={"rules": (rule,)})
    stages.evaluate_rules(ctx)
    for key, sides in planted.items():
        finding = findings(ctx)[(key, "one-decline")]
        assert finding.state == "firing"
        assert set(finding.facts["party"].split(" and ")) >= sides, key

"""The benchmark's smoke run: the small organisation goes through, and the counts are right.

Nothing here is about time; the figures themselves are for ``python -m bench run``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bench import __main__ as runner
from bench import common, ingest, poll, report
from mentorpulse.sample import SCALES, Spec, mutate, read_manifest, write

TINY = Spec(pairs=6, months=2, noise=1, seed=3)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(autouse=True)
def _workdir(bench_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORPULSE_BENCH_DIR", str(bench_dir))


def test_generator_is_deterministic_and_counts_what_it_planted(tmp_path: Path) -> None:
    first = write(TINY, tmp_path / "a")
    second = write(TINY, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a" / "calendars").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b" / "calendars").iterdir())
    for name in names:
        assert (tmp_path / "a" / "calendars" / name).read_bytes() == (
            tmp_path / "b" / "calendars" / name
        ).read_bytes()
    assert first == second == read_manifest(tmp_path / "a")
    assert first.counts["calendars"] == first.counts["people"] == len(names)
    # each in both people's files
    assert first.counts["events_stored"] == 2 * first.counts["sessions"]
    roster = (tmp_path / "a" / "roster.csv").read_text().splitlines()
    assert len(roster) == 1 + TINY.pairs
    # The Google-shaped fixtures hold the same calendars.
    fixture = json.loads(
        (tmp_path / "a" / "fixtures" / names[0].replace(".ics", ".json")).read_text()
    )
    assert fixture["items"]
    assert write(replace(TINY, seed=4), tmp_path / "c") != first


def test_mutate_changes_the_requested_share_and_only_those_calendars(tmp_path: Path) -> None:
    planted = write(TINY, tmp_path).counts
    before = {p.name: p.read_bytes() for p in (tmp_path / "calendars").iterdir()}
    changed = mutate(tmp_path, 0.05)
    after = {p.name: p.read_bytes() for p in (tmp_path / "calendars").iterdir()}
    rewritten = [name for name in before if before[name] != after[name]]
    assert changed["changed_occurrences"] >= planted["occurrences"] * 0.05
    assert changed["changed_sessions"] + changed["changed_noise"] == changed["changed_occurrences"]
    assert 0 < len(rewritten) <= changed["calendars_rewritten"]


def test_small_scale_runs_and_counts_match_on_sqlite() -> None:
    expected = read_manifest(common.org_dir("small")).counts
    assert expected["pairings"] == SCALES["small"].pairs

    ingested = ingest.measure("small", "sqlite")
    assert ingested["occurrences"] == expected["occurrences"]
    assert ingested["events_stored"] == expected["events_stored"]
    assert ingested["events_dropped"] == expected["events_dropped"]
    assert ingested["event_links"] == expected["events_stored"]
    assert ingested["item_errors"] == 0
    assert ingested["floor_rows"] == 2 * expected["events_stored"]

    polled = poll.measure("small", "sqlite")
    assert polled["sessions"] == expected["sessions"]
    assert polled["sessions_full_pairings"] == expected["pairings"]
    assert polled["nochange_event_rows_written"] == 0
    assert polled["nochange_pages"] == 0
    assert polled["nochange_requests_per_calendar"] == 1
    # Every cancelled instance rewrites its two stored copies, at least.
    assert polled["changed_event_rows_written"] >= polled["expected_changed_event_rows"] > 0
    assert polled["sessions_incremental_pairings"] == polled["pairings_due"]
    assert 0 < polled["pairings_due"] < expected["pairings"]

    reported = report.measure("small", "sqlite")
    assert reported["pairings"] == expected["pairings"]
    assert 0 < reported["attended"] <= reported["scheduled"]


@pytest.mark.postgres
def test_small_scale_ingest_counts_match_on_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts are right, and the ingested copy kept for later figures is this run's own:
    another run on the same server neither sees nor drops it, and the run's end drops it."""
    from tests.conftest import _pg_admin_url

    _pg_admin_url()  # skips with the suite's message when PostgreSQL is not configured
    monkeypatch.setenv(common.RUN_ENV, "smokea")
    expected = read_manifest(common.org_dir("small")).counts
    try:
        ingested = ingest.measure("small", "postgresql")
        assert ingested["events_stored"] == expected["events_stored"]
        assert ingested["events_dropped"] == expected["events_dropped"]
        assert ingested["floor_rows"] == 2 * expected["events_stored"]
        kept = common._cache_name("small")
        assert kept.endswith("_smokea")
        assert common._pg_has(kept)
        monkeypatch.setenv(common.RUN_ENV, "smokeb")
        common.forget_run(["small"])  # the other run ends
        assert common._cache_name("small") != kept
        assert common._pg_has(kept)
    finally:
        monkeypatch.setenv(common.RUN_ENV, "smokea")
        common.forget_run(["small"])
    assert not common._pg_has(kept)


def test_run_says_which_figures_are_not_yet_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "FIGURES", (runner.Figure("no_such_figure", "someday"),))
    results = runner.run("small", None, ["sqlite"])
    assert results["figures"] == {"no_such_figure": runner.NOT_MEASURED}


def test_figures_of_other_modules_get_the_sizes_of_the_scale() -> None:
    def rules_eval(pairings: int = 10_000, database_url: str | None = None) -> None: ...

    def dispatch(emails: int = 500, workers: int = 1) -> None: ...

    assert runner.offered_arguments(rules_eval, "large", "postgresql", "postgresql://x/db") == {
        "pairings": 10_000,
        "database_url": "postgresql://x/db",
    }
    assert runner.offered_arguments(dispatch, "small", None, None) == {}


def test_an_organisation_from_another_generator_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same spec from a changed generator is another organisation: reusing the old
    # files would measure (and count against) a plan the generator no longer makes.
    monkeypatch.setenv("MENTORPULSE_BENCH_DIR", str(tmp_path))
    monkeypatch.setitem(SCALES, "tiny", TINY)
    out = common.org_dir("tiny")
    (out / "calendars" / "marker.ics").write_text("kept while the generator is the same")
    assert common.org_dir("tiny") == out
    assert (out / "calendars" / "marker.ics").exists()
    (out / common.GENERATOR_FILE).write_text("an older generator")
    common.org_dir("tiny")
    assert not (out / "calendars" / "marker.ics").exists()

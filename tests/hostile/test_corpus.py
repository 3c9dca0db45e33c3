"""The hostile iCalendar corpus through the real sync stage, on SQLite and PostgreSQL.

The sync runs as the CLI in a subprocess with an address-space limit of 1.5 GB, a CPU
limit and a wall timeout (tests/hostile/corpus.py), so a bomb that escapes its bounds
fails this test instead of the machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import corpus


def test_the_hostile_corpus_is_synced_whole_and_leaks_nothing(
    tmp_path: Path, database_url: str, realworld_ics: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = corpus.build(tmp_path / "calendars", realworld_ics)
    outcome = corpus.run(tmp_path / "calendars", database_url, tmp_path)
    figures = corpus.judge(cases, outcome)
    with capsys.disabled():  # the figures belong in the test log
        print(
            f"\nhostile corpus on {database_url.split(':', maxsplit=1)[0]}: {figures.line()}; "
            f"{outcome.wall_seconds:.1f} s wall, {outcome.cpu_seconds:.1f} s CPU, "
            f"max RSS {outcome.max_rss_mb:.0f} MB"
        )

    assert outcome.exit_code == 0, outcome.raw_output[-3000:]
    assert outcome.status_code == 0, outcome.raw_output[-3000:]  # item errors: still ok
    assert outcome.source["healthy"]
    assert figures.lost == []
    assert figures.doubled == []
    assert figures.unreported == []
    assert figures.leaks == []
    assert figures.survived == figures.tried == len(cases)
    # Bounded: the bombs took minutes and gigabytes each on main.
    assert outcome.max_rss_mb < 1000
    assert outcome.cpu_seconds < 120

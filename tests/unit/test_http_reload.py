"""SIGHUP's reload (Context.reload): a good config and roster are put in force, a broken
one is refused with its file:line and the old ones stay."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mentorpulse import stages
from mentorpulse.errors import UserError
from mentorpulse.sample import write_demo
from mentorpulse.storage.roster import pairing_ids

NEW_PAIR = "engineering,zoe.new@demo.example,yann.new@demo.example,2026-11-01,,,,,,,\n"


@pytest.fixture
def ctx(tmp_path: Path) -> stages.Context:
    write_demo(tmp_path, today=date(2026, 11, 23))
    return stages.Context.open(tmp_path / "mentorpulse.yaml")


def test_a_new_roster_and_config_are_put_in_force(ctx: stages.Context, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(roster.read_text() + NEW_PAIR)
    config = tmp_path / "mentorpulse.yaml"
    config.write_text(config.read_text().replace("timezone: Europe/London", "timezone: UTC", 1))
    pairs = len(ctx.roster)
    ctx.reload()
    assert len(ctx.roster) == pairs + 1
    assert ctx.config.timezone == "UTC"
    with ctx.db() as db:
        assert "engineering:zoe.new@demo.example:yann.new@demo.example" in pairing_ids(db)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("mentorpulse.yaml", lambda t: "@broken\n" + t, "mentorpulse.yaml:1:1: YAML syntax error"),
        (
            "mentorpulse.yaml",
            lambda t: t.replace("timezone: Europe/London", "timezone: Mars/Olympus", 1),
            "mentorpulse.yaml:4:",
        ),
        ("roster.csv", lambda t: t + "engineering,not-an-address,,,,,,,,,\n", "roster.csv:14"),
        (
            "mentorpulse.yaml",
            lambda t: t.replace("database: sqlite:///mentorpulse.db", "database: sqlite:///o.db"),
            "`database` changed: restart mentorpulse",
        ),
    ],
    ids=["yaml", "value", "roster", "database"],
)
def test_a_broken_config_or_roster_is_refused_and_the_old_ones_stay(
    ctx: stages.Context, tmp_path: Path, file: str, change: object, message: str
) -> None:
    config, roster = ctx.config, ctx.roster
    path = tmp_path / file
    path.write_text(change(path.read_text()))  # type: ignore[operator]
    with pytest.raises(UserError) as refused:
        ctx.reload()
    assert message in refused.value.message
    assert ctx.config is config
    assert ctx.roster is roster

"""The roster CSV: what an admin gets back for a good roster and for each kind of mistake.

Bad rosters under tests/data/config/roster-bad/ carry their expected messages in
``# expect:`` comment lines; the parser skips ``#`` lines, so they cost nothing.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mentorpulse.config import ConfigError, MentorpulseConfig, load_config, load_roster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "mentorpulse.yaml"
FIXTURES = REPO / "tests" / "data" / "config"
BAD = sorted((FIXTURES / "roster-bad").glob("*.csv"))


@pytest.fixture(scope="module")
def config() -> MentorpulseConfig:
    return load_config(EXAMPLE)


def _expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]


def test_example_roster(config: MentorpulseConfig) -> None:
    pairings = load_roster(REPO / "config" / "roster.csv", config)
    first, _, last = pairings
    assert first.key == "engineering:alice@example.org:bob@example.org"
    assert first.started_on == date(2024, 9, 2)
    assert first.ended_on is None
    assert first.mentee_timezone == "Europe/Lisbon"
    assert first.line == 2
    assert last.ended_on == date(2024, 12, 20)
    assert last.mentor_name == "Dave Diaz"


def test_headers_are_case_insensitive_and_cells_normalised(
    config: MentorpulseConfig, tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "# exported from the HR sheet\n"
        "\n"
        " Program ,MENTOR_EMAIL,Mentee_Email, started_on ,Mentee_Name\n"
        "engineering, Alice@Example.ORG ,BOB@example.org,2024-01-15,\n"
        ",,,,\n"
        'engineering,alice@example.org,carol@example.org,2024-02-01,"Chen, Carol"\n',
        encoding="utf-8",
    )
    pairings = load_roster(roster, config)
    assert [(p.mentor_email, p.mentee_email, p.line) for p in pairings] == [
        ("alice@example.org", "bob@example.org", 4),
        ("alice@example.org", "carol@example.org", 6),
    ]
    assert pairings[0].mentee_name is None
    assert pairings[1].mentee_name == "Chen, Carol"


def test_utf8_bom_from_a_spreadsheet_export(config: MentorpulseConfig, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    text = "program,mentor_email,mentee_email,started_on,mentee_name\r\n"
    text += "engineering,alice@example.org,bob@example.org,2024-01-15,Zoë Ångström\r\n"
    roster.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (pairing,) = load_roster(roster, config)
    assert pairing.program == "engineering"
    assert pairing.mentee_name == "Zoë Ångström"


@pytest.mark.parametrize("fixture", BAD, ids=[p.stem for p in BAD])
def test_bad_roster_reports_every_problem_at_its_line(
    fixture: Path, config: MentorpulseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURES)
    shown = fixture.relative_to(FIXTURES)
    expected = [f"{shown}:{line}" for line in _expected(fixture)]
    assert expected, f"{fixture} has no '# expect:' lines"
    with pytest.raises(ConfigError) as caught:
        load_roster(shown, config)
    assert caught.value.problems == expected


def test_fixture_set_covers_each_kind_of_mistake() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in BAD)
    for needle in (
        "is not an email address",
        "is not a date",
        "unknown program",
        "is already listed",
        "unknown column",
        "missing required column",
        "is before started_on",
        "is the same person",
    ):
        assert needle in text


def test_missing_roster_file_names_the_path(config: MentorpulseConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_roster(tmp_path / "roster.csv", config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'roster.csv'}: no such roster file")
    assert "program,mentor_email,mentee_email,started_on" in problem


def test_not_utf8_is_one_clear_problem(config: MentorpulseConfig, tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(
        "program,mentor_email,mentee_email,started_on,mentee_name\n"
        "engineering,a@example.org,b@example.org,2024-01-01,Zoë\n".encode("cp1252")
    )
    with pytest.raises(ConfigError) as caught:
        load_roster(roster, config)
    (problem,) = caught.value.problems
    assert "not UTF-8" in problem


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        ("[/]@evil.example,b@example.org,,,", "mentor_email: '[/]@evil.example' is not an email"),
        ("a@example.org,=hyperlink(x)@evil.example,,,", "mentee_email: '=hyperlink(x)@evil"),
        ("a@example.org,b@example.org,Ana\x00Lima,,", "mentor_name: 'Ana\\x00Lima' holds a"),
        ("a@example.org,b@example.org,," + "n" * 201 + ",", "mentee_name: 201 characters; a"),
        ('a@example.org,b@example.org,"Ana\r\nBcc: x@y",,', "mentor_name: 'Ana\\r\\nBcc"),
        ("a@example.org,b@example.org,,,99999999999999999999d", "cadence: '9999"),
    ],
    ids=["brackets", "comment", "nul", "long-name", "line-break", "huge-cadence"],
)
def test_a_hostile_roster_value_is_a_roster_error_at_its_line(
    cells: str, problem: str, config: MentorpulseConfig, tmp_path: Path
) -> None:
    """mentor_email, mentee_email, mentor_name, mentee_name, cadence: each a message at
    its line, never a crash later (PostgreSQL refuses a NUL or a name over its column)."""
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "program,started_on,mentor_email,mentee_email,mentor_name,mentee_name,cadence\n"
        "engineering,2024-09-02,ok@example.org,fine@example.org,,,\n"
        f"engineering,2024-09-02,{cells}\n",
        encoding="utf-8",
        newline="",
    )
    with pytest.raises(ConfigError) as caught:
        load_roster(roster, config)
    [message] = caught.value.problems
    assert message.startswith(f"{roster}:3: {problem}"), message

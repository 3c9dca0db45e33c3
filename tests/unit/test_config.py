"""The config loader: what an admin sees for a good file and for each kind of mistake.

Bad fixtures under tests/data/config/bad/ carry their expected messages in ``# expect:``
comment lines (``line: key.path: message``), so adding a case is adding a file.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mentorpulse.config import ConfigError, config_path, json_schema, load_config, load_roster

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "mentorpulse.yaml"
FIXTURES = REPO / "tests" / "data" / "config"
BAD = sorted((FIXTURES / "bad").glob("*.yaml"))


def _expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_example_config_and_roster_load_together(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(EXAMPLE)
    program = config.program("engineering")
    assert program is not None
    assert program.cadence.every == timedelta(days=14)
    assert program.cadence.grace == timedelta(days=3)
    assert [r.kind for r in program.rules] == ["cadence_gap", "cadence_gap", "party_disengagement"]
    assert [r.kind for r in config.rules_for(program)][3:] == ["first_meeting", "no_upcoming"]
    assert config.sources[0].path == "calendars"
    assert config.notify.transport.kind == "file"
    # State is kept outside the checkout, in data_dir.
    state = Path.home() / ".local/share/mentorpulse"
    assert config.state_dir == state
    assert config.resolve_state(config.notify.transport.path) == state / "outbox"
    assert config.resolve_state(config.reports.out_dir) == state / "reports"
    assert config.database == "sqlite:///mentorpulse.db"
    assert config.base_dir == EXAMPLE.parent
    pairings = load_roster(config.resolve(config.roster.path), config)
    assert {p.program for p in pairings} == {"engineering"}
    assert len(pairings) == 3


def test_good_config_interpolates_environment_and_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MP_TEST_DATABASE", "postgresql+psycopg://mp@db/mentorpulse")
    monkeypatch.delenv("MP_TEST_FEED", raising=False)
    config = load_config(FIXTURES / "good.yaml")
    assert config.database == "postgresql+psycopg://mp@db/mentorpulse"
    assert config.sources[0].url == "https://calendar.example.org/team.ics"
    assert config.notify.sender == "mentoring+${literal}@example.org"
    assert config.programs[0].cadence.grace == timedelta(hours=36)
    assert config.programs[0].rules[0].for_ == timedelta(hours=12)
    assert config.resolve(config.roster.path) == FIXTURES / "people" / "roster.csv"


def test_empty_variable_falls_back_to_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_TEST_DATABASE", "")
    config = load_config(FIXTURES / "good.yaml")
    assert config.database == "sqlite:///state/mentorpulse.db"


@pytest.mark.parametrize("fixture", BAD, ids=[p.stem for p in BAD])
def test_bad_config_reports_every_problem_at_its_line(
    fixture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MP_TEST_UNSET_DB", raising=False)
    monkeypatch.delenv("MP_TEST_UNSET_DIR", raising=False)
    # Relative in, relative out: the admin sees the path the way they typed it.
    monkeypatch.chdir(FIXTURES)
    shown = fixture.relative_to(FIXTURES)
    expected = [f"{shown}:{line}" for line in _expected(fixture)]
    assert expected, f"{fixture} has no '# expect:' lines"
    assert _problems(shown) == expected


def test_fixture_set_covers_each_kind_of_mistake() -> None:
    assert {p.stem for p in BAD} >= {
        "unknown_key",
        "bad_duration",
        "wrong_rule_kind",
        "missing_required",
        "duplicate_program",
        "undefined_contact",
        "bad_timezone",
        "unset_env",
        "several_errors",
        "yaml_syntax",
    }


def test_secret_from_environment_never_appears_in_messages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "hunter2-Tr0ub4dor"
    monkeypatch.setenv("MP_TEST_SECRET", secret)
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(
        "timezone: ${MP_TEST_SECRET}\n"
        "privacy:\n"
        "  store_titles: ${MP_TEST_SECRET}\n"
        "contacts:\n"
        "  hr: {email: hr@example.org, timezone: 'Europe/${MP_TEST_SECRET}'}\n"
        "notify:\n"
        "  transport: {kind: '${MP_TEST_SECRET}'}\n"
        "programs:\n"
        "  - id: p\n"
        "    cadence: {every: '${MP_TEST_SECRET}'}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert len(problems) == 5
    assert all(secret not in problem for problem in problems)
    assert secret not in str(caught.value)
    # The admin still learns which line and which reference to look at.
    assert f"{path}:1: timezone: unknown time zone '${{MP_TEST_SECRET}}'" in problems[0]
    assert "'Europe/${MP_TEST_SECRET}'" in problems[2]


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "mentorpulse.yaml"
    problems = _problems(missing)
    assert len(problems) == 1
    assert problems[0].startswith(f"{missing}: no such config file")
    assert "mentorpulse demo" in problems[0]
    assert "config/mentorpulse.yaml" in problems[0]


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text("# nothing configured yet\n", encoding="utf-8")
    config = load_config(path)
    assert config.programs == ()
    assert config.timezone == "UTC"
    assert config.base_dir == tmp_path


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(
        """\
programs:
  - &base
    id: a
    cadence: {every: 7d}
  - <<: *base
    id: b
""",
        encoding="utf-8",
    )
    config = load_config(path)
    assert [(p.id, p.cadence.every) for p in config.programs] == [
        ("a", timedelta(days=7)),
        ("b", timedelta(days=7)),
    ]


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORPULSE_CONFIG", "/etc/mentorpulse/main.yaml")
    assert config_path(Path("given.yaml")) == Path("given.yaml")
    assert config_path(None) == Path("/etc/mentorpulse/main.yaml")
    monkeypatch.delenv("MENTORPULSE_CONFIG")
    assert config_path(None) == Path("config/mentorpulse.yaml")


def test_json_schema_names_rule_kinds_and_durations_as_strings() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    assert schema["title"] == "mentorpulse.yaml"
    assert str(schema["$schema"]).startswith("https://json-schema.org/")
    assert "base_dir" not in text
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    assert defs["CadenceGapRule"]["properties"]["kind"]["const"] == "cadence_gap"
    every = defs["Cadence"]["properties"]["every"]
    assert every["type"] == "string"
    assert every["pattern"] == r"^\d+[smhdw]$"
    # Defaults are written the way an admin would write them, not as ISO 8601.
    assert defs["ScheduleConfig"]["properties"]["evaluate_every"]["default"] == "15m"
    assert defs["IcsSource"]["properties"]["window_past"]["default"] == "180d"
    assert "PT" not in text


def test_json_schema_accepts_the_example_and_rejects_a_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json_schema())
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(example)) == []
    example["programs"][0]["rules"][0]["kind"] = "cadence_gapp"
    assert list(validator.iter_errors(example)) != []


def test_merge_keys_keep_yaml_precedence_without_copying_duplicates(tmp_path: Path) -> None:
    """Own keys beat merged ones and the first mapping listed beats the later ones."""
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(
        """\
contacts:
  a: &a {email: a@example.org, name: A}
  b: &b {email: b@example.org, name: B, timezone: Europe/Berlin}
  c: {<<: [*a, *b], name: C}
  d: &d {<<: *b}
  e: {<<: [*d, *d, *d]}
""",
        encoding="utf-8",
    )
    contacts = load_config(path).contacts
    assert (contacts["c"].email, contacts["c"].name) == ("a@example.org", "C")
    assert contacts["c"].timezone == "Europe/Berlin"
    assert contacts["e"] == contacts["b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &a {<<: *a}\n", "1: a: an alias refers to itself"),
        ("a: &a [1, *a]\n", "1: a[1]: an alias refers to itself"),
        ("a: &a {<<: {k: 1}, x: *a}\n", "1: a.x: an alias refers to itself"),
        ("a: " + "{b: " * 60 + "1" + "}" * 60 + "\n", "1: nested more than 50 levels deep"),
        ("a: 1" + "0" * 5000 + "\n", "1: a: not a value this file can hold"),
    ],
    ids=["merge-itself", "list-itself", "merging-and-itself", "deep", "huge-int"],
)
def test_hostile_yaml_is_a_problem_at_its_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(text, encoding="utf-8")
    assert f"{path}:{expected}" in _problems(path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://mp@db/mp", "unsupported database 'postgres' (write postgresql://)"),
        ("sqlite://", "give SQLite a file (sqlite:///mentorpulse.db)"),
        ("sqlite:///:memory:", "give SQLite a file (sqlite:///mentorpulse.db)"),
        ("postgresql://mp:pw@db:port/mp", "not a database URL"),
        ("postgresql://mp@db:70000/mp", "the database port must be between 1 and 65535"),
    ],
)
def test_database_url_is_checked_at_its_line(tmp_path: Path, url: str, expected: str) -> None:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(f"timezone: UTC\ndatabase: '{url}'\n", encoding="utf-8")
    problems = _problems(path)
    assert problems == [f"{path}:2: database: {problems[0].split('database: ', 1)[1]}"]
    assert expected in problems[0]
    assert "pw" not in problems[0]


def test_sqlite_paths_expand_home_and_the_data_folder_is_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentorpulse.storage.engine import make_engine, resolve_url

    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_url("sqlite:///~/x.db", Path("/elsewhere")) == f"sqlite:///{tmp_path}/x.db"
    engine = make_engine("sqlite:///x.db", tmp_path / "state")
    engine.dispose()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_a_database_that_cannot_be_opened_is_a_user_error(tmp_path: Path) -> None:
    """Past the loader's folder check (a folder removed since, a file that is a folder):
    the connection failure is one line naming the URL, exit 2."""
    from sqlalchemy import text

    from mentorpulse.errors import DatabaseUnavailable
    from mentorpulse.storage.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/gone/mentorpulse.db")
    with pytest.raises(DatabaseUnavailable) as caught, engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert caught.value.code == 2
    assert caught.value.message == (
        f"database sqlite:///{tmp_path}/gone/mentorpulse.db: cannot connect: unable to open "
        f"database file; the folder {tmp_path}/gone does not exist: create it or fix "
        "`database` in the config"
    )


def test_a_database_migrated_by_a_newer_version_is_a_user_error(tmp_path: Path) -> None:
    from sqlalchemy import text

    from mentorpulse.errors import UserError
    from mentorpulse.storage.engine import make_engine
    from mentorpulse.storage.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path}/mentorpulse.db")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    with pytest.raises(UserError) as caught:
        upgrade(engine)
    engine.dispose()
    assert caught.value.code == 2
    assert caught.value.message.startswith(
        f"database sqlite:///{tmp_path}/mentorpulse.db is at schema revision f00dfeedbeef, "
        "which this mentorpulse does not know"
    )


# Names Python's zoneinfo cannot open, each in its own way: wrong case (not found), a
# region without a city (a folder), one too long for a file name (OSError), a path.
UNUSABLE_ZONES = ["europe/berlin", "Europe", "Europe/" + "x" * 300, "../etc/passwd"]


@pytest.mark.parametrize("name", UNUSABLE_ZONES, ids=["case", "folder", "too-long", "path"])
def test_an_unusable_zone_is_one_config_problem(tmp_path: Path, name: str) -> None:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(f"timezone: '{name}'\n", encoding="utf-8")
    assert _problems(path) == [
        f"{path}:1: timezone: unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
    ]


@pytest.mark.parametrize("name", UNUSABLE_ZONES, ids=["case", "folder", "too-long", "path"])
def test_an_unusable_zone_is_one_roster_problem(tmp_path: Path, name: str) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "program,mentor_email,mentee_email,started_on,mentor_timezone\n"
        f"engineering,a@example.org,b@example.org,2024-01-01,{name}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_roster(roster, load_config(EXAMPLE))
    assert caught.value.problems == [
        f"{roster}:2: mentor_timezone: {name!r} is not a time zone "
        "(use an IANA name like Europe/Berlin)"
    ]

"""Config and database mistakes as an operator meets them: one message, exit 2, no traceback.

Each case runs the real command in a subprocess: `config check` and a command that opens
the database (`status`), since every command must refuse the same file the same way.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from mentorpulse.config import loader
from mentorpulse.config.loader import load_config
from tests.servers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ROSTER = (
    "program,mentor_email,mentee_email,started_on\n"
    "eng,alice@example.org,bob@example.org,2026-01-05\n"
)


def _mentorpulse(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mentorpulse", "--log-level", "warning", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def _config(tmp_path: Path, body: str, *, database: str | None = None) -> Path:
    """A valid config plus ``body``; ``database`` defaults to a file in tmp_path."""
    (tmp_path / "roster.csv").write_text(ROSTER, encoding="utf-8")
    path = tmp_path / "mentorpulse.yaml"
    db = database or f"sqlite:///{tmp_path / 'mentorpulse.db'}"
    path.write_text(
        f"database: {db}\n"
        "roster: {path: roster.csv}\n"
        "programs:\n"
        "  - id: eng\n"
        "    cadence: {every: 14d, grace: 3d}\n" + body,
        encoding="utf-8",
    )
    return path


def _line(path: Path, marker: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text)


def _refused(config: Path, expected: str, *, secret: str | None = None) -> None:
    """`config check` and `status` both say ``expected`` on stderr and exit 2."""
    for command in (["config", "check"], ["status"]):
        result = _mentorpulse(*command, "--config", str(config))
        output = result.stdout + result.stderr
        assert result.returncode == 2, (command, output)
        assert expected in result.stderr, (command, output)
        assert "Traceback" not in output
        assert len(result.stderr.strip().splitlines()) == 1, output
        if secret is not None:
            assert secret not in output


# ------------------------------------------------------------------ config values


CASES = [
    (
        "garbage database URL",
        "not a url",
        "",
        "database:",
        "database: not a database URL; expected sqlite:///path/to/mentorpulse.db",
    ),
    (
        "database nobody ships a driver for",
        "mysql://mp:s3cret@db.example.org/mp",
        "",
        "database:",
        "database: unsupported database 'mysql'; mentorpulse runs on sqlite or postgresql",
    ),
    (
        "duration that overflows",
        None,
        "rules:\n  - id: lapsed\n    kind: cadence_gap\n    grace: 99999999999999999999d\n",
        "grace: 9999",
        "rules[0].grace: a duration of at most 36500d (100 years)",
    ),
    (
        "zero interval",
        None,
        "notify:\n  every: 0d\n",
        "every: 0d",
        "notify.every: must be longer than 0 (e.g. 15m, 14d)",
    ),
    (
        "ftp feed",
        None,
        "sources:\n  - id: team\n    kind: ics\n    url: ftp://files.example.org/a.ics\n",
        "url: ftp://",
        "sources[0].url: expected an http:// or https:// URL, got ftp://",
    ),
    (
        "attendance checks with links to nowhere",
        None,
        "    attendance_check: {ask: [mentor]}\n",
        "attendance_check:",
        "programs[0].attendance_check: attendance checks email links to this service's answer "
        "pages, and each question is sent only once: set service.http.public_url to where "
        "people reach this service (e.g. https://mentorpulse.example.org/)",
    ),
    (
        "SQLite in a missing folder",
        "sqlite:///{tmp}/no/such/folder/mentorpulse.db",
        "",
        "database:",
        "database: the database's folder {tmp}/no/such/folder does not exist",
    ),
]


@pytest.mark.parametrize(
    ("name", "database", "body", "marker", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_a_nonsense_value_is_refused_at_its_line_by_every_command(
    tmp_path: Path, name: str, database: str | None, body: str, marker: str, expected: str
) -> None:
    if database is not None:
        database = database.format(tmp=tmp_path)
    config = _config(tmp_path, body, database=database)
    line = _line(config, marker)
    _refused(config, f"{config}:{line}: " + expected.format(tmp=tmp_path), secret="s3cret")
    assert not (tmp_path / "mentorpulse.db").exists(), "refused before opening anything"


def test_a_missing_ics_path_is_refused_by_config_check_and_shown_failing_by_status(
    tmp_path: Path,
) -> None:
    """`config check` looks at the machine; the other commands run, and a calendar folder
    that is missing (or goes missing while mentorpulse runs) is that source failing."""
    config = _config(tmp_path, "sources:\n  - id: team\n    kind: ics\n    path: calendars-typo\n")
    checked = _mentorpulse("config", "check", "--config", str(config))
    assert checked.returncode == 2, checked.stderr
    line = _line(config, "path: calendars-typo")
    assert (
        f"{config}:{line}: sources[0].path: {tmp_path}/calendars-typo does not exist"
        in checked.stderr
    )
    assert "Traceback" not in checked.stdout + checked.stderr
    synced = _mentorpulse("sync", "--once", "--config", str(config))
    assert synced.returncode == 1, synced.stdout + synced.stderr
    shown = _mentorpulse("status", "--config", str(config))
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "team: " in shown.stdout
    assert "calendars-typo" in shown.stdout


def test_an_oversize_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    padding = "# " + "x" * 98 + "\n"
    with config.open("a", encoding="utf-8") as file:
        file.write(padding * (loader.MAX_CONFIG_BYTES // len(padding) + 1))
    _refused(config, f"{config}:1: the config file is larger than 5 MB")


def test_a_billion_laughs_file_is_refused_at_the_alias_that_explodes(tmp_path: Path) -> None:
    levels = "abcdefghi"
    lols = ", ".join(["lol"] * 9)
    lines = [f"a: &a [{lols}]"]
    for previous, level in itertools.pairwise(levels):
        aliases = ", ".join([f"*{previous}"] * 9)
        lines.append(f"{level}: &{level} [{aliases}]")
    config = _config(tmp_path, "\n".join(lines) + "\n")
    # a..e expand to 66,430 values, f to 597,871: the bound falls inside f.
    _refused(
        config,
        f"{config}:{_line(config, 'f: &f')}: f: aliases expand to more than 100,000 values",
    )


# ------------------------------------------------------------------ the database


def test_postgresql_unreachable_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, "", database=f"postgresql://mp:s3cret@127.0.0.1:{port}/mp")
    _refused(
        config,
        f"error: database postgresql+psycopg://mp:***@127.0.0.1:{port}/mp: cannot connect: "
        f'connection to server at "127.0.0.1", port {port} failed: Connection refused; '
        "check that the server is running",
        secret="s3cret",
    )


@pytest.mark.postgres
def test_postgresql_bad_credentials_name_the_url_and_the_fix(tmp_path: Path, pg_url: str) -> None:
    url = make_url(pg_url).set(username="mentorpulse_no_such_role", password="s3cret")
    config = _config(tmp_path, "", database=url.render_as_string(hide_password=False))
    shown = url.render_as_string(hide_password=True)
    _refused(
        config,
        f"error: database {shown}: cannot connect: ",
        secret="s3cret",
    )
    result = _mentorpulse("status", "--config", str(config))
    assert 'role "mentorpulse_no_such_role" does not exist' in result.stderr
    assert "check the user name and password in `database`" in result.stderr


def test_sqlite_that_cannot_be_opened_at_run_time_is_one_line(tmp_path: Path) -> None:
    """The loader checks the folder; a database path that is itself a folder is only
    found when opening it: still one line, exit 2."""
    (tmp_path / "state.db").mkdir()
    config = _config(tmp_path, "", database=f"sqlite:///{tmp_path / 'state.db'}")
    result = _mentorpulse("status", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: database sqlite:///{tmp_path / 'state.db'}: ")
    assert "cannot connect: unable to open database file" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_config_check_says_the_database_connects(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    result = _mentorpulse("config", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    db = tmp_path / "mentorpulse.db"
    assert f"database: ok (sqlite:///{db}, created on first use)" in result.stdout
    assert not db.exists(), "config check creates nothing"
    assert _mentorpulse("db", "upgrade", "--config", str(config)).returncode == 0
    result = _mentorpulse("config", "check", "--config", str(config))
    assert f"database: ok (sqlite:///{db})\n" in result.stdout


# ------------------------------------------------------------------ loader scaling


def _contacts(path: Path, count: int) -> Path:
    lines = ["contacts:"]
    for index in range(count):
        lines += [f"  c{index}:", f"    email: person{index}@example.org", f"    name: P {index}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _calls_to_load(path: Path) -> int:
    """Every Python and C function call made while loading: a measure of work that does
    not depend on the machine's speed or load. Comparing YAML nodes is made a Python call
    too (by default it is an identity check in C), so that looking a node up in a list —
    the quadratic key check the loader once had — shows in the count."""
    calls = 0

    def count(_frame: object, event: str, _arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        config = load_config(path)
    finally:
        sys.setprofile(None)
    assert config.contacts
    return calls


def test_the_loader_is_linear_in_the_number_of_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def same(self: yaml.Node, other: object) -> bool:
        return self is other

    monkeypatch.setattr(yaml.Node, "__eq__", same)
    monkeypatch.setattr(yaml.Node, "__hash__", object.__hash__)
    load_config(_contacts(tmp_path / "warm.yaml", 10))  # imports and caches out of the count
    small = _calls_to_load(_contacts(tmp_path / "small.yaml", 10_000))
    large = _calls_to_load(_contacts(tmp_path / "large.yaml", 20_000))
    assert 1.9 < large / small < 2.1, (small, large)
    assert len(load_config(tmp_path / "large.yaml").contacts) == 20_000


def test_key_line_parses_the_file_once_for_many_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _contacts(tmp_path / "mentorpulse.yaml", 2_000)
    parses = 0
    real = loader._Builder.parse

    def counted(self: loader._Builder, text: str) -> object:
        nonlocal parses
        parses += 1
        return real(self, text)

    monkeypatch.setattr(loader._Builder, "parse", counted)
    lines = [loader.key_line(path, ("contacts", f"c{i}", "email")) for i in range(2_000)]
    assert lines == [3 * i + 3 for i in range(2_000)]
    assert parses == 1


# ------------------------------------------------------------------ the shipped example


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if ".venv" not in p.parts and ".git" not in p.parts and "__pycache__" not in p.parts
    }


def test_the_shipped_example_runs_as_shipped_and_writes_nothing_in_the_checkout(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MENTORPULSE_")}
    env |= {"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    example = REPO / "config" / "mentorpulse.yaml"
    before = _tree(REPO)

    checked = _mentorpulse("config", "check", "--config", str(example), cwd=tmp_path, env=env)
    synced = _mentorpulse("sync", "--once", "--config", str(example), cwd=tmp_path, env=env)
    status = _mentorpulse("status", "--config", str(example), cwd=tmp_path, env=env)

    for result in (checked, synced, status):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    data = home / ".local" / "share" / "mentorpulse"
    assert f"database: ok (sqlite:///{data / 'mentorpulse.db'}, created" in checked.stdout
    assert "team-calendars" in synced.stdout
    assert " yes " in synced.stdout
    assert " ok " in status.stdout
    assert (data / "mentorpulse.db").is_file()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert _tree(REPO) == before, "the example wrote inside the checkout"


def test_a_short_signing_key_is_one_line_at_start_without_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, "")
    env = {**os.environ, "MENTORPULSE_SIGNING_KEY": "hunter2"}
    result = _mentorpulse("status", "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    assert "MENTORPULSE_SIGNING_KEY: key 1 of 1 is shorter than 32 characters" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

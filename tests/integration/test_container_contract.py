"""The image's contract without a container engine: the INSTALLED ``mentorpulse`` entry
point, run as an unprivileged user with a read-only config folder, an unwritable working
directory and ``MENTORPULSE_DATA_DIR`` elsewhere, starts, answers, and writes nothing
outside the data folder.

Tests run as root here, where file modes stop no write: the children then run as
``nobody`` through util-linux ``setpriv``. The folders live in a fresh folder under the
system's temp folder, since pytest's own is private to the user running the tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mentorpulse.sample import write_demo
from tests.service_support import add_settings

NOBODY = 65534
DEADLINE_SECONDS = 60


@dataclass(frozen=True)
class Layout:
    config: Path  # read-only: mentorpulse.yaml, roster.csv, calendars/
    data: Path  # MENTORPULSE_DATA_DIR, the one writable folder
    cwd: Path  # read-only, empty
    home: Path  # read-only, empty: nothing is written to ~ either


def _entry_point() -> Path:
    """The console script pip installed beside this interpreter (not ``python -m``)."""
    found = shutil.which("mentorpulse", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"no mentorpulse console script beside {sys.executable}: pip install -e .")
    return Path(found)


def _as_unprivileged() -> list[str]:
    """The prefix that makes a child unable to write where root could."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if os.environ.get("CI"):
            pytest.fail("root without setpriv (util-linux): the read-only config is not real")
        pytest.skip("running as root without setpriv (util-linux): cannot make a read-only dir")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.fixture
def layout(database: str) -> Iterator[Layout]:
    root = Path(tempfile.mkdtemp(prefix="mentorpulse-contract-"))
    root.chmod(0o755)
    try:
        config = root / "config"
        write_demo(config, today=datetime.now(UTC).date())
        yaml_file = config / "mentorpulse.yaml"
        text = yaml_file.read_text(encoding="utf-8")
        assert "database: sqlite:///mentorpulse.db\n" in text  # relative: lands in data
        yaml_file.write_text(
            text.replace("database: sqlite:///mentorpulse.db\n", f"database: {database}\n"),
            encoding="utf-8",
        )
        data = root / "data"
        data.mkdir(mode=0o700)
        cwd = root / "cwd"
        cwd.mkdir()
        home = root / "home"
        home.mkdir()
        for folder in (config, cwd, home):
            _read_only(folder)
        if os.geteuid() == 0:
            os.chown(data, NOBODY, NOBODY)
        yield Layout(config=config, data=data, cwd=cwd, home=home)
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str:
    """SQLite by a relative path (so it must land in the data folder), or PostgreSQL."""
    if request.param == "sqlite":
        return "sqlite:///mentorpulse.db"
    return str(request.getfixturevalue("pg_url"))


def _snapshot(*folders: Path) -> dict[Path, tuple[int, int, str]]:
    """Every entry under ``folders``: mode, size and content digest (files)."""
    seen: dict[Path, tuple[int, int, str]] = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            stat = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            seen[path] = (stat.st_mode, stat.st_size, digest)
    return seen


def _environment(layout: Layout) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "MENTORPULSE_SECRET_KEY")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    return env | {
        "HOME": str(layout.home),
        "MENTORPULSE_CONFIG": str(layout.config / "mentorpulse.yaml"),
        "MENTORPULSE_DATA_DIR": str(layout.data),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": str(layout.data),  # the image's /tmp is a tmpfs; here: count it as data
    }


def _run(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_as_unprivileged(), str(_entry_point()), *args],
        cwd=layout.cwd,
        env=_environment(layout),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_stages_write_only_under_the_data_folder(layout: Layout, database: str) -> None:
    before = _snapshot(layout.config, layout.cwd, layout.home)
    for command in (["db", "upgrade"], ["sync", "--once"], ["evaluate"], ["notify"], ["status"]):
        result = _run(layout, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
    assert _snapshot(layout.config, layout.cwd, layout.home) == before
    written = _files_under(layout.data)
    if database.startswith("sqlite"):
        assert "mentorpulse.db" in written
        # The per-source lock files sit beside the database, in the data folder too.
        assert any(
            name.startswith("mentorpulse.db.") and name.endswith(".lock") for name in written
        )
    emails = [name for name in written if name.startswith("outbox/")]
    assert emails, f"notify wrote no email into the data folder: {sorted(written)}"


@pytest.mark.parametrize("database", ["sqlite:///mentorpulse.db"])
def test_a_read_only_config_with_no_data_folder_is_a_clear_error(layout: Layout) -> None:
    """Without MENTORPULSE_DATA_DIR the state would go next to the config: refused in one
    line (the folder is not writable), not a traceback, and nothing is written."""
    before = _snapshot(layout.config, layout.cwd, layout.home)
    env = _environment(layout)
    del env["MENTORPULSE_DATA_DIR"]
    result = subprocess.run(
        [*_as_unprivileged(), str(_entry_point()), "sync", "--once"],
        cwd=layout.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(layout.config) in result.stderr + result.stdout
    assert _snapshot(layout.config, layout.cwd, layout.home) == before


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_daemon_starts_and_is_ready(layout: Layout) -> None:
    """``mentorpulse run`` as the image runs it: /healthz and /readyz answer 200 on
    ``service.http`` (the HTTP service of issue 17), and it exits 0 on SIGTERM."""
    port = _free_port()
    yaml_file = layout.config / "mentorpulse.yaml"
    yaml_file.chmod(0o644)
    http = {"enabled": True, "host": "127.0.0.1", "port": port}
    add_settings(yaml_file, {"service": {"http": http}})
    yaml_file.chmod(0o444)
    assert _run(layout, "db", "upgrade").returncode == 0
    before = _snapshot(layout.config, layout.cwd, layout.home)
    child = subprocess.Popen(
        [*_as_unprivileged(), str(_entry_point()), "run"],
        cwd=layout.cwd,
        env=_environment(layout),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        ready = 0
        while time.monotonic() < deadline and child.poll() is None:
            try:
                ready = _get(f"http://127.0.0.1:{port}/readyz")
            except OSError:
                ready = 0
            if ready == 200:
                break
            time.sleep(0.2)
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert ready == 200, f"/readyz answered {ready} within {DEADLINE_SECONDS} s"
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            _out, err = child.communicate(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            _out, err = child.communicate()
    assert child.returncode == 0, err[-3000:]
    assert _snapshot(layout.config, layout.cwd, layout.home) == before

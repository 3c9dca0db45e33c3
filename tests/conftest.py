"""Shared fixtures: a database on each backend (empty or with the schema), the real-world
test data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import CadenceGapRule
from mentorpulse.rules import Condition, RuleKind, kinds, register
from mentorpulse.rules.kinds import TimelineView
from mentorpulse.storage.models import Base

REPO = Path(__file__).resolve().parents[1]
# Beside the checkout; a git worktree one level deeper (wt/issueN) finds it one further up.
SHARED_TESTDATA = next(
    (
        folder / "shared" / "testdata"
        for folder in (REPO.parent, REPO.parent.parent)
        if (folder / "shared" / "testdata").is_dir()
    ),
    REPO.parent / "shared" / "testdata",
)
PG_ENV = "MENTORPULSE_TEST_DATABASE_URL"


@pytest.fixture(autouse=True)
def _own_data_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes this machine's own state (``~/.local/share/mentorpulse``,
    the example config's ``data_dir``): a stale database there made the example's `config
    check` fail. So ``~`` is a fresh folder, and a ``MENTORPULSE_DATA_DIR`` of the shell
    that runs the tests moves no test's files (a test of it sets its own)."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("MENTORPULSE_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def realworld_ics() -> Path:
    folder = SHARED_TESTDATA / "ics-realworld"
    if not folder.is_dir():
        pytest.fail(f"{folder} is missing: tests need ../shared/testdata beside the checkout")
    return folder


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} must be set in CI: the suite runs on PostgreSQL too")
        pytest.skip(
            f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1/postgres)"
        )
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin = make_url(_pg_admin_url()).set(drivername="postgresql+psycopg")
    name = f"mentorpulse_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default and on the production database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mentorpulse.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Db]]:
    """Sessions on ``database_url`` with the schema created (on each backend)."""
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield sessionmaker(engine)
    engine.dispose()


class FailingRule(CadenceGapRule):
    """A config model whose kind always raises (``RuntimeError: bad rule``)."""


class _FailingKind(RuleKind[FailingRule]):
    def evaluate(self, view: TimelineView) -> Condition:
        raise RuntimeError("bad rule")


@pytest.fixture
def failing_rule(monkeypatch: pytest.MonkeyPatch) -> type[FailingRule]:
    """A rule kind that always raises, registered for this test alone.

    The production registry is swapped for a copy, so the kind is gone afterwards and no
    other test (nor a test run in another order) ever judges with it.
    """
    monkeypatch.setattr(kinds, "_KINDS", dict(kinds._KINDS))
    register(FailingRule)(_FailingKind)
    return FailingRule

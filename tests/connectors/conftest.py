"""Databases for the contract suite: the same scenario on SQLite and on PostgreSQL.

The suite runs a hundred-odd scenarios; a new PostgreSQL database per scenario (as
tests/conftest.py's ``pg_url`` makes) cost a second each. Here each backend is migrated
once per session and handed to each scenario empty: SQLite as a copy of a migrated file,
PostgreSQL as one database whose tables are emptied between scenarios.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mentorpulse.storage.migrate import upgrade
from mentorpulse.storage.models import Base
from tests.conftest import _pg_admin_url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mentorpulse.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _pg_session_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the session, dropped at its end."""
    admin = make_url(_pg_admin_url()).set(drivername="postgresql+psycopg")
    name = f"mentorpulse_contract_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        migrated = create_engine(url)
        upgrade(migrated)
        migrated.dispose()
        yield url
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database on each backend (shadows tests/conftest.py's)."""
    if request.param == "sqlite":
        path = tmp_path / "mentorpulse.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url = str(request.getfixturevalue("_pg_session_url"))
    yield url
    engine = create_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()

"""Schema migrations with Alembic, run from inside the package (no alembic.ini to ship)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, event

from mentorpulse.config.schema import sqlite_path
from mentorpulse.errors import UserError
from mentorpulse.storage.engine import make_engine, resolve_url, safe_url
from mentorpulse.storage.locks import exclusive

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``; a no-op when it is already there.

    Processes starting together migrate one after the other: the second finds the
    schema already at ``revision`` instead of creating it a second time. A database
    already at the newest revision is only read (no lock, no wait behind a writer).
    """
    if revision == "head":
        current, head = revision_state(engine)
        if current == head:
            return
    config = _config()
    with engine.begin() as connection:
        exclusive(connection, "migrate")
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        except CommandError as error:
            if "Can't locate revision" not in str(error):
                raise
            current = MigrationContext.configure(connection).get_current_revision()
            raise _unknown_revision(engine, current) from None


def _unknown_revision(engine: Engine, current: str | None) -> UserError:
    return UserError(
        f"database {safe_url(str(engine.url))} is at schema revision {current}, which this "
        "mentorpulse does not know: a newer version migrated it; run that version (or a "
        "newer one), or point `database` elsewhere",
        code=2,
    )


def revision_state(engine: Engine) -> tuple[str | None, str | None]:
    """(current revision of the database, newest revision we ship)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


UPGRADE_STEP = "run `mentorpulse db upgrade`"


def open_read_only(url: str, base_dir: Path, *, empty_ok: bool = False) -> Engine:
    """An engine for the commands that only read (report, explain, status …): it never
    creates the database, migrates it or writes to it, and opens only a database whose
    schema is this version's (else one line saying to run ``mentorpulse db upgrade``).

    The database itself refuses writes on these connections (SQLite ``query_only``,
    PostgreSQL read-only transactions), so a read that would write fails loudly.
    ``empty_ok``: a database without any schema yet passes (``config check``: the first
    writing command creates it).
    """
    database = sqlite_path(url, base_dir)
    if database is not None and not database.exists():
        raise UserError(
            f"database {safe_url(resolve_url(url, base_dir))} does not exist yet: {UPGRADE_STEP}",
            code=2,
        )
    engine = make_engine(url, base_dir)
    event.listen(engine, "connect", _refuse_writes)
    try:
        current, head = revision_state(engine)
        if current != head and not (current is None and empty_ok):
            known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
            if current is not None and current not in known:
                raise _unknown_revision(engine, current)
            state = f"is at schema revision {current}" if current else "has no schema yet"
            raise UserError(
                f"database {safe_url(str(engine.url))} {state}, this mentorpulse needs "
                f"{head}: {UPGRADE_STEP}",
                code=2,
            )
    except BaseException:
        engine.dispose()
        raise
    return engine


def _refuse_writes(dbapi_connection: Any, _record: object) -> None:
    """``connect`` hook of a read-only engine: the database refuses any write."""
    cursor = dbapi_connection.cursor()
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor.execute("PRAGMA query_only = ON")
    else:  # PostgreSQL: a SET in a transaction is undone by its rollback, so commit it
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_connection.commit()
    cursor.close()


def autogenerate(engine: Engine, message: str) -> None:
    """Write a new migration from the models (developers only)."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)

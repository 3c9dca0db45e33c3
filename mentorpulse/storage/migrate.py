"""Schema migrations with Alembic, run from inside the package (no alembic.ini to ship).

Alembic (and the migration scripts) load only when a database is behind: a command on a
database already at :data:`HEAD_REVISION` checks that with one query and goes on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, String, column, event, inspect, select, table

from mentorpulse.config.schema import sqlite_path
from mentorpulse.errors import UserError
from mentorpulse.storage.engine import make_engine, resolve_url, safe_url
from mentorpulse.storage.locks import exclusive

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")

# The newest migration's revision id, known without loading Alembic; a test keeps it
# equal to the head of migrations/versions (a new migration updates it).
HEAD_REVISION = "dashboard_sessions"
VERSION_TABLE = "alembic_version"  # Alembic's default name, which migrations/env.py keeps
# Tables our migrations create for the worker pool's queue (Procrastinate's own schema,
# migration 0008) but no model of ours describes: autogenerate leaves them alone.
QUEUE_TABLE_PREFIX = "procrastinate_"


def ours(_object: object, name: str | None, type_: str, _reflected: bool, _compare: object) -> bool:
    """Alembic's ``include_object``: everything but the queue's tables is ours to compare."""
    return not (type_ == "table" and (name or "").startswith(QUEUE_TABLE_PREFIX))


def _config() -> Config:
    from alembic.config import Config

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
    from alembic import command
    from alembic.util.exc import CommandError

    config = _config()
    with engine.begin() as connection:
        exclusive(connection, "migrate")
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        except CommandError as error:
            if "Can't locate revision" not in str(error):
                raise
            current = current_revision(connection)
            raise _unknown_revision(engine, current) from None


def _unknown_revision(engine: Engine, current: str | None) -> UserError:
    return UserError(
        f"database {safe_url(str(engine.url))} is at schema revision {current}, which this "
        "mentorpulse does not know: a newer version migrated it; run that version (or a "
        "newer one), or point `database` elsewhere",
        code=2,
    )


def revision_state(engine: Engine) -> tuple[str | None, str]:
    """(current revision of the database, newest revision we ship)."""
    with engine.connect() as connection:
        current = current_revision(connection)
    return current, HEAD_REVISION


def current_revision(connection: Connection) -> str | None:
    """The schema revision Alembic recorded in the database; None for a database
    without a schema yet. Read without Alembic: one row of its version table."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    version = select(column("version_num", String)).select_from(table(VERSION_TABLE))
    return connection.execute(version).scalar()


def shipped_revisions() -> set[str]:
    """Every revision id of migrations/versions (loads Alembic and the scripts)."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


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
            if current is not None and current not in shipped_revisions():
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
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)

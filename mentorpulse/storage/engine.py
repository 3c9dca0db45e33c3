"""Engine and session setup: SQLite (WAL) embedded by default, PostgreSQL in production.

A database a user points us at that cannot be opened (a folder that is not there, a
server that does not answer, a wrong password) is their mistake to fix, not our crash:
every engine made here turns a failed connection into one :class:`DatabaseUnavailable`
line naming the URL (password masked) and the next step.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.schema import sqlite_path
from mentorpulse.errors import DatabaseUnavailable

# Seconds to wait for a PostgreSQL server to answer: an unreachable host otherwise holds
# every command for the operating system's TCP timeout (minutes).
CONNECT_TIMEOUT = 10


def resolve_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to ``base_dir`` (the config's data folder,
    ``MentorpulseConfig.state_dir``), never the cwd (``~`` is the home folder).

    A bare ``postgresql://`` URL gets the psycopg 3 driver, the one we ship.
    """
    parsed = make_url(url)
    database = sqlite_path(url, base_dir)
    if database is not None:
        parsed = parsed.set(database=str(database.resolve()))
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


SQLITE_BUSY_SECONDS = 30  # how long a connection waits for another process's lock


def make_engine(url: str, base_dir: Path = Path(".")) -> Engine:
    url = resolve_url(url, base_dir)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _make_data_dir(parsed.database, base_dir)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            args["connect_timeout"] = CONNECT_TIMEOUT
        # No server-side prepared statements: IN lists are padded to a few lengths
        # (storage.batch.in_lists), so the same text repeats, and psycopg prepares a text
        # run five times; PostgreSQL then plans `id IN ($1 … $4096)` once, generically,
        # and chose scans that made a medium ingest's store 8x slower (28 → 242 s).
        args["prepare_threshold"] = None
        engine = create_engine(url, pool_pre_ping=True, connect_args=args)
        event.listen(engine, "connect", _postgres_utc)
    event.listen(engine, "handle_error", _connect_failed)
    return engine


def _make_data_dir(database: str | None, data_dir: Path) -> None:
    """The data folder holding the database is made on first use (private to its user);
    any other folder the admin names must exist (the config loader says so at its line)."""
    if database is None or database == ":memory:":
        return
    folder = Path(database).parent
    if not folder.exists() and folder == data_dir.resolve():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _postgres_utc(dbapi_connection: Any, _record: object) -> None:
    """Each connection speaks UTC, as the store does: psycopg then hands back times in
    ``datetime.UTC`` itself. Under the server's own zone (``Etc/UTC`` or a local one) every
    comparison with an aware time of ours asks both zones for their offset: evaluation
    compares 300,000 sessions' times at 10,000 pairings (2.6 -> 1.95 s CPU).

    Set with autocommit, so no rollback undoes it; a pooler that drops it only costs the
    conversion :func:`~mentorpulse.storage.timelines.sessions_of` then makes.
    """
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("SET TIME ZONE 'UTC'")
    finally:
        dbapi_connection.autocommit = autocommit


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, waiting for a lock like any other statement.

    SQLite answers "database is locked" at once, without its busy timeout, when two
    processes open a new database together and both switch its journal mode (two
    daemons started at once): the loser retries until the winner is done.
    """
    give_up = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > give_up:
                raise
            time.sleep(0.05)


def session_factory(engine: Engine) -> sessionmaker[Db]:
    return sessionmaker(engine, expire_on_commit=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def check_connection(url: str, base_dir: Path = Path(".")) -> str:
    """Open the database once and say how it went (for ``config check``); raise
    :class:`DatabaseUnavailable` if it cannot be opened. An SQLite file that does not
    exist yet is not created here: its folder is checked instead."""
    resolved = resolve_url(url, base_dir)
    shown = safe_url(resolved)
    parsed = make_url(resolved)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        database = Path(parsed.database)
        if not database.exists():
            folder = next((p for p in database.parents if p.exists()), None)
            if folder is not None and folder.is_dir() and _writable(folder):
                return f"ok ({shown}, created on first use)"
            raise DatabaseUnavailable(
                f"database {shown}: cannot create it: {folder} is not a writable folder; "
                "fix `database` in the config or the folder's permissions"
            )
    engine = make_engine(url, base_dir)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return f"ok ({shown})"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _connect_failed(context: ExceptionContext) -> None:
    """``handle_error`` hook: a failure to *connect* becomes one user-facing line.

    Errors on an open connection (a constraint, a lock) and the pool's pre-ping of a stale
    connection (which reconnects by itself) are left to SQLAlchemy and the caller.
    """
    if context.connection is not None or context.is_pre_ping or context.engine is None:
        return
    raise connect_error(context.original_exception, str(context.engine.url)) from None


def connect_error(error: BaseException, url: str) -> DatabaseUnavailable:
    """The driver's reason in one line, the URL without its password, and what to do."""
    shown = safe_url(url)
    parsed = make_url(url)
    # The first line: psycopg's second ("Is the server running …?") is our next step.
    lines = str(error).strip().splitlines()
    reason = " ".join(lines[0].split()) if lines else type(error).__name__
    reason = reason.removeprefix("connection failed: ")
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    lowered = reason.lower()
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or ".").parent
        if not folder.is_dir():
            step = f"the folder {folder} does not exist: create it or fix `database` in the config"
        elif "not a database" in lowered:
            step = "the file is not a mentorpulse database: point `database` at another file"
        elif "locked" in lowered:
            step = "another process holds it locked: try again when it is done"
        else:
            step = f"check that {folder} and the file are writable by this user"
    elif "password" in lowered or "authentication" in lowered or "role" in lowered:
        step = "check the user name and password in `database` (e.g. ${MENTORPULSE_DATABASE_URL})"
    elif "does not exist" in lowered:
        step = f"create the database (createdb {parsed.database}) or fix its name in `database`"
    else:
        step = "check that the server is running and reachable from here, or fix `database`"
    return DatabaseUnavailable(f"database {shown}: cannot connect: {reason}; {step}")

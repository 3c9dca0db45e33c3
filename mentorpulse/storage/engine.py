"""Engine and session setup: SQLite (WAL) embedded by default, PostgreSQL in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def resolve_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to the config file's folder, not the cwd.

    A bare ``postgresql://`` URL gets the psycopg 3 driver, the one we ship.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).is_absolute():
            parsed = parsed.set(database=str((base_dir / database).resolve()))
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, base_dir: Path = Path(".")) -> Engine:
    url = resolve_url(url, base_dir)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def begin_write(db: Session) -> None:
    """Take SQLite's write lock before reading rows this transaction is about to claim.

    pysqlite opens a transaction only at the first INSERT/UPDATE, so a claim's SELECT runs
    outside one: two processes read the same rows as due and both send them. BEGIN
    IMMEDIATE makes the second wait (up to the busy timeout) and then read what the
    first wrote. Only claims call this; every other reader stays lock-free. PostgreSQL
    needs nothing here (claims lock their rows with ``FOR UPDATE SKIP LOCKED``).
    """
    connection = db.connection()
    if connection.dialect.name != "sqlite":
        return
    if not connection.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)

"""One writer at a time for work that two processes may start at the same moment.

Two ``mentorpulse`` processes on a fresh database (a daemon and a cron job, two daemons)
both find the schema missing and the roster unwritten; without this the slower one dies
on a duplicate table or primary key. ``exclusive()`` is the first statement of such a
transaction: on PostgreSQL a transaction-scoped advisory lock (released by the commit,
readers never wait), on SQLite the database's write lock taken at once (``BEGIN
IMMEDIATE``, waiting up to the busy timeout) so what the transaction reads next is what
it writes over.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session as Db


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    digest = hashlib.sha256(f"mentorpulse:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def begin_write(db: Db | Connection) -> None:
    """Take SQLite's write lock before reading rows this transaction is about to write.

    pysqlite opens a transaction only at the first INSERT/UPDATE, so a SELECT before it
    runs outside one: two processes read the same rows as due (as unwritten) and both act
    on them. BEGIN IMMEDIATE makes the second wait (up to the busy timeout) and then read
    what the first wrote. Only such read-then-write transactions call this; every other
    reader stays lock-free. PostgreSQL needs nothing here (claims lock their rows with
    ``FOR UPDATE SKIP LOCKED``; see :func:`exclusive` for the rest). If a transaction is
    already open, its first write takes the lock instead.
    """
    connection = db.connection() if isinstance(db, Db) else db
    if connection.dialect.name != "sqlite":
        return
    raw = connection.connection.dbapi_connection
    if raw is not None and not getattr(raw, "in_transaction", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def exclusive(db: Db | Connection, name: str, *, sqlite: bool = True) -> None:
    """Hold ``name`` until this transaction ends; call it before the transaction's first
    statement. Other callers with the same name wait for the commit, then see its writes.

    ``sqlite=False`` skips SQLite's write lock, which would make a transaction that
    usually only reads wait behind every writer; such a caller handles the rare conflict.
    """
    connection = db.connection() if isinstance(db, Db) else db
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
    elif sqlite:
        begin_write(connection)


@contextmanager
def one_at_a_time(engine: Engine, name: str) -> Iterator[None]:
    """Hold ``name`` for the length of the block, across transactions; another process
    asking for it waits until it is released (or its holder dies, which releases it).

    For work longer than a transaction, such as syncing one source (a daemon and a
    ``sync --once`` pulling the same calendar at once would both insert its new events).
    PostgreSQL: a session advisory lock on a connection of its own (in autocommit, so no
    transaction stays open meanwhile). SQLite: an exclusive ``flock`` on a lock file
    beside the database file (one host by definition); in-memory databases need none.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            key = {"key": lock_key(name)}
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    path = f"{database}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock

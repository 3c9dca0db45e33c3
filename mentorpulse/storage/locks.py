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

import hashlib

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (the same in every process)."""
    digest = hashlib.sha256(f"mentorpulse:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def exclusive(db: Session | Connection, name: str, *, sqlite: bool = True) -> None:
    """Hold ``name`` until this transaction ends; call it before the transaction's first
    statement. Other callers with the same name wait for the commit, then see its writes.

    ``sqlite=False`` skips SQLite's write lock, which would make a transaction that
    usually only reads wait behind every writer; such a caller handles the rare conflict.
    """
    connection = db.connection() if isinstance(db, Session) else db
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
    elif connection.dialect.name == "sqlite" and sqlite:
        raw = connection.connection.dbapi_connection
        # pysqlite opens its transaction lazily at the first write; if the engine has
        # already begun one, it is upgraded by the first write instead.
        if raw is not None and not getattr(raw, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

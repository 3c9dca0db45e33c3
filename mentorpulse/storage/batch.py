"""IN lists cut to a size every driver accepts: the one helper each repository shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Integer, any_, bindparam
from sqlalchemy.orm import Session as Db

CHUNK = 5000  # bound parameters per IN list: SQLite allows 32766, PostgreSQL 65535


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: IN lists that stay under every driver's limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def among(db: Db, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """``column IN ids`` for a chunk of integer ids: on PostgreSQL one array parameter
    (``= ANY``), as the driver spends ~2 ms of CPU binding an IN list of 250 values."""
    if db.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Integer)))  # type: ignore[no-any-return]
    return column.in_(ids)  # type: ignore[no-any-return]

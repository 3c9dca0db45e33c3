"""IN lists cut to a size every driver accepts: the one helper each repository shares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

CHUNK = 5000  # bound parameters per IN list: SQLite allows 32766, PostgreSQL 65535


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: IN lists that stay under every driver's limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]

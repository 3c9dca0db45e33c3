"""Sync state of each source: its row (cursor, health, backoff) and a resync's staged ids.

Each function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, delete, func, select, update
from sqlalchemy.orm import Session as Db

from mentorpulse.model import ItemError
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.models import Event, ResyncSeen, Source

MAX_ITEM_ERRORS = 200  # per source; the newest are kept


def ensure_source(db: Db, source_id: str, kind: str) -> Source:
    """The source's row, created healthy on its first sync."""
    source = db.get(Source, source_id)
    if source is None:
        source = Source(id=source_id, kind=kind, healthy=True, events_dropped=0, item_errors=[])
        db.add(source)
        db.flush()
    return source


def get_source(db: Db, source_id: str) -> Source:
    """A source's row, which must exist (its sync began by ensuring it)."""
    return db.get_one(Source, source_id)


def sources(db: Db) -> dict[str, Source]:
    """Every stored source by id."""
    return {s.id: s for s in db.scalars(select(Source))}


def clear_needs_reauth(db: Db, source_id: str) -> bool:
    """The operator acted on refused credentials (signed in again, changed the config):
    the source is tried again at its next poll. False if it was not waiting for that."""
    source = db.get(Source, source_id)
    if source is None or source.needs_reauth_at is None:
        return False
    source.needs_reauth_at = None
    source.next_attempt_at = None
    return True


def _newest_item_errors(
    kept: Iterable[dict[str, str]], errors: Iterable[ItemError]
) -> list[dict[str, str]]:
    """The newest item errors of a source, for ``status``."""
    merged = list(kept) + [{"item": e.item, "message": e.message} for e in errors]
    return merged[-MAX_ITEM_ERRORS:]


@dataclass
class SyncState:
    """What a sync holds of its source's row between pages: storing a page then writes
    the row with one UPDATE instead of loading it again (a first sync of thousands of
    CalDAV objects spent a sixth of its time re-reading it)."""

    id: str
    held_deletions: int | None
    resync_started_at: datetime | None
    item_errors: list[dict[str, str]]


def sync_state(db: Db, source_id: str) -> SyncState:
    """The parts of a source's row (which must exist) that a sync's pages need."""
    row = db.execute(
        select(Source.held_deletions, Source.resync_started_at, Source.item_errors).where(
            Source.id == source_id
        )
    ).one()
    return SyncState(source_id, row.held_deletions, row.resync_started_at, row.item_errors or [])


def note_page(
    db: Db,
    state: SyncState,
    *,
    cursor: Mapping[str, object] | None,
    dropped: int,
    errors: Iterable[ItemError],
) -> None:
    """A stored page's cursor, dropped count and item errors: one UPDATE of the row.

    ``state`` is updated too; a page rolled back ends the sync that held it."""
    values: dict[str, Any] = {}
    if cursor is not None:
        values["cursor"] = _as_read_back(cursor)
    if dropped:
        values["events_dropped"] = func.coalesce(_SOURCES.c.events_dropped, 0) + dropped
    errors = list(errors)
    if errors:
        state.item_errors = _newest_item_errors(state.item_errors, errors)
        values["item_errors"] = state.item_errors
    if values:
        db.execute(update(_SOURCES).where(_SOURCES.c.id == state.id).values(values))


_SOURCES = cast(Table, Source.__table__)
_JSON_SCALARS = (str, int, float, bool, type(None))


def _as_read_back(cursor: Mapping[str, object]) -> object:
    """The cursor as the database gives it back (other values as their text). One of
    plain JSON values goes as it is: a copy of an ICS folder's cursor, which names every
    file, was 8 MB at each checkpoint of a 16,000-file folder."""
    if _plain_json(cursor):
        return cursor
    return json.loads(json.dumps(cursor, default=str))


def _plain_json(value: object) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return False


def event_count(db: Db, source_id: str) -> int:
    """How many events the source has stored."""
    return db.scalar(select(func.count()).where(Event.source_id == source_id)) or 0


def event_counts(db: Db) -> dict[str, int]:
    """Stored events per source id."""
    return dict(db.execute(select(Event.source_id, func.count()).group_by(Event.source_id)).all())


def clear_staged(db: Db, source_id: str) -> None:
    """Forget the ids a resync of the source staged as seen."""
    db.execute(delete(ResyncSeen).where(ResyncSeen.source_id == source_id))


def stage_seen(db: Db, source_id: str, provider_ids: Iterable[str]) -> None:
    """Remember, for a resync in progress, that these events are still at the provider."""
    rows = [{"source_id": source_id, "provider_id": p} for p in sorted(set(provider_ids))]
    if not rows:
        return
    # The dialect's module is imported on first use: SQLite never loads PostgreSQL's.
    statement: Insert
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(ResyncSeen).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(ResyncSeen).on_conflict_do_nothing()
    for chunk in chunks(rows):
        db.execute(statement, list(chunk))


def unseen_events(db: Db, source_id: str) -> list[str]:
    """Provider ids of the source's stored events that the resync did not stage as seen."""
    staged = select(ResyncSeen.provider_id).where(ResyncSeen.source_id == source_id)
    return list(
        db.scalars(
            select(Event.provider_id).where(
                Event.source_id == source_id, Event.provider_id.not_in(staged)
            )
        )
    )

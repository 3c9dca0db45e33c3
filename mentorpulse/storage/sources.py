"""Sync state of each source: its row (health, backoff, the aggregate of its shards), its
shards' rows, its calendars' cursor entries, and a resync's staged ids.

Each function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Insert,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session as Db

from mentorpulse.model import ItemError
from mentorpulse.storage.batch import chunks, in_lists
from mentorpulse.storage.models import Event, ResyncSeen, Source, SyncCursor, SyncShard

MAX_ITEM_ERRORS = 200  # per source; the newest are kept


def ensure_source(db: Db, source_id: str, kind: str) -> Source:
    """The source's row, created healthy on its first sync (by whichever of its shards
    comes first: the others find it)."""
    source = db.get(Source, source_id)
    if source is None:
        row = {"id": source_id, "kind": kind, "healthy": True, "events_dropped": 0}
        db.execute(_insert_ignoring(db, Source), [{**row, "item_errors": [], "failures": 0}])
        source = db.get_one(Source, source_id)
    return source


def _insert_ignoring(db: Db, model: type[Source | ResyncSeen]) -> Insert:
    """An INSERT that skips rows whose key exists (someone else inserted them)."""
    # The dialect's module is imported on first use: SQLite never loads PostgreSQL's.
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model).on_conflict_do_nothing()


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


def _as_read_back(cursor: object) -> object:
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


def lock_source(db: Db, source_id: str) -> None:
    """Hold the source's row until the transaction ends (PostgreSQL; SQLite serialises
    every write anyway): the shards of one source store their pages one at a time, so
    their shared writes (pairings flagged, the row's counters, the health aggregate)
    neither deadlock nor lose an update, while their reading goes on side by side."""
    db.execute(select(Source.id).where(Source.id == source_id).with_for_update())


# -- shards -------------------------------------------------------------------------------


def ensure_shard(db: Db, source_id: str, shard: str) -> SyncShard:
    """The shard's row, created healthy on its first run."""
    row = db.get(SyncShard, (source_id, shard))
    if row is None:
        row = SyncShard(source_id=source_id, shard=shard, healthy=True, failures=0)
        db.add(row)
        db.flush()
    return row


def shard_cursor(db: Db, source_id: str, shard: str) -> dict[str, Any] | None:
    """The part of the connector's cursor kept per shard (not per calendar); a shard that
    never ran (``shard_size`` changed) takes another shard's: it is the same for all."""
    own: dict[str, Any] | None = db.scalar(
        select(SyncShard.cursor).where(SyncShard.source_id == source_id, SyncShard.shard == shard)
    )
    if own is not None:
        return own
    other: dict[str, Any] | None = db.scalar(
        select(SyncShard.cursor)
        .where(SyncShard.source_id == source_id, SyncShard.cursor.is_not(None))
        .order_by(SyncShard.last_success_at.desc())
        .limit(1)
    )
    return other


def write_shard_cursor(
    db: Db, source_id: str, shard: str, cursor: Mapping[str, object] | None
) -> None:
    """The shard's part of the connector's cursor, stored with the page that moved it."""
    db.execute(
        update(SyncShard)
        .where(SyncShard.source_id == source_id, SyncShard.shard == shard)
        .values(cursor=None if cursor is None else _as_read_back(cursor))
    )


def shards(db: Db, source_id: str) -> list[SyncShard]:
    """The source's shard rows (those of an earlier ``shard_size`` included)."""
    return list(
        db.scalars(
            select(SyncShard).where(SyncShard.source_id == source_id).order_by(SyncShard.shard)
        )
    )


def aggregate(
    db: Db, source_id: str, current: Sequence[str], *, calendars: Collection[str] | None = None
) -> None:
    """Write onto the source's row what its shards and calendars say, for everyone who
    reads the row (``status``, staleness, rules): unhealthy while any shard fails, as
    fresh as its stalest shard, resyncing while any calendar is, the deletions held in
    all its calendars. Rows of shards no longer in ``current`` (the shard keys of the
    plan now) are removed; only the ``calendars`` configured now count, when given. The
    caller holds the row (:func:`lock_source`)."""
    source = get_source(db, source_id)
    db.execute(
        delete(SyncShard).where(SyncShard.source_id == source_id, SyncShard.shard.not_in(current))
    )
    rows = shards(db, source_id)
    failing = [r for r in rows if not r.healthy]
    source.healthy = not failing
    if len(current) == 1 or not failing:
        source.last_error = failing[0].last_error if failing else None
    else:
        source.last_error = f"{len(failing)} of {len(current)} shards failing; " + "; ".join(
            f"shard {r.shard}: {r.last_error}" for r in failing
        )
    source.failures = max((r.failures or 0 for r in rows), default=0)
    waits = [r.next_attempt_at for r in failing if r.next_attempt_at is not None]
    source.next_attempt_at = min(waits) if waits else None
    attempts = [r.last_attempt_at for r in rows if r.last_attempt_at is not None]
    source.last_attempt_at = max(attempts) if attempts else source.last_attempt_at
    successes = [r.last_success_at for r in rows]
    if rows and all(s is not None for s in successes):
        source.last_success_at = min(s for s in successes if s is not None)
    elif rows:
        source.last_success_at = None
    pending = [
        (resync, held)
        for calendar, resync, held in db.execute(
            select(
                SyncCursor.calendar, SyncCursor.resync_started_at, SyncCursor.held_deletions
            ).where(
                SyncCursor.source_id == source_id,
                or_(
                    SyncCursor.resync_started_at.is_not(None),
                    SyncCursor.held_deletions.is_not(None),
                ),
            )
        )
        if calendars is None or calendar in calendars
    ]
    started = [resync for resync, _held in pending if resync is not None]
    holding = [held for _resync, held in pending if held is not None]
    source.resync_started_at = min(started, default=None)
    source.held_deletions = sum(holding) if holding else None


# -- calendars ----------------------------------------------------------------------------


@dataclass
class CalendarState:
    """One calendar's row of ``sync_cursors``, as a sync holds it."""

    entry: dict[str, Any] | None
    resync_started_at: datetime | None
    held_deletions: int | None


def calendar_states(db: Db, source_id: str, calendars: Sequence[str]) -> dict[str, CalendarState]:
    """The state of each calendar named (its row is created if missing)."""
    found: dict[str, CalendarState] = {}
    for chunk in in_lists(list(calendars)):
        rows = db.execute(
            select(
                SyncCursor.calendar,
                SyncCursor.entry,
                SyncCursor.resync_started_at,
                SyncCursor.held_deletions,
            ).where(SyncCursor.source_id == source_id, SyncCursor.calendar.in_(chunk))
        )
        for calendar, entry, resyncing, held in rows:
            found[calendar] = CalendarState(entry, resyncing, held)
    missing = [c for c in calendars if c not in found]
    for batch in chunks([{"source_id": source_id, "calendar": c} for c in missing]):
        db.execute(insert(SyncCursor), list(batch))
    for calendar in missing:
        found[calendar] = CalendarState(None, None, None)
    return found


def write_entries(db: Db, source_id: str, entries: Mapping[str, object | None]) -> None:
    """Calendars' new cursor entries (their rows exist: :func:`calendar_states`)."""
    if not entries:
        return
    db.execute(
        _WRITE_ENTRY,
        [
            {"s": source_id, "c": calendar, "entry": None if e is None else _as_read_back(e)}
            for calendar, e in entries.items()
        ],
    )


_CURSORS = cast(Table, SyncCursor.__table__)
_WRITE_ENTRY = (
    update(_CURSORS)
    .where(_CURSORS.c.source_id == bindparam("s"), _CURSORS.c.calendar == bindparam("c"))
    .values(entry=bindparam("entry"))
)


def begin_resync(db: Db, source_id: str, calendars: Sequence[str], now: datetime) -> None:
    """Read these calendars again from scratch, staged: entries dropped, staged ids too."""
    for chunk in in_lists(list(calendars)):
        db.execute(
            update(SyncCursor)
            .where(SyncCursor.source_id == source_id, SyncCursor.calendar.in_(chunk))
            .values(entry=None, resync_started_at=now)
        )
    clear_staged(db, source_id, calendars)


def hold_deletions(db: Db, source_id: str, calendar: str, proposed: int, now: datetime) -> None:
    """A mass deletion of this calendar held back; a full listing of it will decide."""
    db.execute(
        update(SyncCursor)
        .where(SyncCursor.source_id == source_id, SyncCursor.calendar == calendar)
        .values(held_deletions=proposed)
    )
    begin_resync(db, source_id, [calendar], now)


def resync_done(db: Db, source_id: str, calendar: str) -> None:
    """The calendar's resync completed and was reconciled; held deletions are settled."""
    db.execute(
        update(SyncCursor)
        .where(SyncCursor.source_id == source_id, SyncCursor.calendar == calendar)
        .values(resync_started_at=None, held_deletions=None)
    )
    clear_staged(db, source_id, [calendar])


def stored_cursor(db: Db, source_id: str, entries_key: str | None) -> dict[str, Any] | None:
    """The source's whole cursor as the connector would read it (its first shard's part
    and every calendar's entry), for tools and tests."""
    rest = shard_cursor(db, source_id, f"{source_id}#0")
    if entries_key is None:
        return rest
    rows = db.execute(
        select(SyncCursor.calendar, SyncCursor.entry).where(SyncCursor.source_id == source_id)
    )
    entries: dict[str, Any] = {calendar: entry for calendar, entry in rows if entry is not None}
    if rest is None and not entries:
        return None
    return {**(rest or {}), entries_key: entries}


def event_counts_by_calendar(db: Db, source_id: str, calendars: Sequence[str]) -> dict[str, int]:
    """Stored events of each calendar (``""``: the whole source)."""
    if list(calendars) == [""]:
        return {"": event_count(db, source_id)}
    counts = dict.fromkeys(calendars, 0)
    for chunk in in_lists(list(calendars)):
        rows = db.execute(
            select(Event.calendar_owner, func.count())
            .where(Event.source_id == source_id, Event.calendar_owner.in_(chunk))
            .group_by(Event.calendar_owner)
        )
        for calendar, count in rows:
            if calendar in counts:
                counts[calendar] = count
    return counts


def clear_staged(db: Db, source_id: str, calendars: Sequence[str] | None = None) -> None:
    """Forget the ids a resync of the source (of these calendars only) staged as seen."""
    if calendars is None:
        db.execute(delete(ResyncSeen).where(ResyncSeen.source_id == source_id))
        return
    for chunk in in_lists(list(calendars)):
        db.execute(
            delete(ResyncSeen).where(
                ResyncSeen.source_id == source_id, ResyncSeen.calendar.in_(chunk)
            )
        )


def stage_seen(db: Db, source_id: str, provider_ids: Iterable[str], calendar: str = "") -> None:
    """Remember, for a resync in progress, that these events are still at the provider."""
    rows = [
        {"source_id": source_id, "provider_id": p, "calendar": calendar}
        for p in sorted(set(provider_ids))
    ]
    if not rows:
        return
    statement = _insert_ignoring(db, ResyncSeen)
    for chunk in chunks(rows):
        db.execute(statement, list(chunk))


def resyncing(db: Db, source_id: str) -> list[str]:
    """The source's calendars being read from scratch."""
    return list(
        db.scalars(
            select(SyncCursor.calendar).where(
                SyncCursor.source_id == source_id, SyncCursor.resync_started_at.is_not(None)
            )
        )
    )


def _under(prefix: str) -> ColumnElement[bool]:
    """Events whose scope begins with ``prefix`` (no LIKE: a path may hold ``_`` or ``%``)."""
    return func.substr(Event.scope, 1, len(prefix)) == prefix


def event_count_under(db: Db, source_id: str, prefix: str) -> int:
    """How many of the source's events have a scope that begins with ``prefix``."""
    query = select(func.count()).where(Event.source_id == source_id, _under(prefix))
    return db.scalar(query) or 0


def unseen_events(
    db: Db, source_id: str, calendar: str = "", *, by_scope: bool = False
) -> list[str]:
    """Provider ids of the calendar's stored events (``""``: the source's; ``by_scope``:
    those whose scope begins with ``calendar``, else those it owns) that its resync did
    not stage as seen."""
    staged = select(ResyncSeen.provider_id).where(
        ResyncSeen.source_id == source_id, ResyncSeen.calendar == calendar
    )
    mine = Event.source_id == source_id
    if by_scope:
        mine = mine & _under(calendar)
    elif calendar:
        mine = mine & (Event.calendar_owner == calendar)
    return list(db.scalars(select(Event.provider_id).where(mine, Event.provider_id.not_in(staged))))

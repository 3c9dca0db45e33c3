"""Events: pages of occurrence records stored with their cursor, read back as records.

Each function works inside the caller's transaction; the caller commits. That is what
lets a sync page and its cursor land together, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session as Db

from mentorpulse.model import Attendee, EventRecord, EventStatus, Response, SyncPage
from mentorpulse.storage.batch import in_lists
from mentorpulse.storage.models import ConferenceAttendance, Event, EventPairing, Pairing
from mentorpulse.storage.sources import SyncState, note_page


@dataclass(frozen=True, slots=True)
class PageStats:
    stored: int  # events inserted or changed
    unchanged: int
    dropped: int  # not about any rostered pair
    deleted: int
    # Deleted events by calendar owner (the mass-deletion guard is per calendar).
    deleted_by_owner: Mapping[str | None, int] = field(default_factory=dict)


def _event_values(record: EventRecord, scope: str | None, store_titles: bool) -> dict[str, Any]:
    return {
        "scope": scope,
        "ical_uid": record.ical_uid,
        "series_id": record.series_id,
        "original_start": record.original_start,
        "start": record.start,
        "end": record.end,
        "all_day": record.all_day,
        "zone": record.zone,
        "status": record.status.value,
        "organizer": record.organizer,
        "attendees": [
            {"email": a.email, "response": a.response.value, "optional": a.optional}
            for a in record.attendees
        ],
        "calendar_owner": record.calendar_owner,
        "categories": list(record.categories),
        "conference_id": record.conference_id,
        "title": record.title if store_titles else None,
        "updated": record.updated,
        "sequence": record.sequence,
        "etag": record.etag,
    }


@dataclass
class _Plan:
    """What one page changes, collected before any write so each kind is one batch."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    new_links: dict[str, set[int]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    link_rows: list[dict[str, int]] = field(default_factory=list)
    unlinks: list[tuple[int, set[int]]] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)
    touched: set[int] = field(default_factory=set)
    stored: int = 0
    unchanged: int = 0
    dropped: int = 0

    def add(self, event: dict[str, Any], ids: set[int]) -> None:
        self.inserts.append(event)
        self.new_links[event["provider_id"]] = ids
        self.touched |= ids
        self.stored += 1

    def change(
        self, event_id: int, values: dict[str, Any] | None, ids: set[int], old: set[int]
    ) -> None:
        if values is not None:
            self.updates.append({"id": event_id, **values})
        self.link_rows += [{"event_id": event_id, "pairing_id": p} for p in sorted(ids - old)]
        if old - ids:
            self.unlinks.append((event_id, old - ids))
        self.touched |= ids | old
        self.stored += 1


def store_page(
    db: Db,
    source: SyncState,
    page: SyncPage,
    *,
    match: Callable[[EventRecord], list[str]],
    pairing_ids: Mapping[str, int],
    store_titles: bool,
) -> PageStats:
    """Apply one page: upsert matched records, drop the rest, delete what is gone.

    Pairings whose events changed are flagged so their sessions get rebuilt. The
    page's cursor is stored with it (one UPDATE of the source's row, from what the
    caller holds in ``source``); the caller commits both at once.

    Statements are batched per page (one ``executemany`` for the new rows, one for the
    changed ones) and stored rows are compared as plain values, not ORM objects: a full
    ingest writes hundreds of thousands of rows, and a per-row flush made storing an
    order of magnitude slower than inserting the same rows.
    """
    # One row per provider id; a page that repeats one keeps its last version.
    scopes = page.record_scopes()
    scoped = {r.provider_id: (r, s) for r, s in zip(page.records, scopes, strict=True)}
    existing = _stored_events(db, source.id, list(scoped))
    links = _links(db, [event_id for event_id, _values in existing.values()])
    plan = _Plan()
    for record, scope in scoped.values():
        ids = {pairing_ids[k] for k in match(record) if k in pairing_ids}
        if not ids:
            plan.dropped += 1
            continue  # a deleted row below, if it used to match
        plan.kept.add(record.provider_id)
        values = _event_values(record, scope, store_titles)
        found = existing.get(record.provider_id)
        if found is None:
            plan.add({"source_id": source.id, "provider_id": record.provider_id, **values}, ids)
            continue
        event_id, stored_values = found
        old = links.get(event_id, set())
        if stored_values == values and old == ids:
            plan.unchanged += 1
        else:
            plan.change(event_id, None if stored_values == values else values, ids, old)
    _write_events(db, plan)
    gone_ids = _gone_ids(db, source.id, page, existing, plan.kept)
    by_owner = _owners(db, gone_ids)
    _flag_events_changed(db, plan.touched | _remove(db, gone_ids))
    note_page(db, source, cursor=page.cursor, dropped=plan.dropped, errors=page.errors)
    return PageStats(plan.stored, plan.unchanged, plan.dropped, len(gone_ids), by_owner)


def _owners(db: Db, event_ids: Sequence[int]) -> dict[str | None, int]:
    """How many of these events each calendar owner has."""
    counts: dict[str | None, int] = {}
    for chunk in in_lists(event_ids):
        rows = db.execute(
            select(Event.calendar_owner, func.count())
            .where(Event.id.in_(chunk))
            .group_by(Event.calendar_owner)
        )
        for owner, count in rows:
            counts[owner] = counts.get(owner, 0) + count
    return counts


def _remove(db: Db, event_ids: Sequence[int]) -> set[int]:
    """Delete events (with their links and logs); returns the pairings they concerned."""
    touched: set[int] = set()
    if not event_ids:
        return touched
    for ids in _links(db, event_ids).values():
        touched |= ids
    for chunk in in_lists(event_ids):
        db.execute(delete(ConferenceAttendance).where(ConferenceAttendance.event_id.in_(chunk)))
        db.execute(delete(EventPairing).where(EventPairing.event_id.in_(chunk)))
        db.execute(delete(Event).where(Event.id.in_(chunk)))
    return touched


def _flag_events_changed(db: Db, pairing_ids: set[int]) -> None:
    """Mark pairings whose events changed, so the sessions stage rebuilds them."""
    for chunk in in_lists(sorted(pairing_ids)):
        db.execute(_FLAG_PAIRINGS, {"pairing_ids": chunk})


def flag_event_changed(db: Db, event_id: int) -> None:
    """An event's evidence changed: its pairings' sessions are rebuilt."""
    _flag_events_changed(db, _links(db, [event_id]).get(event_id, set()))


def delete_events(db: Db, source_id: str, provider_ids: Sequence[str]) -> int:
    """Remove a source's events by provider id (a resync found them gone); returns how many."""
    ids = _event_ids(db, source_id, provider_ids)
    _flag_events_changed(db, _remove(db, ids))
    return len(ids)


def _write_events(db: Db, plan: _Plan) -> None:
    """Removed links, new rows, changed rows and new pairing links: one executemany each."""
    for event_id, gone in plan.unlinks:
        db.execute(
            delete(EventPairing).where(
                EventPairing.event_id == event_id, EventPairing.pairing_id.in_(gone)
            )
        )
    link_rows = list(plan.link_rows)
    # Core inserts, not ORM bulk ones: those split a batch wherever a value is None. No
    # RETURNING: with it, PostgreSQL's driver parsed one statement of every row's values
    # per page (most of storing's CPU); a plain executemany then one SELECT of the ids.
    if plan.inserts:
        db.execute(_INSERT_EVENTS, plan.inserts)
        source_id = plan.inserts[0]["source_id"]
        for event_id, provider_id in _ids_by_provider(db, source_id, list(plan.new_links)):
            link_rows += [
                {"event_id": event_id, "pairing_id": p} for p in sorted(plan.new_links[provider_id])
            ]
    if plan.updates:
        db.execute(update(Event), plan.updates)
    if link_rows:
        db.execute(_INSERT_LINKS, link_rows)


def _gone_ids(
    db: Db,
    source_id: str,
    page: SyncPage,
    existing: Mapping[str, tuple[int, dict[str, Any]]],
    kept: set[str],
) -> list[int]:
    """Rows the page removes: the rest of its scopes, or what it deleted or stopped matching."""
    if page.replaces_scopes:
        gone: list[int] = []
        for chunk in in_lists(page.replaces_scopes):
            params = {"source_id": source_id, "scopes": chunk}
            in_scopes = db.execute(_EVENTS_OF_SCOPES, params)
            gone += [event_id for event_id, provider_id in in_scopes if provider_id not in kept]
        return gone
    deleted = set(page.deleted)
    gone = [existing[p][0] for p in sorted((set(existing) - kept) | (deleted & set(existing)))]
    return gone + _event_ids(db, source_id, sorted(deleted - set(existing)))


def _ids_by_provider(db: Db, source_id: str, provider_ids: Sequence[str]) -> list[tuple[int, str]]:
    """(row id, provider id) of a source's stored events, by provider id."""
    found: list[tuple[int, str]] = []
    for chunk in in_lists(provider_ids):
        rows = db.execute(_IDS_BY_PROVIDER, {"source_id": source_id, "provider_ids": chunk})
        found += [(event_id, provider_id) for event_id, provider_id in rows]
    return found


def _event_ids(db: Db, source_id: str, provider_ids: Sequence[str]) -> list[int]:
    """The stored ids of a source's events, by provider id."""
    return [event_id for event_id, _provider_id in _ids_by_provider(db, source_id, provider_ids)]


_COMPARED = (
    "scope",
    "ical_uid",
    "series_id",
    "original_start",
    "start",
    "end",
    "all_day",
    "zone",
    "status",
    "organizer",
    "attendees",
    "calendar_owner",
    "categories",
    "conference_id",
    "title",
    "updated",
    "sequence",
    "etag",
)


_EVENTS = cast(Table, Event.__table__)
_LINKS = cast(Table, EventPairing.__table__)
# Built once: constructing and cache-keying a statement for every page cost more CPU
# than running it. IN lists are expanding parameters: one statement serves any length.
_STORED_EVENTS = select(
    _EVENTS.c.id, _EVENTS.c.provider_id, *(_EVENTS.c[name] for name in _COMPARED)
).where(
    _EVENTS.c.source_id == bindparam("source_id"),
    _EVENTS.c.provider_id.in_(bindparam("provider_ids", expanding=True)),
)
_EVENTS_OF_SCOPES = select(_EVENTS.c.id, _EVENTS.c.provider_id).where(
    _EVENTS.c.source_id == bindparam("source_id"),
    _EVENTS.c.scope.in_(bindparam("scopes", expanding=True)),
)
_LINKS_OF = select(_LINKS.c.event_id, _LINKS.c.pairing_id).where(
    _LINKS.c.event_id.in_(bindparam("event_ids", expanding=True))
)
_INSERT_EVENTS = insert(_EVENTS)
_IDS_BY_PROVIDER = select(_EVENTS.c.id, _EVENTS.c.provider_id).where(
    _EVENTS.c.source_id == bindparam("source_id"),
    _EVENTS.c.provider_id.in_(bindparam("provider_ids", expanding=True)),
)
_INSERT_LINKS = insert(_LINKS)
_FLAG_PAIRINGS = (
    update(Pairing)
    .where(
        Pairing.id.in_(bindparam("pairing_ids", expanding=True)),
        Pairing.events_changed.is_(False),
    )
    .values(events_changed=True)
)


def _stored_events(
    db: Db, source_id: str, provider_ids: Sequence[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """provider id → (row id, the values :func:`_event_values` would write) as stored."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for chunk in in_lists(provider_ids):
        rows = db.execute(_STORED_EVENTS, {"source_id": source_id, "provider_ids": chunk})
        for row in rows:
            event_id, provider_id, *values = row
            found[provider_id] = (event_id, dict(zip(_COMPARED, values, strict=True)))
    return found


def _links(db: Db, event_ids: Sequence[int]) -> dict[int, set[int]]:
    links: dict[int, set[int]] = {}
    if not event_ids:
        return links
    for chunk in in_lists(event_ids):
        for event_id, pairing_id in db.execute(_LINKS_OF, {"event_ids": chunk}):
            links.setdefault(event_id, set()).add(pairing_id)
    return links


def record_from_row(row: Event | Row[Any]) -> EventRecord:
    """The stored occurrence (an ORM row or a plain row of ``events``), as a record."""
    return EventRecord(
        source_id=row.source_id,
        provider_id=row.provider_id,
        ical_uid=row.ical_uid,
        start=row.start,
        end=row.end,
        series_id=row.series_id,
        original_start=row.original_start,
        all_day=row.all_day,
        zone=row.zone,
        status=EventStatus(row.status),
        organizer=row.organizer,
        attendees=tuple(
            Attendee(email=a["email"], response=Response(a["response"]), optional=a["optional"])
            for a in row.attendees
        ),
        calendar_owner=row.calendar_owner,
        categories=tuple(row.categories or ()),
        conference_id=row.conference_id,
        title=row.title,
        updated=row.updated,
        sequence=row.sequence,
        etag=row.etag,
    )


def events_of_pairings(db: Db, ids: Sequence[int]) -> dict[int, list[EventRecord]]:
    """Every stored event copy of each pairing, in the contract's form.

    Read as plain rows, not ORM objects: the sessions stage reads every event of the
    organisation on its first run. Through the connection, so that each row becomes a
    record as it is fetched: the session's ``execute`` fetched a batch's every row first,
    and both copies were half of the sessions stage's peak.
    """
    found: dict[int, list[EventRecord]] = {i: [] for i in ids}
    table = _EVENTS
    connection = db.connection()
    for chunk in in_lists(ids):
        rows = connection.execute(
            select(EventPairing.pairing_id, *table.c)
            .join(table, table.c.id == EventPairing.event_id)
            .where(EventPairing.pairing_id.in_(chunk))
        )
        for row in rows:
            found[row.pairing_id].append(record_from_row(row))
    return found

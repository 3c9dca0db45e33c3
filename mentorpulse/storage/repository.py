"""Database operations the stages share: roster, pages of events, sessions, findings.

Each function works inside the caller's transaction; the caller commits. That is what
lets a sync page and its cursor land together, or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session as Db

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.model import (
    AttendanceEvidence,
    Attendee,
    EventRecord,
    EventStatus,
    ItemError,
    Response,
    SyncPage,
)
from mentorpulse.storage.models import (
    ConferenceAttendance,
    Event,
    EventPairing,
    Pairing,
    Person,
    Program,
    ResyncSeen,
    Source,
)

MAX_ITEM_ERRORS = 200  # per source; the newest are kept


def roster_fingerprint(roster: Sequence[RosterPairing]) -> str:
    """Changes whenever who is paired with whom changes (events are filtered by it)."""
    keys = sorted(p.key for p in roster)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def apply_roster(db: Db, config: MentorpulseConfig, roster: Sequence[RosterPairing]) -> None:
    """Make programs, people and pairings match the config and roster.

    Pairings that left the roster are kept (their history stays) but marked inactive.
    """
    programs = {p.id: p for p in db.scalars(select(Program))}
    for program in config.programs:
        program_row = programs.get(program.id) or db.merge(Program(id=program.id))
        program_row.name = program.name or program.id

    people = {p.email: p for p in db.scalars(select(Person))}

    def person(email: str, name: str | None, zone: str | None) -> Person:
        row = people.get(email)
        if row is None:
            row = Person(email=email)
            db.add(row)
            people[email] = row
        if name:
            row.name = name
        if zone:
            row.timezone = zone
        return row

    pairings = {p.key: p for p in db.scalars(select(Pairing))}
    seen: set[str] = set()
    for entry in roster:
        mentor = person(entry.mentor_email, entry.mentor_name, entry.mentor_timezone)
        mentee = person(entry.mentee_email, entry.mentee_name, entry.mentee_timezone)
        db.flush()
        row = pairings.get(entry.key)
        if row is None:
            row = Pairing(
                key=entry.key,
                program_id=entry.program,
                mentor_id=mentor.id,
                mentee_id=mentee.id,
                started_on=entry.started_on,
                events_changed=True,
                sessions_changed=True,
            )
            db.add(row)
        if (row.started_on, row.ended_on, row.active) != (entry.started_on, entry.ended_on, True):
            row.started_on, row.ended_on, row.active = entry.started_on, entry.ended_on, True
            row.sessions_changed = True
        seen.add(entry.key)
    for key, row in pairings.items():
        if key not in seen and row.active:
            row.active = False
            row.sessions_changed = True
    db.flush()


def pairing_ids(db: Db) -> dict[str, int]:
    return dict(db.execute(select(Pairing.key, Pairing.id).where(Pairing.active)).all())


def clear_needs_reauth(db: Db, source_id: str) -> bool:
    """The operator acted on refused credentials (signed in again, changed the config):
    the source is tried again at its next poll. False if it was not waiting for that."""
    source = db.get(Source, source_id)
    if source is None or source.needs_reauth_at is None:
        return False
    source.needs_reauth_at = None
    source.next_attempt_at = None
    return True


def ensure_source(db: Db, source_id: str, kind: str) -> Source:
    source = db.get(Source, source_id)
    if source is None:
        source = Source(id=source_id, kind=kind, healthy=True, events_dropped=0, item_errors=[])
        db.add(source)
        db.flush()
    return source


@dataclass(frozen=True, slots=True)
class PageStats:
    stored: int  # events inserted or changed
    unchanged: int
    dropped: int  # not about any rostered pair
    deleted: int


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


def store_page(
    db: Db,
    source: Source,
    page: SyncPage,
    *,
    match: Callable[[EventRecord], list[str]],
    pairing_ids: Mapping[str, int],
    store_titles: bool,
) -> PageStats:
    """Apply one page: upsert matched records, drop the rest, delete what is gone.

    Pairings whose events changed are flagged so their sessions get rebuilt. The
    page's cursor is stored with it; the caller commits both at once.

    Statements are batched per page (one ``executemany`` for the new rows, one for the
    changed ones) and stored rows are compared as plain values, not ORM objects: a full
    ingest writes hundreds of thousands of rows, and a per-row flush made storing an
    order of magnitude slower than inserting the same rows.
    """
    # One row per provider id; a page that repeats one keeps its last version.
    records = list({r.provider_id: r for r in page.records}.values())
    existing = _stored_events(db, source.id, [r.provider_id for r in records])
    links = _links(db, [event_id for event_id, _values in existing.values()])
    stored = unchanged = dropped = 0
    kept: set[str] = set()
    touched: set[int] = set()
    inserts: list[dict[str, Any]] = []
    new_links: dict[str, set[int]] = {}
    updates: list[dict[str, Any]] = []
    link_rows: list[dict[str, int]] = []
    for record in records:
        keys = match(record)
        ids = {pairing_ids[k] for k in keys if k in pairing_ids}
        if not ids:
            dropped += 1
            continue  # a deleted row below, if it used to match
        kept.add(record.provider_id)
        values = _event_values(record, page.replaces_scope, store_titles)
        found = existing.get(record.provider_id)
        if found is None:
            inserts.append({"source_id": source.id, "provider_id": record.provider_id, **values})
            new_links[record.provider_id] = ids
            touched |= ids
            stored += 1
            continue
        event_id, stored_values = found
        old = links.get(event_id, set())
        if stored_values == values and old == ids:
            unchanged += 1
            continue
        if stored_values != values:
            updates.append({"id": event_id, **values})
        link_rows += [{"event_id": event_id, "pairing_id": p} for p in sorted(ids - old)]
        if old - ids:
            db.execute(
                delete(EventPairing).where(
                    EventPairing.event_id == event_id, EventPairing.pairing_id.in_(old - ids)
                )
            )
        touched |= ids | old
        stored += 1

    _write_events(db, inserts, new_links, updates, link_rows)
    gone_ids = _gone_ids(db, source.id, page, existing, kept)
    touched |= _remove(db, gone_ids)
    _flag_events_changed(db, touched)
    if page.cursor is not None:
        source.cursor = json.loads(json.dumps(page.cursor, default=str))
    source.events_dropped = (source.events_dropped or 0) + dropped
    if page.errors:
        record_item_errors(source, page.errors)
    return PageStats(stored=stored, unchanged=unchanged, dropped=dropped, deleted=len(gone_ids))


def _remove(db: Db, event_ids: Sequence[int]) -> set[int]:
    """Delete events (with their links and logs); returns the pairings they concerned."""
    touched: set[int] = set()
    if not event_ids:
        return touched
    for ids in _links(db, event_ids).values():
        touched |= ids
    for chunk in chunks(event_ids):
        db.execute(delete(ConferenceAttendance).where(ConferenceAttendance.event_id.in_(chunk)))
        db.execute(delete(EventPairing).where(EventPairing.event_id.in_(chunk)))
        db.execute(delete(Event).where(Event.id.in_(chunk)))
    return touched


def _flag_events_changed(db: Db, pairing_ids: set[int]) -> None:
    """Mark pairings whose events changed, so the sessions stage rebuilds them."""
    for chunk in chunks(sorted(pairing_ids)):
        db.execute(_FLAG_PAIRINGS, {"pairing_ids": list(chunk)})


def delete_events(db: Db, source_id: str, provider_ids: Sequence[str]) -> int:
    """Remove a source's events by provider id (a resync found them gone); returns how many."""
    ids = _event_ids(db, source_id, provider_ids)
    _flag_events_changed(db, _remove(db, ids))
    return len(ids)


def stage_seen(db: Db, source_id: str, provider_ids: Iterable[str]) -> None:
    """Remember, for a resync in progress, that these events are still at the provider."""
    rows = [{"source_id": source_id, "provider_id": p} for p in sorted(set(provider_ids))]
    if not rows:
        return
    dialect_insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    for chunk in chunks(rows):
        db.execute(dialect_insert(ResyncSeen).on_conflict_do_nothing(), list(chunk))


def events_due_for_attendance(
    db: Db,
    source_id: str,
    *,
    ended_before: datetime,
    ended_after: datetime,
    checked_before: datetime,
    final_after: timedelta,
    limit: int,
) -> list[tuple[int, EventRecord]]:
    """Ended online meetings whose conference log has not been read (or may have grown).

    A log is re-read until ``final_after`` past the meeting's end, at most once per
    ``checked_before`` interval, since providers publish attendance reports late.
    """
    rows = db.scalars(
        select(Event)
        .where(
            Event.source_id == source_id,
            Event.conference_id.is_not(None),
            Event.status != EventStatus.CANCELLED.value,
            Event.end <= ended_before,
            Event.end >= ended_after,
            or_(
                Event.attendance_checked_at.is_(None),
                Event.attendance_checked_at <= checked_before,
            ),
        )
        .order_by(Event.end)
        .limit(limit * 2)
    )
    due = [
        (row.id, record_from_row(row))
        for row in rows
        if row.attendance_checked_at is None or row.attendance_checked_at < row.end + final_after
    ]
    return due[:limit]


def store_attendance(
    db: Db, event_id: int, evidence: Sequence[AttendanceEvidence], *, checked_at: datetime
) -> bool:
    """Replace an event's conference log; flags its pairings when what it says changed."""
    event = db.get_one(Event, event_id)
    event.attendance_checked_at = checked_at
    old = {
        (a.email, a.seconds_present, a.joined_at, a.left_at, a.system)
        for a in db.scalars(
            select(ConferenceAttendance).where(ConferenceAttendance.event_id == event_id)
        )
    }
    merged: dict[str, AttendanceEvidence] = {}
    for item in evidence:
        seen = merged.get(item.email)
        merged[item.email] = item if seen is None else _combine(seen, item)
    new = {(e.email, e.seconds_present, e.joined_at, e.left_at, e.system) for e in merged.values()}
    if new == old:
        return False
    db.execute(delete(ConferenceAttendance).where(ConferenceAttendance.event_id == event_id))
    for email, seconds, joined, left, system in sorted(new, key=lambda row: row[0]):
        db.add(
            ConferenceAttendance(
                event_id=event_id,
                email=email,
                seconds_present=seconds,
                joined_at=joined,
                left_at=left,
                system=system,
            )
        )
    _flag_events_changed(db, _links(db, [event_id]).get(event_id, set()))
    return True


def _combine(a: AttendanceEvidence, b: AttendanceEvidence) -> AttendanceEvidence:
    """One person's several joins (a dropped connection) add up."""
    joins = [t for t in (a.joined_at, b.joined_at) if t is not None]
    lefts = [t for t in (a.left_at, b.left_at) if t is not None]
    return AttendanceEvidence(
        provider_id=a.provider_id,
        email=a.email,
        seconds_present=a.seconds_present + b.seconds_present,
        joined_at=min(joins) if joins else None,
        left_at=max(lefts) if lefts else None,
        system=a.system or b.system,
    )


def conference_logs(
    db: Db, pairing_ids: Sequence[int]
) -> dict[tuple[str, str], list[AttendanceEvidence]]:
    """Conference attendance of the pairings' events, by (source id, provider id)."""
    found: dict[tuple[str, str], list[AttendanceEvidence]] = {}
    if not pairing_ids:
        return found
    rows = db.execute(
        select(Event.source_id, Event.provider_id, ConferenceAttendance)
        .join(ConferenceAttendance, ConferenceAttendance.event_id == Event.id)
        .join(EventPairing, EventPairing.event_id == Event.id)
        .where(EventPairing.pairing_id.in_(pairing_ids))
    )
    for source_id, provider_id, log in rows:
        key = (source_id, provider_id)
        found.setdefault(key, []).append(
            AttendanceEvidence(
                provider_id=provider_id,
                email=log.email,
                seconds_present=log.seconds_present,
                joined_at=log.joined_at,
                left_at=log.left_at,
                system=log.system,
            )
        )
    for logs in found.values():  # one row per (event, email), even if linked twice
        unique = {(e.email, e.system): e for e in logs}
        logs[:] = sorted(unique.values(), key=lambda e: e.email)
    return found


def _write_events(
    db: Db,
    inserts: list[dict[str, Any]],
    new_links: Mapping[str, set[int]],
    updates: list[dict[str, Any]],
    link_rows: list[dict[str, int]],
) -> None:
    """New rows, changed rows and new pairing links: one executemany each."""
    # Core inserts, not ORM bulk ones: those split a batch wherever a value is None.
    if inserts:
        returned = db.execute(_INSERT_EVENTS, inserts)
        for event_id, provider_id in returned:
            link_rows += [
                {"event_id": event_id, "pairing_id": p} for p in sorted(new_links[provider_id])
            ]
    if updates:
        db.execute(update(Event), updates)
    if link_rows:
        db.execute(_INSERT_LINKS, link_rows)


def _gone_ids(
    db: Db,
    source_id: str,
    page: SyncPage,
    existing: Mapping[str, tuple[int, dict[str, Any]]],
    kept: set[str],
) -> list[int]:
    """Rows the page removes: the rest of its scope, or what it deleted or stopped matching."""
    if page.replaces_scope is not None:
        in_scope = db.execute(
            _EVENTS_OF_SCOPE, {"source_id": source_id, "scope": page.replaces_scope}
        )
        return [event_id for event_id, provider_id in in_scope if provider_id not in kept]
    deleted = set(page.deleted)
    gone = [existing[p][0] for p in sorted((set(existing) - kept) | (deleted & set(existing)))]
    return gone + _event_ids(db, source_id, sorted(deleted - set(existing)))


def _event_ids(db: Db, source_id: str, provider_ids: Sequence[str]) -> list[int]:
    """The stored ids of a source's events, by provider id."""
    found: list[int] = []
    for chunk in chunks(provider_ids):
        rows = db.execute(_EVENT_IDS, {"source_id": source_id, "provider_ids": list(chunk)})
        found += [event_id for (event_id,) in rows]
    return found


_CHUNK = 5000  # bound parameters per IN list: SQLite allows 32766, PostgreSQL 65535
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
_EVENT_IDS = select(_EVENTS.c.id).where(
    _EVENTS.c.source_id == bindparam("source_id"),
    _EVENTS.c.provider_id.in_(bindparam("provider_ids", expanding=True)),
)
_EVENTS_OF_SCOPE = select(_EVENTS.c.id, _EVENTS.c.provider_id).where(
    _EVENTS.c.source_id == bindparam("source_id"), _EVENTS.c.scope == bindparam("scope")
)
_LINKS_OF = select(_LINKS.c.event_id, _LINKS.c.pairing_id).where(
    _LINKS.c.event_id.in_(bindparam("event_ids", expanding=True))
)
_INSERT_EVENTS = insert(_EVENTS).returning(_EVENTS.c.id, _EVENTS.c.provider_id)
_INSERT_LINKS = insert(_LINKS)
_FLAG_PAIRINGS = (
    update(Pairing)
    .where(
        Pairing.id.in_(bindparam("pairing_ids", expanding=True)),
        Pairing.events_changed.is_(False),
    )
    .values(events_changed=True)
)


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: IN lists that stay under every driver's limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _stored_events(
    db: Db, source_id: str, provider_ids: Sequence[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """provider id → (row id, the values :func:`_event_values` would write) as stored."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for chunk in chunks(provider_ids):
        rows = db.execute(_STORED_EVENTS, {"source_id": source_id, "provider_ids": list(chunk)})
        for row in rows:
            event_id, provider_id, *values = row
            found[provider_id] = (event_id, dict(zip(_COMPARED, values, strict=True)))
    return found


def record_item_errors(source: Source, errors: Iterable[ItemError]) -> None:
    merged = list(source.item_errors or []) + [
        {"item": e.item, "message": e.message} for e in errors
    ]
    source.item_errors = merged[-MAX_ITEM_ERRORS:]


def _links(db: Db, event_ids: Sequence[int]) -> dict[int, set[int]]:
    links: dict[int, set[int]] = {}
    if not event_ids:
        return links
    for chunk in chunks(event_ids):
        for event_id, pairing_id in db.execute(_LINKS_OF, {"event_ids": list(chunk)}):
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
    organisation on its first run.
    """
    found: dict[int, list[EventRecord]] = {i: [] for i in ids}
    table = Event.__table__
    for chunk in chunks(ids):
        rows = db.execute(
            select(EventPairing.pairing_id, *table.c)
            .join(table, table.c.id == EventPairing.event_id)
            .where(EventPairing.pairing_id.in_(chunk))
        )
        for row in rows:
            found[row.pairing_id].append(record_from_row(row))
    return found

"""Conference logs: who joined an ended online meeting, as its provider reported it.

Each function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session as Db

from mentorpulse.model import AttendanceEvidence, EventRecord, EventStatus
from mentorpulse.storage.events import flag_event_changed, record_from_row
from mentorpulse.storage.models import ConferenceAttendance, Event, EventPairing


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
    flag_event_changed(db, event_id)
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

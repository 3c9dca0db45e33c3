"""Mentoring sessions and the evidence that decided each one's outcome.

Each function works inside the caller's transaction; the caller commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.orm import Session as Db

from mentorpulse.model import Outcome
from mentorpulse.storage.batch import in_lists
from mentorpulse.storage.models import Evidence, MentoringSession, Pairing, Person

# The judged values of a session, compared with a new verdict to tell what changed.
JUDGED = (
    "start",
    "end",
    "zone",
    "outcome",
    "confidence",
    "cancelled_by",
    "cancelled_hours_before",
)

StoredSessions = dict[str, tuple[int, dict[str, Any]]]  # key → (row id, judged values)


def pairings_to_rebuild(db: Db, now: datetime) -> list[int]:
    """Pairings whose events changed, or with an upcoming session that has ended since."""
    due = set(db.scalars(select(Pairing.id).where(Pairing.events_changed)))
    due |= set(
        db.scalars(
            select(MentoringSession.pairing_id).where(
                MentoringSession.outcome == Outcome.UPCOMING.value, MentoringSession.end <= now
            )
        )
    )
    return sorted(due)


def person_emails(db: Db) -> dict[int, str]:
    """Every person's address by row id."""
    return dict(db.execute(select(Person.id, Person.email)).all())


def pairings_by_id(db: Db, ids: Sequence[int]) -> dict[int, Pairing]:
    """The pairings' rows (their flags are set by the caller, written by its flush)."""
    return {p.id: p for p in db.scalars(select(Pairing).where(Pairing.id.in_(ids)))}


def stored_sessions(db: Db, pairing_ids: Sequence[int]) -> dict[int, StoredSessions]:
    """pairing → session key → (row id, its judged values), read as plain rows."""
    table = cast(Table, MentoringSession.__table__)
    columns = [table.c.pairing_id, table.c.key, table.c.id, *(table.c[n] for n in JUDGED)]
    found: dict[int, StoredSessions] = defaultdict(dict)
    for chunk in in_lists(pairing_ids):
        for pairing_id, key, row_id, *values in db.execute(
            select(*columns).where(table.c.pairing_id.in_(chunk))
        ):
            found[pairing_id][key] = (row_id, dict(zip(JUDGED, values, strict=True)))
    return found


def outcome_counts(db: Db) -> dict[str, int]:
    """Stored sessions per outcome."""
    return dict(
        db.execute(
            select(MentoringSession.outcome, func.count()).group_by(MentoringSession.outcome)
        ).all()
    )


@dataclass
class SessionWrites:
    """Session changes collected over many pairings, written in batches by :meth:`apply`.

    Evidence rows are dicts of ``rank``, ``kind``, ``party`` and ``detail``.
    """

    inserts: list[dict[str, Any]] = field(default_factory=list)
    new_evidence: dict[tuple[int, str], list[dict[str, Any]]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)  # sessions whose evidence is redone
    deleted: list[int] = field(default_factory=list)

    def add(self, row: dict[str, Any], evidence: list[dict[str, Any]]) -> None:
        """A new session (``pairing_id``, ``key`` and its values) with its evidence."""
        self.inserts.append(row)
        self.new_evidence[(row["pairing_id"], row["key"])] = evidence

    def change(self, row: dict[str, Any], evidence: list[dict[str, Any]]) -> None:
        """A stored session (``id`` and its values) judged anew, with its new evidence."""
        self.updates.append(row)
        self.replaced.append(row["id"])
        self._add_evidence(row["id"], evidence)

    def _add_evidence(self, session_id: int, evidence: list[dict[str, Any]]) -> None:
        self.evidence += [{"session_id": session_id, **item} for item in evidence]

    def apply(self, db: Db) -> None:
        # Core inserts, not ORM bulk ones: those split a batch wherever a value is None.
        table = cast(Table, MentoringSession.__table__)
        if self.inserts:
            # A plain executemany, then the new ids in one SELECT: with RETURNING, rows
            # went as INSERTs of up to 1,000 rows' values, one statement text per batch
            # length, which SQLite's statement cache kept (16 MB at medium scale).
            db.execute(insert(table), self.inserts)
            pairing_ids = sorted({row["pairing_id"] for row in self.inserts})
            for chunk in in_lists(pairing_ids):
                query = select(table.c.id, table.c.pairing_id, table.c.key)
                for session_id, pairing_id, key in db.execute(
                    query.where(table.c.pairing_id.in_(chunk))
                ):
                    evidence = self.new_evidence.get((pairing_id, key))
                    if evidence is not None:
                        self._add_evidence(session_id, evidence)
        if self.updates:
            db.execute(update(MentoringSession), self.updates)
        for chunk in in_lists(self.replaced + self.deleted):
            db.execute(delete(Evidence).where(Evidence.session_id.in_(chunk)))
        for chunk in in_lists(self.deleted):
            db.execute(delete(MentoringSession).where(MentoringSession.id.in_(chunk)))
        if self.evidence:
            db.execute(insert(cast(Table, Evidence.__table__)), self.evidence)

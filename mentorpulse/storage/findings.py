"""Findings and silences: every query of evaluation, ``explain`` and the silence commands
about them, and the one mapping between a finding row and the engine's FindingState.

The caller opens the transaction; nothing here commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from mentorpulse.model import ERROR, FIRING, OPEN, RESOLVED, FindingState
from mentorpulse.storage.batch import among, in_lists
from mentorpulse.storage.models import Finding, JobRun, Pairing, Person, Silence

# The pairing's key rides along in a finding's stored facts (notify shows the facts, and
# drops this one); the engine's FindingState carries it as a field of its own.
_PAIRING_FACT = "pairing"


def findings_of_pairings(db: Db, pairing_ids: Sequence[int]) -> dict[int, dict[str, Finding]]:
    """The findings of the pairings, by pairing id and fingerprint."""
    found: dict[int, dict[str, Finding]] = defaultdict(dict)
    for chunk in in_lists(pairing_ids):
        query = select(Finding).where(Finding.pairing_id.in_(chunk)).order_by(Finding.id)
        for finding in db.scalars(query):
            found[finding.pairing_id or 0][finding.fingerprint] = finding
    return found


class StoredFinding(NamedTuple):
    """A pairing's finding as evaluation reads it: its row and the engine's view of it."""

    id: int
    state: FindingState


_STATE_COLUMNS = (
    Finding.id,
    Finding.pairing_id,
    Finding.fingerprint,
    Finding.rule_id,
    Finding.severity,
    Finding.state,
    Finding.since,
    Finding.firing_since,
    Finding.until,
    Finding.facts,
    Finding.reason,
)


def finding_states_of(db: Db, pairing_ids: Sequence[int]) -> dict[int, dict[str, StoredFinding]]:
    """The findings of the pairings as Core rows, by pairing id and fingerprint."""
    found: dict[int, dict[str, StoredFinding]] = defaultdict(dict)
    for chunk in in_lists(pairing_ids):
        query = select(*_STATE_COLUMNS).where(among(db, Finding.pairing_id, chunk))
        query = query.order_by(Finding.id)
        for row in db.execute(query):
            found[row.pairing_id][row.fingerprint] = StoredFinding(row.id, state_of(row))
    return found


@dataclass
class FindingWrites:
    """What an evaluation batch changes in the findings table, written at once by
    :func:`write_findings` (one statement per kind of change, no per-row flush)."""

    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def add(self, fingerprint: str, pairing_id: int, state: FindingState, now: datetime) -> None:
        row = {"fingerprint": fingerprint, "pairing_id": pairing_id}
        self.added.append({**row, **_columns(state, now)})

    def change(self, row_id: int, state: FindingState, now: datetime) -> None:
        self.changed.append({"row_id": row_id, **_columns(state, now)})

    def resolve(self, row_id: int, now: datetime, reason: str | None) -> None:
        self.resolved.append({"row_id": row_id, "until": now, "reason": reason})

    def remove(self, row_id: int) -> None:
        self.removed.append(row_id)


def write_findings(db: Db, writes: FindingWrites, now: datetime) -> None:
    """Store a batch's finding changes (see :class:`FindingWrites`)."""
    connection = db.connection()
    by_id = Finding.id == bindparam("row_id")
    for chunk in in_lists(writes.removed):
        connection.execute(delete(Finding).where(Finding.id.in_(chunk)))
    if writes.added:
        connection.execute(insert(Finding), writes.added)
    if writes.changed:
        values: dict[str, Any] = {name: bindparam(name) for name in _COLUMN_NAMES}
        connection.execute(update(Finding).where(by_id).values(values), writes.changed)
    if writes.resolved:
        resolved = update(Finding).where(by_id)
        values = {"until": bindparam("until"), "reason": bindparam("reason")}
        connection.execute(
            resolved.values(state=RESOLVED, last_evaluated_at=now, **values), writes.resolved
        )


_COLUMN_NAMES = (
    "rule_id",
    "severity",
    "state",
    "since",
    "firing_since",
    "until",
    "facts",
    "reason",
    "last_evaluated_at",
)


def _columns(state: FindingState, now: datetime) -> dict[str, Any]:
    """The engine's verdict as a finding row's columns: the one mapping of the two."""
    return {
        "rule_id": state.rule_id,
        "severity": state.severity,
        "state": state.state,
        "since": state.since,
        "firing_since": state.firing_since,
        "until": state.until,
        "facts": {**state.facts, _PAIRING_FACT: state.pairing_key},
        "reason": state.reason,
        "last_evaluated_at": now,
    }


def state_of(row: Finding | Row[Any]) -> FindingState:
    """A stored finding (ORM object or Core row of its columns) as the engine sees it."""
    return FindingState(
        fingerprint=row.fingerprint,
        rule_id=row.rule_id,
        pairing_key=row.facts.get(_PAIRING_FACT, ""),
        severity=row.severity,
        state=row.state,
        since=row.since,
        firing_since=row.firing_since,
        until=row.until,
        facts={k: v for k, v in row.facts.items() if k != _PAIRING_FACT},
        reason=row.reason,
    )


def add_finding(db: Db, fingerprint: str, pairing_id: int | None) -> Finding:
    """A new finding row (its state is written by the caller)."""
    row = Finding(fingerprint=fingerprint, pairing_id=pairing_id)
    db.add(row)
    return row


def resolve(row: Finding, now: datetime, reason: str | None = None) -> None:
    """End a finding's episode at ``now``, saying why when no rule decided it."""
    row.state, row.until, row.reason = RESOLVED, now, reason
    row.last_evaluated_at = now


def fire(row: Finding, rule_id: str, severity: str, facts: dict[str, str], now: datetime) -> None:
    """Start a firing episode of an operator finding (no pending phase, no ``for:``)."""
    row.rule_id, row.severity, row.state = rule_id, severity, FIRING
    row.since = row.firing_since = now
    row.until, row.reason, row.facts, row.last_evaluated_at = None, None, facts, now


def state_counts(db: Db) -> dict[str, int]:
    """How many findings are in each state (``firing``, ``resolved`` …)."""
    query = select(Finding.state, func.count()).group_by(Finding.state)
    counts: dict[str, int] = dict(db.execute(query).all())
    return counts


def failing_rules(db: Db) -> list[tuple[str, str, str | None]]:
    """(rule id, program id, error) of every pairing finding in the error state."""
    rows = db.execute(
        select(Finding.rule_id, Pairing.program_id, Finding.reason)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .where(Finding.state == ERROR)
    )
    return [(rule_id, program_id, reason) for rule_id, program_id, reason in rows]


def operator_findings(db: Db, rule_ids: Collection[str]) -> dict[str, Finding]:
    """The findings about the system itself (no pairing) of these kinds, by fingerprint."""
    query = select(Finding).where(Finding.pairing_id.is_(None), Finding.rule_id.in_(rule_ids))
    return {f.fingerprint: f for f in db.scalars(query.order_by(Finding.id))}


def remember_config(db: Db, prefix: str, name: str, now: datetime) -> bool:
    """Keep ``name`` as the one job-run row under ``prefix``; whether it was not already
    (the rules configuration changed since the last evaluation)."""
    runs = list(db.scalars(select(JobRun).where(JobRun.name.startswith(prefix))))
    if [r.name for r in runs] == [name]:
        return False
    for run in runs:
        db.delete(run)
    db.add(JobRun(name=name, last_run_at=now))
    db.flush()
    return True


# ---------------------------------------------------------------- silences


def active_silences(db: Db, now: datetime) -> list[Silence]:
    """Silences in force at ``now``, oldest first (the first that matches is named)."""
    query = select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)
    return list(db.scalars(query.order_by(Silence.id)))


def silences(db: Db, now: datetime, *, expired: bool = False) -> list[Silence]:
    """Silences not yet over at ``now`` (with ``expired``: every one), by id."""
    query = select(Silence).order_by(Silence.id)
    if not expired:
        query = query.where(Silence.ends_at > now)
    return list(db.scalars(query))


def silences_by_id(db: Db, ids: Collection[int]) -> dict[int, Silence]:
    found: dict[int, Silence] = {}
    for chunk in in_lists(sorted(ids)):
        found.update((s.id, s) for s in db.scalars(select(Silence).where(Silence.id.in_(chunk))))
    return found


def add_silence(
    db: Db,
    *,
    program_id: str | None,
    mentor_email: str | None,
    mentee_email: str | None,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    created_by: str | None,
) -> Silence:
    """A new silence, made at its start, flushed so that it has its id."""
    silence = Silence(
        program_id=program_id,
        mentor_email=mentor_email,
        mentee_email=mentee_email,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=reason,
        created_by=created_by,
        created_at=starts_at,
    )
    db.add(silence)
    db.flush()
    return silence


def get_silence(db: Db, silence_id: int) -> Silence | None:
    return db.get(Silence, silence_id)


def end_silence(silence: Silence, now: datetime) -> None:
    """End a silence at ``now`` (one not yet begun ends as it begins); an ended one stays."""
    if silence.ends_at > now:
        silence.ends_at = max(now, silence.starts_at)


def silenceable(db: Db, *, any_active: bool) -> list[tuple[Finding, str, str, str]]:
    """Findings a silence may cover or release, with program, mentor and mentee emails:
    the open ones and those marked silenced (with no silence active, only the latter can
    change)."""
    mentor = aliased(Person)
    mentee = aliased(Person)
    marked = Finding.silence_id.is_not(None)
    rows = db.execute(
        select(Finding, Pairing.program_id, mentor.email, mentee.email)
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .where(or_(Finding.state.in_(sorted(OPEN)), marked) if any_active else marked)
    )
    return [(finding, program, a, b) for finding, program, a, b in rows]


# ---------------------------------------------------------------- the dashboard's list


class ListedFinding(NamedTuple):
    """A pairing's finding as the dashboard lists it, with its pair and its silence."""

    id: int
    pairing_id: int
    program_id: str
    mentor_email: str
    mentor_name: str | None
    mentee_email: str
    mentee_name: str | None
    rule_id: str
    severity: str
    state: str
    since: datetime
    firing_since: datetime | None
    until: datetime | None
    facts: dict[str, Any]
    silence_id: int | None
    silence_ends_at: datetime | None
    silence_program_id: str | None  # the program the silence is limited to (None: any)


def listed_findings(
    db: Db,
    *,
    programs: Collection[str] | None,
    rule: str | None = None,
    state: str | None = None,
    finding_id: int | None = None,
    limit: int = 500,
) -> list[ListedFinding]:
    """Findings of pairings (``programs``: of these programs only; None: every one), the
    newest first, filtered by rule id and state."""
    mentor = aliased(Person)
    mentee = aliased(Person)
    query = (
        select(
            Finding.id,
            Finding.pairing_id,
            Pairing.program_id,
            mentor.email,
            mentor.name,
            mentee.email,
            mentee.name,
            Finding.rule_id,
            Finding.severity,
            Finding.state,
            Finding.since,
            Finding.firing_since,
            Finding.until,
            Finding.facts,
            Finding.silence_id,
            Silence.ends_at,
            Silence.program_id,
        )
        .join(Pairing, Pairing.id == Finding.pairing_id)
        .join(mentor, mentor.id == Pairing.mentor_id)
        .join(mentee, mentee.id == Pairing.mentee_id)
        .outerjoin(Silence, Silence.id == Finding.silence_id)
        .order_by(Finding.id.desc())
        .limit(limit)
    )
    if programs is not None:
        query = query.where(Pairing.program_id.in_(sorted(programs)))
    if rule:
        query = query.where(Finding.rule_id == rule)
    if state:
        query = query.where(Finding.state == state)
    if finding_id is not None:
        query = query.where(Finding.id == finding_id)
    return [ListedFinding._make(row) for row in db.execute(query)]

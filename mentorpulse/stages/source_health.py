"""Whether the data behind a pairing can be trusted, and what the operator is told.

Staleness: the sources that *cover* a pairing are those that hold one of its events,
plus those whose configured ``owner`` is its mentor or mentee; a pairing with none of
those (it never met, and no source names its people) is covered by every source, so a
broken calendar can never make a pair look lapsed. A source is stale when it is
unhealthy, never synced, or last succeeded longer than ``evaluation.stale_after`` ago.

Operator findings have no pairing: one per stale source, one per failing rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.model import FIRING
from mentorpulse.rules.engine import fingerprint
from mentorpulse.storage import findings as stored
from mentorpulse.storage.models import Source
from mentorpulse.storage.timelines import PairingRow, sources_by_id, sources_of_pairings
from mentorpulse.text import local_time

log = structlog.get_logger(__name__)

SOURCE_STALE = "source_stale"  # operator finding: a source feeding pairings is stale
RULE_ERROR = "rule_error"  # operator finding: a rule raised on some pairings
_SEVERITY = "critical"


def stale_sources(db: Db, config: MentorpulseConfig, now: datetime) -> dict[str, str]:
    """Configured sources whose data cannot be trusted now, with the reason."""
    rows = sources_by_id(db)
    stale: dict[str, str] = {}
    for source in config.sources:
        why = _staleness(rows.get(source.id), now - config.evaluation.stale_after)
        if why is not None:
            stale[source.id] = why
    return stale


def _staleness(row: Source | None, limit: datetime) -> str | None:
    """Why a source's data cannot be trusted (None: it can), given the oldest success
    that still counts as fresh."""
    if row is None or row.last_success_at is None:
        return "never synced successfully"
    if row.held_deletions is not None:
        return f"deletions held for confirmation ({row.last_error})"
    if row.resync_started_at is not None:
        started = local_time(row.resync_started_at, UTC)
        return f"a full resync started at {started} has not completed"
    if not row.healthy:
        return f"failing since its last success at {local_time(row.last_success_at, UTC)}" + (
            f" ({row.last_error})" if row.last_error else ""
        )
    if row.last_success_at < limit:
        return f"no successful sync since {local_time(row.last_success_at, UTC)}"
    return None


def coverage(
    db: Db, config: MentorpulseConfig, people: Mapping[int, tuple[str, str]]
) -> dict[int, set[str]]:
    """The sources covering each pairing (``people``: id → mentor and mentee emails; see
    the module docstring); absent: all of them."""
    covered = sources_of_pairings(db, list(people))
    owners: dict[str, set[str]] = defaultdict(set)
    for source in config.sources:
        for owner in source.owners():
            owners[owner].add(source.id)
    for pairing_id, (mentor_email, mentee_email) in people.items():
        own = owners.get(mentor_email, set()) | owners.get(mentee_email, set())
        if own:
            covered.setdefault(pairing_id, set()).update(own)
    return covered


def sources_feeding(db: Db, config: MentorpulseConfig, pairings: Sequence[PairingRow]) -> set[str]:
    """The ids of the sources covering any of ``pairings`` (see the module docstring; a
    pairing no source covers yet is covered by every one): what a program admin is shown
    of the sources' health, and nothing of the calendars of other programs."""
    covered = coverage(db, config, {p.id: (p.mentor_email, p.mentee_email) for p in pairings})
    if any(p.id not in covered for p in pairings):
        return {source.id for source in config.sources}
    return set().union(*covered.values())


def operator_findings(
    db: Db,
    stale: Mapping[str, str],
    suppressed_by: Mapping[str, int],
    now: datetime,
) -> int:
    """One finding per stale source, one per failing rule; resolved when they recover.
    Returns the number of findings changed."""
    wanted = _wanted(db, stale)
    existing = stored.operator_findings(db, [SOURCE_STALE, RULE_ERROR])
    changed = 0
    for key, (rule_id, facts) in wanted.items():
        row = existing.get(key)
        if row is not None and row.state == FIRING:
            if row.facts != facts:
                row.facts = facts
                changed += 1
            continue
        stored.fire(row or stored.add_finding(db, key, None), rule_id, _SEVERITY, facts, now)
        log.error("operator_finding", finding=rule_id, **facts)
        changed += 1
    for key, row in existing.items():
        if key not in wanted and row.state == FIRING:
            stored.resolve(row, now)
            log.info("operator_finding_resolved", finding=row.rule_id, **row.facts)
            changed += 1
    if suppressed_by:
        log.warning("findings_suppressed", by_source=dict(suppressed_by))
    return changed


def _wanted(db: Db, stale: Mapping[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """The operator findings that should be firing, by fingerprint: kind and facts."""
    wanted: dict[str, tuple[str, dict[str, str]]] = {}
    for source_id, why in stale.items():
        key = fingerprint(SOURCE_STALE, f"source:{source_id}")
        wanted[key] = (SOURCE_STALE, {"source": source_id, "problem": why})
    for rule_id, program_id, reason in stored.failing_rules(db):
        key = fingerprint(RULE_ERROR, f"rule:{program_id}:{rule_id}")
        facts = {"program": program_id, "rule": rule_id, "error": reason or ""}
        wanted.setdefault(key, (RULE_ERROR, facts))
    return wanted

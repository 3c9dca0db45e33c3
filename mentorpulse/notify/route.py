"""Routing: which firing findings become which notifications, decided in one place.

The notifier never evaluates rules; it receives findings as :class:`Alert` data and turns
each into zero or more :class:`Notification` rows for the outbox. Whether to send is one
function with a reason (:func:`should_notify`), as in Alertmanager, so "why did/didn't
this mail go out" has one answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

log = structlog.get_logger(__name__)

REMINDER = "reminder"
# Fact keys a rule may use for "the last attended session"; the first present one wins.
LAST_MET_FACTS = ("last_attended", "last_session", "last_met", "last_attended_at")
# Bookkeeping the pipeline keeps in facts that means nothing to a reader of the email.
INTERNAL_FACTS = frozenset({"pairing"})


@dataclass(frozen=True, slots=True)
class Alert:
    """A finding as the notifier sees it, built by the pipeline from the database."""

    fingerprint: str
    rule_id: str
    severity: str
    state: str  # "pending" | "firing" | "resolved" | "suppressed"
    firing_since: datetime | None
    facts: Mapping[str, str]
    program: str
    program_name: str
    mentor_email: str
    mentor_name: str | None
    mentee_email: str
    mentee_name: str | None
    mentor_timezone: str | None
    silenced: bool = False


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient; ``idempotency_key`` makes enqueueing it exactly-once."""

    recipient: str
    template: str
    idempotency_key: str
    payload: dict[str, object]


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of an escalation ladder: who gets which template.

    Today there is a single step (the mentor's reminder). Later issues add further steps
    (program admins, HR), repeat buckets, digests and quiet hours; each becomes another
    ``Step`` and a larger ``repeat`` number in the idempotency key, nothing else changes.
    """

    index: int
    template: str


LADDER: tuple[Step, ...] = (Step(index=0, template=REMINDER),)


def should_notify(alert: Alert) -> tuple[bool, str]:
    """Decide whether this alert gets mail at all, and say why (for logs and ``explain``)."""
    if alert.state != "firing":
        return False, "not firing"
    if alert.firing_since is None:
        return False, "no firing episode"
    if alert.silenced:
        return False, "silenced"
    if not alert.mentor_email:
        return False, "no recipient"
    return True, "first"


def idempotency_key(alert: Alert, *, step: int = 0, repeat: int = 0) -> str:
    """Key of one message: the firing episode is part of it, so a re-fire is a new email."""
    assert alert.firing_since is not None
    episode = alert.firing_since.astimezone(UTC).isoformat()
    return f"{alert.fingerprint}:{episode}:step{step}:repeat{repeat}"


def notifications_for(alerts: Iterable[Alert]) -> list[Notification]:
    """Every notification the given alerts call for; deterministic, so re-running is a no-op."""
    out: list[Notification] = []
    for alert in alerts:
        send, reason = should_notify(alert)
        if not send:
            log.debug("notification_skipped", fingerprint=alert.fingerprint, reason=reason)
            continue
        step = LADDER[0]  # the seam: later, pick the steps whose delay has elapsed
        out.append(
            Notification(
                recipient=alert.mentor_email,
                template=step.template,
                idempotency_key=idempotency_key(alert, step=step.index),
                payload=payload_for(alert),
            )
        )
    return out


def payload_for(alert: Alert) -> dict[str, object]:
    """Everything the templates need, as JSON values; nothing is looked up at render time."""
    zone = _zone(alert.mentor_timezone)
    last_met = _last_met(alert.facts)
    return {
        "recipient_name": alert.mentor_name,
        "mentor_name": alert.mentor_name,
        "mentor_email": alert.mentor_email,
        "mentee_name": alert.mentee_name,
        "mentee_email": alert.mentee_email,
        "program": alert.program,
        "program_name": alert.program_name,
        "rule_id": alert.rule_id,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
        "firing_since": alert.firing_since.isoformat() if alert.firing_since else None,
        "last_met": last_met.isoformat() if last_met else None,
        "last_met_display": _display(last_met, zone) if last_met else None,
        "never_met": any(alert.facts.get(k) == "never" for k in LAST_MET_FACTS),
        "facts": {
            str(k): str(v) for k, v in sorted(alert.facts.items()) if k not in INTERNAL_FACTS
        },
    }


def _zone(name: str | None) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("unknown_timezone", timezone=name)
    return ZoneInfo("UTC")


def _last_met(facts: Mapping[str, str]) -> datetime | date | None:
    for key in LAST_MET_FACTS:
        raw = facts.get(key)
        if not raw:
            continue
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            continue
        if len(raw) <= 10:  # a bare date: the day it was, in nobody's zone
            return value.date()
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _display(value: datetime | date, zone: ZoneInfo) -> str:
    """'2 Oct 2024' in the mentor's own zone: the day they would remember, unambiguous."""
    day = value.astimezone(zone).date() if isinstance(value, datetime) else value
    return f"{day.day} {day:%b %Y}"

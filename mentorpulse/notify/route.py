"""Routing: which findings become which notifications, to whom and when, in one place.

The notifier never evaluates rules; it receives findings as :class:`Alert` data and turns
each into zero or more :class:`Notification` rows for the outbox. Whether to send is one
function with a reason (:func:`should_notify`), as in Alertmanager, so "why did/didn't
this mail go out" has one answer. A :class:`Router` is built from the config and is pure:
the same alerts at the same moment always give the same notifications (and keys), so
re-running the stage queues nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from mentorpulse.config.schema import (
    DISPUTE_KIND,
    Contact,
    Inhibition,
    MentorpulseConfig,
    Route,
    RouteMatch,
    SendWindow,
)
from mentorpulse.model import LAST_ATTENDED_FACT, NEVER_ATTENDED
from mentorpulse.notify.timing import digest_due, next_send_time, zone

log = structlog.get_logger(__name__)

REMINDER = "reminder"
ESCALATION = "escalation"
RESOLVED = "resolved"
DIGEST = "digest"
# Bookkeeping the pipeline keeps in facts that means nothing to a reader of the email.
INTERNAL_FACTS = frozenset({"pairing"})
DEFAULT_ROUTE = Route()  # every firing finding, to its mentor, once per episode
# A dispute over whether a session took place is for the program's admins to settle, not
# for the pair: unless a route names the rule (or its kind), it goes to them.
DISPUTE_ROUTE = Route(match=RouteMatch(rules=(DISPUTE_KIND,)), to=("program_admin",))


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
    pairing_key: str = ""
    rule_kind: str = ""
    mentee_timezone: str | None = None
    until: datetime | None = None
    rule_labels: Mapping[str, str] = field(default_factory=dict)  # a rule's own `labels:`

    @property
    def labels(self) -> dict[str, str]:
        """What a route's ``match.labels`` compares against: the rule's labels, then ours."""
        return {
            **self.rule_labels,
            "program": self.program,
            "rule": self.rule_id,
            "kind": self.rule_kind,
            "severity": self.severity,
        }

    @property
    def episode(self) -> str:
        """This firing episode of the finding: a re-fire after resolving is a new one."""
        assert self.firing_since is not None
        return self.episode_key(self.fingerprint, self.firing_since)

    @staticmethod
    def episode_key(fingerprint: str, firing_since: datetime) -> str:
        return f"{fingerprint}:{firing_since.astimezone(UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str | None
    timezone: str | None
    role: str  # mentor, mentee, program_admin, hr, contact, address


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient; ``idempotency_key`` makes enqueueing it exactly-once.

    ``due`` is when it may go out (quiet hours, digest windows); ``digest`` says it waits
    to be folded into one email per recipient; ``at_most_once`` trades the possible
    duplicate for a possible loss (reports to HR).
    """

    recipient: str
    template: str
    idempotency_key: str
    payload: dict[str, object]
    finding_key: str | None = None
    due: datetime | None = None
    digest: bool = False
    at_most_once: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of an escalation ladder: from when, to whom, grouped or not."""

    index: int
    after: timedelta
    to: tuple[str, ...]
    digest: timedelta | None


def ladder(route: Route) -> tuple[Step, ...]:
    first = Step(index=0, after=timedelta(0), to=route.to, digest=route.digest)
    rest = (
        Step(index=i + 1, after=s.after, to=s.to, digest=s.digest)
        for i, s in enumerate(route.escalate)
    )
    return (first, *rest)


def should_notify(
    alert: Alert,
    *,
    firing: Collection[Alert] = (),
    inhibit: Iterable[Inhibition] = (),
) -> tuple[bool, str]:
    """Decide whether this alert gets mail at all, and say why (for logs and ``explain``)."""
    if alert.state != "firing":
        return False, "not firing"
    if alert.firing_since is None:
        return False, "no firing episode"
    if alert.silenced:
        return False, "silenced"
    for rule in inhibit:
        if not _is(alert, rule.target):
            continue
        for other in firing:
            if (
                other is not alert
                and other.state == "firing"
                and other.pairing_key == alert.pairing_key
                and _is(other, rule.source)
            ):
                return False, f"inhibited by {other.rule_id}"
    if not alert.mentor_email:
        return False, "no recipient"
    return True, "first"


def idempotency_key(alert: Alert, *, step: int = 0, repeat: int = 0, to: str = "") -> str:
    """Key of one message: the firing episode is part of it, so a re-fire is a new email."""
    key = f"{alert.episode}:step{step}:repeat{repeat}"
    return f"{key}:{_short(to)}" if to else key


def _short(address: str) -> str:
    return hashlib.sha256(address.lower().encode()).hexdigest()[:12]


def _is(alert: Alert, name: str) -> bool:
    return name in (alert.rule_id, alert.rule_kind)


@dataclass
class Router:
    """Routes, ladders, repeats, inhibition, quiet hours and digests, from the config."""

    routes: tuple[Route, ...] = ()
    inhibit: tuple[Inhibition, ...] = ()
    send_window: SendWindow | None = None
    contacts: Mapping[str, Contact] = field(default_factory=dict)
    program_admins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    hr: tuple[str, ...] = ("hr",)
    default_zone: str = "UTC"

    @classmethod
    def from_config(cls, config: MentorpulseConfig) -> Router:
        return cls(
            routes=config.notify.routes,
            inhibit=config.notify.inhibit,
            send_window=config.notify.send_window,
            contacts=config.contacts,
            program_admins={p.id: p.admins for p in config.programs},
            hr=config.notify.hr,
            default_zone=config.timezone,
        )

    def live_episodes(self, alerts: Iterable[Alert]) -> set[str]:
        """Finding keys of the alerts that notify now (firing, not silenced, not inhibited)."""
        return {alert.episode for alert, (send, _why) in self._decisions(alerts) if send}

    def _decisions(self, alerts: Iterable[Alert]) -> Iterator[tuple[Alert, tuple[bool, str]]]:
        """Each alert with :func:`should_notify`'s verdict, inhibition judged among them."""
        alerts = list(alerts)
        by_pairing = _firing_by_pairing(alerts)
        for alert in alerts:
            firing = by_pairing.get(alert.pairing_key, ())
            yield alert, should_notify(alert, firing=firing, inhibit=self.inhibit)

    def routes_for(self, alert: Alert) -> list[Route]:
        """The matching routes: the first, and the ones after it while ``continue`` is set.

        An attendance dispute goes to the program's admins unless a route names it."""
        if alert.rule_kind == DISPUTE_KIND and not any(
            alert.rule_id in r.match.rules or DISPUTE_KIND in r.match.rules for r in self.routes
        ):
            return [DISPUTE_ROUTE]
        matched: list[Route] = []
        for route in self.routes or (DEFAULT_ROUTE,):
            if _matches(route, alert):
                matched.append(route)
                if not route.continue_:
                    break
        return matched

    def notifications(self, alerts: Iterable[Alert], *, now: datetime) -> list[Notification]:
        """Every notification the alerts call for at ``now``; deterministic."""
        out: dict[str, Notification] = {}
        for alert, (send, reason) in self._decisions(alerts):
            if not send:
                log.debug("notification_skipped", fingerprint=alert.fingerprint, reason=reason)
                continue
            assert alert.firing_since is not None
            for route in self.routes_for(alert):
                for step in ladder(route):
                    start = alert.firing_since + step.after
                    if now < start:
                        break  # the ladder is climbed in order
                    repeat = 0
                    if route.repeat_every:
                        repeat = (now - start) // route.repeat_every
                    for person in self.recipients(alert, step.to):
                        note = self._note(
                            alert,
                            person,
                            step=step,
                            repeat=repeat,
                            now=now,
                            template=REMINDER
                            if person.role in ("mentor", "mentee")
                            else ESCALATION,
                        )
                        out.setdefault(note.idempotency_key, note)
        return list(out.values())

    def resolved_notices(
        self, alerts: Iterable[Alert], told: Mapping[str, list[tuple[str, bool]]], *, now: datetime
    ) -> list[Notification]:
        """'Resolved' notes to those who were told of an episode (``told``: finding key →
        [(address, was_digest)]) when a route asks for them."""
        out: list[Notification] = []
        for alert in alerts:
            if alert.state != "resolved" or alert.firing_since is None or alert.silenced:
                continue
            routes = self.routes_for(alert)
            if not any(r.send_resolved for r in routes):
                continue
            digest = next((s.digest for r in routes for s in ladder(r) if s.digest), None)
            for address, was_digest in sorted(set(told.get(alert.episode, []))):
                person = self._person(alert, address)
                out.append(
                    self._note(
                        alert,
                        person,
                        step=None,
                        repeat=0,
                        now=now,
                        template=RESOLVED,
                        digest=digest if was_digest else None,
                    )
                )
        return out

    def recipients(self, alert: Alert, receivers: Iterable[str]) -> list[Recipient]:
        """Receivers (roles, contact names, addresses) → people, each address once."""
        return _unique(p for r in receivers for p in self._expand(alert, r))

    def report_recipients(self, receivers: Iterable[str]) -> list[Recipient]:
        """Who a scheduled report goes to: ``program_admin`` means every program's admins."""
        return _unique(p for r in receivers for p in self._named(r, self.program_admins))

    def _expand(self, alert: Alert, receiver: str) -> list[Recipient]:
        if receiver == "mentor":
            return [
                Recipient(alert.mentor_email, alert.mentor_name, alert.mentor_timezone, "mentor")
            ]
        if receiver == "mentee":
            return [
                Recipient(alert.mentee_email, alert.mentee_name, alert.mentee_timezone, "mentee")
            ]
        return self._named(receiver, (alert.program,))

    def _named(
        self, receiver: str, programs: Iterable[str], role: str | None = None
    ) -> list[Recipient]:
        """A receiver other than the pair itself: the admins of ``programs``, HR, a contact
        or an address."""
        if receiver == "program_admin":
            people: list[Recipient] = []
            for program in programs:
                admins = self.program_admins.get(program, ())
                if not admins:
                    log.warning("no_program_admins", program=program)
                people += [p for a in admins for p in self._named(a, (), "program_admin")]
            return people
        if receiver == "hr" and role is None:
            return [p for h in self.hr for p in self._named(h, programs, "hr")]
        contact = self.contacts.get(receiver)
        if contact is not None:
            return [Recipient(contact.email, contact.name, contact.timezone, role or "contact")]
        if "@" in receiver:
            return [Recipient(receiver, None, None, role or "address")]
        log.warning("undefined_receiver", receiver=receiver)
        return []

    def _person(self, alert: Alert, address: str) -> Recipient:
        """Who an address was, for a resolved notice (roles first, then contacts)."""
        for receiver in ("mentor", "mentee", *self.contacts):
            for person in self._expand(alert, receiver):
                if person.email.lower() == address.lower():
                    return person
        return Recipient(address, None, None, "address")

    def _note(
        self,
        alert: Alert,
        person: Recipient,
        *,
        step: Step | None,
        repeat: int,
        now: datetime,
        template: str,
        digest: timedelta | None = None,
    ) -> Notification:
        tz = zone(person.timezone, self.default_zone)
        if step is not None:
            digest = step.digest
        due = digest_due(now, tz, digest) if digest else now
        payload = payload_for(alert, person, tz)
        if step is not None:
            payload["step"] = step.index
            payload["repeat"] = repeat
        if digest:
            payload["digest_window"] = int(digest.total_seconds())
        key = (
            idempotency_key(alert, step=step.index, repeat=repeat, to=person.email)
            if step is not None
            else f"{alert.episode}:resolved:{_short(person.email)}"
        )
        return Notification(
            recipient=person.email,
            template=template,
            idempotency_key=key,
            payload=payload,
            finding_key=alert.episode,
            due=next_send_time(due, tz, self.send_window),
            digest=digest is not None,
        )


def _unique(people: Iterable[Recipient]) -> list[Recipient]:
    """Each address once (the first role it came by), in order."""
    seen: dict[str, Recipient] = {}
    for person in people:
        if person.email and person.email.lower() not in seen:
            seen[person.email.lower()] = person
    return list(seen.values())


def _firing_by_pairing(alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    out: dict[str, list[Alert]] = {}
    for alert in alerts:
        if alert.state == "firing":
            out.setdefault(alert.pairing_key, []).append(alert)
    return out


def _matches(route: Route, alert: Alert) -> bool:
    match = route.match
    if match.rules and not any(_is(alert, r) for r in match.rules):
        return False
    if match.severity and alert.severity not in match.severity:
        return False
    if match.programs and alert.program not in match.programs:
        return False
    labels = alert.labels
    return all(labels.get(k) == v for k, v in match.labels.items())


def notifications_for(
    alerts: Iterable[Alert], *, now: datetime | None = None, router: Router | None = None
) -> list[Notification]:
    """Every notification the given alerts call for (default route: each mentor, once)."""
    alerts = list(alerts)
    if now is None:
        now = max((a.firing_since for a in alerts if a.firing_since), default=datetime.now(UTC))
    return (router or Router()).notifications(alerts, now=now)


def payload_for(
    alert: Alert, person: Recipient | None = None, tz: ZoneInfo | None = None
) -> dict[str, object]:
    """Everything the templates need, as JSON values; nothing is looked up at render time."""
    person = person or Recipient(
        alert.mentor_email, alert.mentor_name, alert.mentor_timezone, "mentor"
    )
    tz = tz or zone(person.timezone)
    last_met = _last_met(alert.facts)
    mentee_side = person.role == "mentee"
    return {
        "recipient_name": person.name,
        "recipient_role": person.role,
        "other_name": alert.mentor_name if mentee_side else alert.mentee_name,
        "other_email": alert.mentor_email if mentee_side else alert.mentee_email,
        "mentor_name": alert.mentor_name,
        "mentor_email": alert.mentor_email,
        "mentee_name": alert.mentee_name,
        "mentee_email": alert.mentee_email,
        "program": alert.program,
        "program_name": alert.program_name,
        "rule_id": alert.rule_id,
        "rule_kind": alert.rule_kind,
        "severity": alert.severity,
        "fingerprint": alert.fingerprint,
        "firing_since": alert.firing_since.isoformat() if alert.firing_since else None,
        "last_met": last_met.isoformat() if last_met else None,
        "last_met_display": _display(last_met, tz) if last_met else None,
        "firing_since_display": _display(alert.firing_since, tz) if alert.firing_since else None,
        "resolved_display": _display(alert.until, tz) if alert.until else None,
        "never_met": alert.facts.get(LAST_ATTENDED_FACT) == NEVER_ATTENDED,
        "facts": {
            str(k): str(v) for k, v in sorted(alert.facts.items()) if k not in INTERNAL_FACTS
        },
    }


def _last_met(facts: Mapping[str, str]) -> datetime | date | None:
    """The rule's last attended session (a day, or a moment), if it names one."""
    raw = facts.get(LAST_ATTENDED_FACT)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:  # NEVER_ATTENDED, or words
        return None
    if len(raw) <= 10:  # a bare date: the day it was, in nobody's zone
        return value.date()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _display(value: datetime | date, zone: ZoneInfo) -> str:
    """'2 Oct 2024' in the mentor's own zone: the day they would remember, unambiguous."""
    day = value.astimezone(zone).date() if isinstance(value, datetime) else value
    return f"{day.day} {day:%b %Y}"

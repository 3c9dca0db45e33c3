"""Rule kinds: one small class per ``kind:`` of rule, looked up by its config model.

A kind turns a pairing's session timeline into a :class:`Condition` at a moment ``now``;
it never stores or sends anything. New kinds register themselves with :func:`register`
for their pydantic model, so adding one never touches the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from mentorpulse.config.schema import CadenceGapRule, Program, RuleBase, format_duration
from mentorpulse.tracking.attendance import ATTENDED, Outcome


@dataclass(frozen=True, slots=True)
class SessionFact:
    """What the rules know of one session: when, and how it turned out."""

    key: str
    start: datetime
    end: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything a rule may look at for one pairing."""

    pairing_key: str
    program: str
    mentor: str
    mentee: str
    started_on: date
    ended_on: date | None
    zone: str  # the pairing's time zone (mentor's zone, else program/global)
    sessions: tuple[SessionFact, ...]  # sorted by start


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's verdict on one pairing at ``now``."""

    rule_id: str
    severity: str
    holds: bool
    since: datetime | None  # when the condition started to hold (the missed deadline)
    next_deadline: datetime | None  # when the verdict could next change without new data
    facts: dict[str, str] = field(default_factory=dict)  # human-readable, for explain


R = TypeVar("R", bound=RuleBase)


class RuleKind(ABC, Generic[R]):
    """One configured rule of one program, ready to judge timelines."""

    def __init__(self, rule: R, program: Program) -> None:
        self.rule = rule
        self.program = program

    @abstractmethod
    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        """The rule's verdict on ``timeline`` at ``now`` (aware)."""


_KINDS: dict[type[RuleBase], type[RuleKind[Any]]] = {}


def register(model: type[R]) -> Callable[[type[RuleKind[R]]], type[RuleKind[R]]]:
    """Class decorator: ``@register(CadenceGapRule)`` makes the class judge that model."""

    def decorate(kind: type[RuleKind[R]]) -> type[RuleKind[R]]:
        _KINDS[model] = kind
        return kind

    return decorate


def kind_for(rule: RuleBase, program: Program) -> RuleKind[Any]:
    """The rule kind instance for a configured rule; ``LookupError`` if none registered."""
    for model in type(rule).__mro__:
        kind = _KINDS.get(model)
        if kind is not None:
            return kind(rule, program)
    raise LookupError(f"no rule kind registered for {type(rule).__name__}")


def add_local(moment: datetime, delta: timedelta, zone: ZoneInfo) -> datetime:
    """``moment + delta`` with whole days counted on the wall clock of ``zone``.

    "14 days after Tuesday 10:00" is Tuesday 10:00 two weeks on, even when a DST change
    lies between; the part of ``delta`` below a day is added as elapsed time.
    """
    days = timedelta(days=delta.days)
    rest = delta - days
    # Aware arithmetic with a ZoneInfo tzinfo is wall-clock arithmetic in that zone.
    local = moment.astimezone(zone) + days
    return local.astimezone(UTC) + rest


def local_text(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M %Z}"


_NOT_SCHEDULED = frozenset({Outcome.CANCELLED, Outcome.RESCHEDULED})


@register(CadenceGapRule)
class CadenceGap(RuleKind[CadenceGapRule]):
    """No attended session within ``every`` + ``grace`` of the last one (or the start)."""

    @property
    def every(self) -> timedelta:
        return self.rule.every if self.rule.every is not None else self.program.cadence.every

    @property
    def grace(self) -> timedelta:
        return self.rule.grace if self.rule.grace is not None else self.program.cadence.grace

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        # Only what was known at `now` counts, so a backtest over past data sees the same
        # timeline the daemon saw then.
        attended = [s for s in timeline.sessions if s.outcome in ATTENDED and s.end <= now]
        if attended:
            last = max(attended, key=lambda s: s.end)
            anchor = last.end
            last_text = last.end.astimezone(zone).date().isoformat()
        else:
            anchor = datetime.combine(timeline.started_on, time(0), tzinfo=zone)
            last_text = "never"
        deadline = add_local(anchor, self.every + self.grace, zone)
        upcoming = [s for s in timeline.sessions if s.end > now and s.outcome not in _NOT_SCHEDULED]
        next_text = local_text(min(s.start for s in upcoming), zone) if upcoming else "none"
        holds = now >= deadline
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=deadline if holds else None,
            next_deadline=None if holds else deadline,
            facts={
                "last_attended": last_text,
                "anchor": "last attended session" if attended else "pairing start",
                "deadline": local_text(deadline, zone),
                "every": format_duration(self.every),
                "grace": format_duration(self.grace),
                "next_scheduled": next_text,
            },
        )

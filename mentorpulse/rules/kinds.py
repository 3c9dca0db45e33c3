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

from mentorpulse.config.schema import (
    AttendanceRateRule,
    CadenceGapRule,
    ConsecutiveMissesRule,
    DecliningFrequencyRule,
    FirstMeetingRule,
    LateCancellationsRule,
    NoUpcomingRule,
    PartyDisengagementRule,
    Program,
    RuleBase,
    format_duration,
)
from mentorpulse.model import (
    ATTENDED,
    LAST_ATTENDED_FACT,
    NEVER_ATTENDED,
    Outcome,
    attended_day,
)
from mentorpulse.text import local_time


@dataclass(frozen=True, slots=True)
class SessionFact:
    """What the rules know of one session: when, and how it turned out."""

    key: str
    start: datetime
    end: datetime
    outcome: Outcome
    cancelled_by: str | None = None  # email of who cancelled, when known
    cancelled_hours_before: float | None = None  # notice given (negative: after the start)
    missed_by: str | None = None  # email of who declined / did not show, for a missed one


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
    cadence: timedelta | None = None  # this pairing's own cadence (roster or YAML override)


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's verdict on one pairing at ``now``."""

    rule_id: str
    severity: str
    holds: bool
    since: datetime | None  # when the condition started to hold (the missed deadline)
    next_deadline: datetime | None  # when the verdict could next change without new data
    facts: dict[str, str] = field(default_factory=dict)  # human-readable, for explain
    # The rule raised on this pairing: a verdict of its own (it neither holds nor clears).
    error: str | None = None

    @property
    def verdict(self) -> str:
        """``error``, ``holds`` or ``clear``: what ``explain`` says of it."""
        if self.error is not None:
            return "error"
        return "holds" if self.holds else "clear"


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


_NOT_SCHEDULED = frozenset({Outcome.CANCELLED, Outcome.RESCHEDULED})
_NOT_HELD = frozenset({Outcome.MISSED, Outcome.CANCELLED})


def start_of(timeline: Timeline, zone: ZoneInfo) -> datetime:
    """Midnight of the pairing's first day, in its own zone."""
    return datetime.combine(timeline.started_on, time(0), tzinfo=zone).astimezone(UTC)


def known(timeline: Timeline, now: datetime) -> list[SessionFact]:
    """Sessions over by ``now``: only what was known then counts, so a backtest over past
    data sees the timeline the daemon saw at the time."""
    return [s for s in timeline.sessions if s.end <= now]


# Wall-clock days and elapsed time differ by at most a DST shift; beyond this slack the
# cheap elapsed-time comparison gives the same answer as the exact wall-clock one.
_DST_SLACK = timedelta(hours=3)


def in_window(moment: datetime, window: timedelta, now: datetime, zone: ZoneInfo) -> bool:
    """``moment`` lies in the ``window`` (wall-clock days) that ends at ``now``."""
    if moment > now:
        return False
    if moment > now - window + _DST_SLACK:
        return True
    if moment <= now - window - _DST_SLACK:
        return False
    return now < add_local(moment, window, zone)


def leaves_window(
    moments: list[datetime], window: timedelta, now: datetime, zone: ZoneInfo
) -> datetime | None:
    """When the first of ``moments`` drops out of the window: the verdict may change then.

    ``add_local`` never goes backwards, so the earliest moment still inside decides.
    """
    for moment in sorted(moments):
        if moment <= now - window - _DST_SLACK:
            continue
        leaves = add_local(moment, window, zone)
        if leaves > now:
            return leaves
    return None


def _who(timeline: Timeline, email: str | None) -> str:
    if email == timeline.mentor:
        return "mentor"
    if email == timeline.mentee:
        return "mentee"
    return email or "unknown"


@register(CadenceGapRule)
class CadenceGap(RuleKind[CadenceGapRule]):
    """No attended session within ``every`` + ``grace`` of the last one (or the start).

    The cadence is the pairing's own (roster column or YAML override), else the rule's,
    else the program's.
    """

    def every(self, timeline: Timeline) -> timedelta:
        if timeline.cadence is not None:
            return timeline.cadence
        return self.rule.every if self.rule.every is not None else self.program.cadence.every

    @property
    def grace(self) -> timedelta:
        return self.rule.grace if self.rule.grace is not None else self.program.cadence.grace

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        attended = [s for s in known(timeline, now) if s.outcome in ATTENDED]
        if attended:
            last = max(attended, key=lambda s: s.end)
            anchor = last.end
            last_text = attended_day(last.start, zone).isoformat()
        else:
            anchor = start_of(timeline, zone)
            last_text = NEVER_ATTENDED
        every = self.every(timeline)
        deadline = add_local(anchor, every + self.grace, zone)
        upcoming = [s for s in timeline.sessions if s.end > now and s.outcome not in _NOT_SCHEDULED]
        next_text = local_time(min(s.start for s in upcoming), zone) if upcoming else "none"
        holds = now >= deadline
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=deadline if holds else None,
            next_deadline=None if holds else deadline,
            facts={
                LAST_ATTENDED_FACT: last_text,
                "anchor": "last attended session" if attended else "pairing start",
                "deadline": local_time(deadline, zone),
                "every": format_duration(every),
                "grace": format_duration(self.grace),
                "next_scheduled": next_text,
            },
        )


@register(FirstMeetingRule)
class FirstMeeting(RuleKind[FirstMeetingRule]):
    """No attended session within ``within`` of the pairing's start; clears once they meet."""

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        attended = [s for s in known(timeline, now) if s.outcome in ATTENDED]
        deadline = add_local(start_of(timeline, zone), self.rule.within, zone)
        holds = not attended and now >= deadline
        facts = {
            "started_on": timeline.started_on.isoformat(),
            "within": format_duration(self.rule.within),
            "deadline": local_time(deadline, zone),
            "first_attended": (
                min(s.end for s in attended).astimezone(zone).date().isoformat()
                if attended
                else "never"
            ),
        }
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=deadline if holds else None,
            next_deadline=deadline if not attended and not holds else None,
            facts=facts,
        )


@register(NoUpcomingRule)
class NoUpcoming(RuleKind[NoUpcomingRule]):
    """Nothing scheduled to start within ``horizon`` of now."""

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        scheduled = [s for s in timeline.sessions if s.outcome not in _NOT_SCHEDULED]
        future = sorted(s.start for s in scheduled if s.start > now)
        horizon_end = add_local(now, self.rule.horizon, zone)
        holds = not future or future[0] > horizon_end
        past = [s.start for s in scheduled if s.start <= now]
        since = max([start_of(timeline, zone), *past])
        # While it holds, it clears by itself when the first future session comes into
        # the horizon; while it does not, it can change only when that session starts.
        clears = None
        if holds and future:
            clears = add_local(future[0], -self.rule.horizon, zone)
            while add_local(clears, self.rule.horizon, zone) < future[0]:
                clears += timedelta(hours=1)  # the skipped hour of a DST change
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=since if holds else None,
            next_deadline=clears,
            facts={
                "horizon": format_duration(self.rule.horizon),
                "next_scheduled": local_time(future[0], zone) if future else "none",
                "last_scheduled": local_time(max(past), zone) if past else "never",
            },
        )


@register(ConsecutiveMissesRule)
class ConsecutiveMisses(RuleKind[ConsecutiveMissesRule]):
    """The latest ``count`` sessions that were due all ended missed or cancelled.

    A rescheduled session is not a miss (its rebooking stands in for it); ``unknown``
    outcomes neither break nor extend the run.
    """

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        run: list[SessionFact] = []
        for s in sorted(known(timeline, now), key=lambda s: s.start):
            if s.outcome in ATTENDED:
                run = []
            elif s.outcome in _NOT_HELD:
                run.append(s)
        holds = len(run) >= self.rule.count
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=run[self.rule.count - 1].end if holds else None,
            next_deadline=None,
            facts={
                "count": str(self.rule.count),
                "misses_in_a_row": str(len(run)),
                "missed": ", ".join(
                    f"{local_time(s.start, zone)} {s.outcome.value}" for s in run[-5:]
                )
                or "none",
            },
        )


@register(PartyDisengagementRule)
class PartyDisengagement(RuleKind[PartyDisengagementRule]):
    """One party declined, cancelled or did not show ``count`` times within ``window``.

    The finding names the party (``mentor`` or ``mentee``, or both), which tells
    mentee-side from mentor-side disengagement.
    """

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        acts: dict[str, list[datetime]] = {timeline.mentor: [], timeline.mentee: []}
        for s in timeline.sessions:
            if s.outcome is Outcome.CANCELLED:
                who = s.cancelled_by
            elif s.outcome is Outcome.MISSED:
                who = s.missed_by
            else:
                continue
            # A cancellation is known from when it was made; a no-show once it is over.
            if s.outcome is Outcome.CANCELLED and s.cancelled_hours_before is not None:
                at = s.start - timedelta(hours=max(s.cancelled_hours_before, 0))
            else:
                at = s.end
            if who in acts and in_window(at, self.rule.window, now, zone):
                acts[who].append(at)
        parties = [p for p in (timeline.mentor, timeline.mentee) if len(acts[p]) >= self.rule.count]
        holds = bool(parties)
        since = None
        if holds:
            since = min(sorted(acts[p])[-self.rule.count] for p in parties)
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=since,
            next_deadline=leaves_window(
                acts[timeline.mentor] + acts[timeline.mentee], self.rule.window, now, zone
            ),
            facts={
                "party": " and ".join(_who(timeline, p) for p in parties) or "none",
                "party_email": ", ".join(parties) or "none",
                "mentor_count": str(len(acts[timeline.mentor])),
                "mentee_count": str(len(acts[timeline.mentee])),
                "count": str(self.rule.count),
                "window": format_duration(self.rule.window),
            },
        )


@register(LateCancellationsRule)
class LateCancellations(RuleKind[LateCancellationsRule]):
    """At least ``count`` sessions called off with less than ``notice`` within ``window``.

    A rescheduled session counts too: the slot was still dropped at short notice.
    """

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        notice_hours = self.rule.notice.total_seconds() / 3600
        late = [
            s
            for s in timeline.sessions
            if s.outcome in _NOT_SCHEDULED
            and s.cancelled_hours_before is not None
            and s.cancelled_hours_before < notice_hours
            and in_window(s.start, self.rule.window, now, zone)
        ]
        holds = len(late) >= self.rule.count
        by = sorted({_who(timeline, s.cancelled_by) for s in late})
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=late[-self.rule.count].start if holds else None,
            next_deadline=leaves_window([s.start for s in late], self.rule.window, now, zone),
            facts={
                "late_cancellations": str(len(late)),
                "count": str(self.rule.count),
                "notice": format_duration(self.rule.notice),
                "window": format_duration(self.rule.window),
                "cancelled_by": ", ".join(by) or "none",
            },
        )


@register(AttendanceRateRule)
class AttendanceRate(RuleKind[AttendanceRateRule]):
    """Attended / scheduled below ``threshold`` over ``window``.

    Scheduled counts held, presumed held, missed and cancelled sessions; a rescheduled one
    is replaced by its rebooking and ``unknown`` ones are not judged.
    """

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        due = [
            s
            for s in known(timeline, now)
            if (s.outcome in ATTENDED or s.outcome in _NOT_HELD)
            and in_window(s.end, self.rule.window, now, zone)
        ]
        attended = sum(1 for s in due if s.outcome in ATTENDED)
        rate = attended / len(due) if due else 1.0
        holds = len(due) >= self.rule.min_sessions and rate < self.rule.threshold
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=max(s.end for s in due) if holds else None,
            next_deadline=leaves_window([s.end for s in due], self.rule.window, now, zone),
            facts={
                "attended": str(attended),
                "scheduled": str(len(due)),
                "rate": f"{rate:.0%}",
                "threshold": f"{self.rule.threshold:.0%}",
                "window": format_duration(self.rule.window),
            },
        )


@register(DecliningFrequencyRule)
class DecliningFrequency(RuleKind[DecliningFrequencyRule]):
    """Attended sessions in the last ``window`` fewer than ``ratio`` x the window before."""

    def evaluate(self, timeline: Timeline, now: datetime) -> Condition:
        zone = ZoneInfo(timeline.zone)
        window = self.rule.window
        ends = [s.end for s in known(timeline, now) if s.outcome in ATTENDED]
        recent = [e for e in ends if in_window(e, window, now, zone)]
        earlier = [
            e
            for e in ends
            if not in_window(e, window, now, zone) and in_window(e, window + window, now, zone)
        ]
        holds = len(earlier) >= self.rule.min_previous and len(recent) < self.rule.ratio * len(
            earlier
        )
        moments = [*recent, *earlier]
        changes = [
            d
            for d in (
                leaves_window(moments, window, now, zone),
                leaves_window(moments, window + window, now, zone),
            )
            if d is not None
        ]
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=max(recent + earlier) if holds else None,
            next_deadline=min(changes, default=None),
            facts={
                "recent": str(len(recent)),
                "previous": str(len(earlier)),
                "ratio": f"{self.rule.ratio:g}",
                "window": format_duration(window),
            },
        )

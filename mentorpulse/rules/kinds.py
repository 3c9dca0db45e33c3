"""Rule kinds: one small class per ``kind:`` of rule, looked up by its config model.

A kind turns a pairing's session timeline, seen at a moment ``now`` through one shared
:class:`TimelineView`, into a :class:`Condition`; it never stores or sends anything. New
kinds register themselves with :func:`register` for their pydantic model, so adding one
never touches the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from mentorpulse.config.schema import (
    AttendanceDisputedRule,
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
)
from mentorpulse.config.schema import format_duration as _format_duration
from mentorpulse.model import (
    ATTENDED,
    LAST_ATTENDED_FACT,
    NEVER_ATTENDED,
    Outcome,
    attended_day,
)
from mentorpulse.text import local_time


class Session(Protocol):
    """What the rules read of one session: a :class:`SessionFact`, or a stored row with
    the same fields (evaluation hands the rules its rows as they are, rather than copy
    300,000 of them at 10,000 pairings)."""

    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def cancelled_by(self) -> str | None: ...
    @property
    def cancelled_hours_before(self) -> float | None: ...
    @property
    def missed_by(self) -> str | None: ...
    @property
    def disputed(self) -> bool: ...


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
    disputed: bool = False  # the pair answered its attendance check differently


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything a rule may look at for one pairing.

    Evaluation leaves out the sessions no configured kind reads (older than the longest
    :attr:`RuleKind.lookback`, save the anchors of :func:`holds_anchors`); ``explain`` and
    the backtest hand over every session.
    """

    pairing_key: str
    program: str
    mentor: str
    mentee: str
    started_on: date
    ended_on: date | None
    zone: str  # the pairing's time zone (mentor's zone, else program/global)
    sessions: tuple[Session, ...]  # sorted by start
    cadence: timedelta | None = None  # this pairing's own cadence (roster or YAML override)


class Facts(Mapping[str, str]):
    """A verdict's facts, worked out when first read: evaluation reads them only for a
    finding (a few in a hundred conditions at 10,000 pairings), explain always."""

    __slots__ = ("_facts", "_work")

    def __init__(self, work: Callable[[], dict[str, str]]) -> None:
        self._work: Callable[[], dict[str, str]] | None = work
        self._facts: dict[str, str] = {}

    def _worked(self) -> dict[str, str]:
        if self._work is not None:
            self._facts, self._work = self._work(), None
        return self._facts

    def __getitem__(self, name: str) -> str:
        return self._worked()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._worked())

    def __len__(self) -> int:
        return len(self._worked())

    def __repr__(self) -> str:
        return repr(self._worked())


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's verdict on one pairing at ``now``."""

    rule_id: str
    severity: str
    holds: bool
    since: datetime | None  # when the condition started to hold (the missed deadline)
    next_deadline: datetime | None  # when the verdict could next change without new data
    facts: Mapping[str, str] = field(default_factory=dict)  # human-readable, for explain
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
    def evaluate(self, view: TimelineView) -> Condition:
        """The rule's verdict on ``view.timeline`` at ``view.now`` (aware)."""

    @property
    def lookback(self) -> timedelta | None:
        """How long before ``now`` a session that ended may still count for this kind,
        beyond the view's anchors (see :func:`holds_anchors`): evaluation leaves out the
        sessions that ended earlier. None, the default: it may read all of them."""
        return None


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


# A rule's durations are a handful of values formatted for every pairing's facts (90,000
# calls at 10,000 pairings); the text of each is worked out once.
format_duration = lru_cache(maxsize=256)(_format_duration)

_NOT_SCHEDULED = frozenset({Outcome.CANCELLED, Outcome.RESCHEDULED})
_NOT_HELD = frozenset({Outcome.MISSED, Outcome.CANCELLED})


def start_of(timeline: Timeline, zone: ZoneInfo) -> datetime:
    """Midnight of the pairing's first day, in its own zone."""
    return datetime.combine(timeline.started_on, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TimelineView:
    """A pairing's timeline as every rule kind reads it at ``now``, walked once.

    Eight kinds each walking the sessions cost eight passes per pairing; the view is the
    one pass they share. Only sessions over by ``now`` count as known (so a backtest over
    past data sees the timeline the daemon saw at the time); sequences of sessions keep
    their order by start.
    """

    timeline: Timeline
    now: datetime
    zone: ZoneInfo
    start: datetime  # midnight of the pairing's first day, in its zone
    last_attended: Session | None  # the known attended session that ended last
    first_attended_end: datetime | None
    attended_ends: tuple[datetime, ...]  # known attended sessions' ends, sorted
    due_ends: tuple[datetime, ...]  # known attended, missed or cancelled: ends, sorted
    misses_run: tuple[Session, ...]  # missed or cancelled since the last attended one
    last_scheduled: datetime | None  # latest start by ``now`` of a session not called off
    next_scheduled: datetime | None  # earliest start after ``now`` of one not called off
    next_unfinished: datetime | None  # earliest start of one not called off nor over
    party_acts: tuple[tuple[str | None, datetime], ...]  # (who, when) missed or cancelled
    called_off: tuple[Session, ...]  # cancelled or rescheduled, with the notice known
    moments: tuple[datetime, ...]  # starts and ends after ``now``


def view_of(timeline: Timeline, now: datetime) -> TimelineView:
    """The one pass over ``timeline`` at ``now`` that every rule kind reads. In order of
    start, the first session ahead is the earliest, the last one by now the latest."""
    zone = ZoneInfo(timeline.zone)
    last: Session | None = None
    attended: list[datetime] = []
    not_held: list[datetime] = []
    run: list[Session] = []
    acts: list[tuple[str | None, datetime]] = []
    called_off: list[Session] = []
    moments: list[datetime] = []
    last_scheduled: datetime | None = None
    next_scheduled: datetime | None = None
    next_unfinished: datetime | None = None
    for s in sorted(timeline.sessions, key=_START):
        outcome, start, end = s.outcome, s.start, s.end
        if outcome in _NOT_SCHEDULED:
            if s.cancelled_hours_before is not None:
                called_off.append(s)
        elif start <= now:
            last_scheduled = start
        elif next_scheduled is None:
            next_scheduled = start
        if start > now:
            moments.append(start)
        if end > now:
            moments.append(end)
            if next_unfinished is None and outcome not in _NOT_SCHEDULED:
                next_unfinished = start
            if outcome in _NOT_HELD:
                acts.append(_act(s))
        elif outcome in ATTENDED:
            attended.append(end)
            if run:
                run = []
            if last is None or end > last.end:
                last = s
        elif outcome in _NOT_HELD:
            not_held.append(end)
            run.append(s)
            acts.append(_act(s))
    return TimelineView(
        timeline=timeline,
        now=now,
        zone=zone,
        start=start_of(timeline, zone),
        last_attended=last,
        first_attended_end=min(attended, default=None),
        attended_ends=tuple(sorted(attended)),
        due_ends=tuple(sorted(attended + not_held)),
        misses_run=tuple(run),
        last_scheduled=last_scheduled,
        next_scheduled=next_scheduled,
        next_unfinished=next_unfinished,
        party_acts=tuple(acts),
        called_off=tuple(called_off),
        moments=tuple(moments),
    )


_START = attrgetter("start")

# Beyond the longest lookback: ``in_window`` counts whole days on the wall clock, which
# may reach a DST shift (``_DST_SLACK``) further back than the elapsed lookback.
_LOOKBACK_MARGIN = timedelta(days=1)


def read_since(kinds: Iterable[RuleKind[Any]], now: datetime) -> datetime | None:
    """The earliest end of a session that ``kinds`` may read at ``now`` beyond the view's
    anchors (see :func:`holds_anchors`); None when one of them may read every session."""
    lookbacks = [kind.lookback for kind in kinds]
    longest = max((b for b in lookbacks if b is not None), default=None)
    if longest is None or None in lookbacks:
        return None
    return now - longest - _LOOKBACK_MARGIN


def holds_anchors(sessions: Iterable[Session], since: datetime, now: datetime) -> bool:
    """Whether a timeline's sessions that end or start after ``since``, with its first
    attended one, give the same :func:`view_of` at ``now`` as all of its sessions.

    They do when one of them was attended, started after ``since`` and is over by
    ``now``: every session left out starts before it, so the last attended session, the
    run of misses since it and the last scheduled start are among them; the kinds' windows
    hold ends after ``since`` only (:func:`read_since`); what lies ahead ends after ``now``.
    """
    return any(s.outcome in ATTENDED and s.start > since and s.end <= now for s in sessions)


def _act(s: Session) -> tuple[str | None, datetime]:
    """Who called off or missed a session, and from when it is known: a cancellation from
    when it was made, a no-show once it is over."""
    if s.outcome is Outcome.CANCELLED:
        if s.cancelled_hours_before is not None:
            return s.cancelled_by, s.start - timedelta(hours=max(s.cancelled_hours_before, 0))
        return s.cancelled_by, s.end
    return s.missed_by, s.end


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


def within(
    moments: Sequence[datetime], window: timedelta, now: datetime, zone: ZoneInfo
) -> Sequence[datetime]:
    """The sorted ``moments`` that lie :func:`in_window`, found by bisection: only those
    within the DST slack of the window's start are checked one by one."""
    end = bisect_right(moments, now)
    sure = min(bisect_right(moments, now - window + _DST_SLACK), end)
    out = min(bisect_right(moments, now - window - _DST_SLACK), sure)
    edge = [m for m in moments[out:sure] if in_window(m, window, now, zone)]
    return [*edge, *moments[sure:end]] if edge else moments[sure:end]


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

    @property
    def lookback(self) -> timedelta:
        return timedelta(0)  # the last attended session: an anchor

    def evaluate(self, view: TimelineView) -> Condition:
        zone, last = view.zone, view.last_attended
        if last is not None:
            anchor = last.end
            last_text = attended_day(last.start, zone).isoformat()
        else:
            anchor = view.start
            last_text = NEVER_ATTENDED
        every = self.every(view.timeline)
        deadline = add_local(anchor, every + self.grace, zone)
        upcoming = view.next_unfinished
        holds = view.now >= deadline
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=deadline if holds else None,
            next_deadline=None if holds else deadline,
            facts=Facts(
                lambda: {
                    LAST_ATTENDED_FACT: last_text,
                    "anchor": "last attended session" if last is not None else "pairing start",
                    "deadline": local_time(deadline, zone),
                    "every": format_duration(every),
                    "grace": format_duration(self.grace),
                    "next_scheduled": local_time(upcoming, zone) if upcoming else "none",
                }
            ),
        )


@register(FirstMeetingRule)
class FirstMeeting(RuleKind[FirstMeetingRule]):
    """No attended session within ``within`` of the pairing's start; clears once they meet."""

    @property
    def lookback(self) -> timedelta:
        return timedelta(0)  # the first attended session: an anchor

    def evaluate(self, view: TimelineView) -> Condition:
        zone, first = view.zone, view.first_attended_end
        deadline = add_local(view.start, self.rule.within, zone)
        holds = first is None and view.now >= deadline
        facts = Facts(
            lambda: {
                "started_on": view.timeline.started_on.isoformat(),
                "within": format_duration(self.rule.within),
                "deadline": local_time(deadline, zone),
                "first_attended": (
                    first.astimezone(zone).date().isoformat() if first is not None else "never"
                ),
            }
        )
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=deadline if holds else None,
            next_deadline=deadline if first is None and not holds else None,
            facts=facts,
        )


@register(NoUpcomingRule)
class NoUpcoming(RuleKind[NoUpcomingRule]):
    """Nothing scheduled to start within ``horizon`` of now."""

    @property
    def lookback(self) -> timedelta:
        return timedelta(0)  # the last and next scheduled sessions: anchors

    def evaluate(self, view: TimelineView) -> Condition:
        zone, upcoming, past = view.zone, view.next_scheduled, view.last_scheduled
        horizon_end = add_local(view.now, self.rule.horizon, zone)
        holds = upcoming is None or upcoming > horizon_end
        since = view.start if past is None else max(view.start, past)
        # While it holds, it clears by itself when the first future session comes into
        # the horizon; while it does not, it can change only when that session starts.
        clears = None
        if holds and upcoming is not None:
            clears = add_local(upcoming, -self.rule.horizon, zone)
            while add_local(clears, self.rule.horizon, zone) < upcoming:
                clears += timedelta(hours=1)  # the skipped hour of a DST change
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=since if holds else None,
            next_deadline=clears,
            facts=Facts(
                lambda: {
                    "horizon": format_duration(self.rule.horizon),
                    "next_scheduled": local_time(upcoming, zone) if upcoming else "none",
                    "last_scheduled": local_time(past, zone) if past else "never",
                }
            ),
        )


@register(ConsecutiveMissesRule)
class ConsecutiveMisses(RuleKind[ConsecutiveMissesRule]):
    """The latest ``count`` sessions that were due all ended missed or cancelled.

    A rescheduled session is not a miss (its rebooking stands in for it); ``unknown``
    outcomes neither break nor extend the run.
    """

    @property
    def lookback(self) -> timedelta:
        return timedelta(0)  # the run of misses since the last attended session: an anchor

    def evaluate(self, view: TimelineView) -> Condition:
        run = view.misses_run
        holds = len(run) >= self.rule.count
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=run[self.rule.count - 1].end if holds else None,
            next_deadline=None,
            facts=Facts(
                lambda: {
                    "count": str(self.rule.count),
                    "misses_in_a_row": str(len(run)),
                    "missed": ", ".join(
                        f"{local_time(s.start, view.zone)} {s.outcome.value}" for s in run[-5:]
                    )
                    or "none",
                }
            ),
        )


@register(PartyDisengagementRule)
class PartyDisengagement(RuleKind[PartyDisengagementRule]):
    """One party declined, cancelled or did not show ``count`` times within ``window``.

    The finding names the party (``mentor`` or ``mentee``, or both), which tells
    mentee-side from mentor-side disengagement.
    """

    @property
    def lookback(self) -> timedelta:
        return self.rule.window  # (acts are known from their time, within the window)

    def evaluate(self, view: TimelineView) -> Condition:
        timeline, zone, window = view.timeline, view.zone, self.rule.window
        acts: dict[str, list[datetime]] = {timeline.mentor: [], timeline.mentee: []}
        ahead: list[datetime] = []  # a cancellation dated after now counts from its time
        for who, at in view.party_acts:
            if who not in acts:
                continue
            if at > view.now:
                ahead.append(at)
            elif in_window(at, window, view.now, zone):
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
            next_deadline=min(
                filter(
                    None,
                    (
                        leaves_window(
                            acts[timeline.mentor] + acts[timeline.mentee], window, view.now, zone
                        ),
                        min(ahead, default=None),
                    ),
                ),
                default=None,
            ),
            facts=Facts(
                lambda: {
                    "party": " and ".join(_who(timeline, p) for p in parties) or "none",
                    "party_email": ", ".join(parties) or "none",
                    "mentor_count": str(len(acts[timeline.mentor])),
                    "mentee_count": str(len(acts[timeline.mentee])),
                    "count": str(self.rule.count),
                    "window": format_duration(window),
                }
            ),
        )


@register(LateCancellationsRule)
class LateCancellations(RuleKind[LateCancellationsRule]):
    """At least ``count`` sessions called off with less than ``notice`` within ``window``.

    A rescheduled session counts too: the slot was still dropped at short notice.
    """

    @property
    def lookback(self) -> timedelta:
        return self.rule.window  # (a session starting within it ends after its start)

    def evaluate(self, view: TimelineView) -> Condition:
        zone, window = view.zone, self.rule.window
        notice_hours = self.rule.notice.total_seconds() / 3600
        late = [
            s
            for s in view.called_off
            if s.cancelled_hours_before is not None
            and s.cancelled_hours_before < notice_hours
            and in_window(s.start, window, view.now, zone)
        ]
        holds = len(late) >= self.rule.count
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=late[-self.rule.count].start if holds else None,
            next_deadline=leaves_window([s.start for s in late], window, view.now, zone),
            facts=Facts(
                lambda: {
                    "late_cancellations": str(len(late)),
                    "count": str(self.rule.count),
                    "notice": format_duration(self.rule.notice),
                    "window": format_duration(window),
                    "cancelled_by": ", ".join(
                        sorted({_who(view.timeline, s.cancelled_by) for s in late})
                    )
                    or "none",
                }
            ),
        )


@register(AttendanceRateRule)
class AttendanceRate(RuleKind[AttendanceRateRule]):
    """Attended / scheduled below ``threshold`` over ``window``.

    Scheduled counts held, presumed held, missed and cancelled sessions; a rescheduled one
    is replaced by its rebooking and ``unknown`` ones are not judged.
    """

    @property
    def lookback(self) -> timedelta:
        return self.rule.window

    def evaluate(self, view: TimelineView) -> Condition:
        zone, window, now = view.zone, self.rule.window, view.now
        due = within(view.due_ends, window, now, zone)
        attended = len(within(view.attended_ends, window, now, zone))
        rate = attended / len(due) if due else 1.0
        holds = len(due) >= self.rule.min_sessions and rate < self.rule.threshold
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=due[-1] if holds else None,
            next_deadline=leaves_window(list(due), window, now, zone),
            facts=Facts(
                lambda: {
                    "attended": str(attended),
                    "scheduled": str(len(due)),
                    "rate": f"{rate:.0%}",
                    "threshold": f"{self.rule.threshold:.0%}",
                    "window": format_duration(window),
                }
            ),
        )


@register(DecliningFrequencyRule)
class DecliningFrequency(RuleKind[DecliningFrequencyRule]):
    """Attended sessions in the last ``window`` fewer than ``ratio`` x the window before."""

    @property
    def lookback(self) -> timedelta:
        return self.rule.window + self.rule.window  # the window and the one before

    def evaluate(self, view: TimelineView) -> Condition:
        zone, window, now = view.zone, self.rule.window, view.now
        both = within(view.attended_ends, window + window, now, zone)
        recent = len(within(both, window, now, zone))
        earlier = len(both) - recent
        holds = earlier >= self.rule.min_previous and recent < self.rule.ratio * earlier
        changes = [
            d
            for d in (
                leaves_window(list(both), window, now, zone),
                leaves_window(list(both), window + window, now, zone),
            )
            if d is not None
        ]
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=both[-1] if holds else None,
            next_deadline=min(changes, default=None),
            facts=Facts(
                lambda: {
                    "recent": str(recent),
                    "previous": str(earlier),
                    "ratio": f"{self.rule.ratio:g}",
                    "window": format_duration(window),
                }
            ),
        )


@register(AttendanceDisputedRule)
class AttendanceDisputed(RuleKind[AttendanceDisputedRule]):
    """The pair answered a session's attendance check differently (one yes, one no).

    Holds while such a session ended less than ``window`` ago; clears when one of them
    changes their answer (the session is judged anew) or the window passes.
    """

    @property
    def lookback(self) -> timedelta:
        return self.rule.window

    def evaluate(self, view: TimelineView) -> Condition:
        now, window, zone = view.now, self.rule.window, view.zone
        open_ = sorted(
            (s for s in view.timeline.sessions if s.disputed and s.end <= now < s.end + window),
            key=_START,
        )
        holds = bool(open_)
        return Condition(
            rule_id=self.rule.id,
            severity=self.rule.severity,
            holds=holds,
            since=min(s.end for s in open_) if holds else None,
            next_deadline=min(s.end + window for s in open_) if holds else None,
            facts=Facts(
                lambda: {
                    "disputed_sessions": ", ".join(local_time(s.start, zone) for s in open_)
                    or "none",
                    "answers": "the mentor and the mentee answered differently "
                    "(mentorpulse explain shows who said what)"
                    if holds
                    else "no dispute",
                    "window": format_duration(window),
                }
            ),
        )

"""Evidence → outcome: did a session take place, and how sure are we?

"Booked" is not "held". Each party's own calendar copy speaks for that party's RSVP, a
cancellation says who cancelled and how late, a moved occurrence and a rebooking are
recognised, and a past session nobody declined is *presumed* held (confirm by default).
Every verdict carries the evidence that decided it, strongest first, so ``explain`` and
reports can say why.

Strength scale (shared with later evidence sources): 3 conference log, 2 a participant's
own confirmation or dispute, 1 calendar state, 0 time passed.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from mentorpulse.model import (
    CONFIRMATION_EVIDENCE,
    DISPUTED_EVIDENCE,
    AttendanceEvidence,
    EventRecord,
    EventStatus,
    Outcome,
    ParticipantAnswer,
    Response,
    zone_or_utc,
)
from mentorpulse.text import rfc3339_utc

STRENGTH_CONFERENCE = 3
STRENGTH_PARTICIPANT = 2
STRENGTH_CALENDAR = 1
STRENGTH_TIME = 0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JOINED_ENOUGH_MAX_SECONDS = 600
_SYSTEM_NAMES = {"google_meet": "the Google Meet call", "teams": "the Teams meeting"}


@dataclass(frozen=True, slots=True)
class Proof:
    """One piece of evidence about a session, worded for a human."""

    kind: str  # cancelled, declined, accepted, tentative, needs_action, moved, time_passed, …
    party: str | None  # whose action it was (email), if any
    detail: str  # e.g. "mentee declined in their own calendar"
    strength: int  # see the module docstring


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one session; ``evidence[0]`` is what decided it."""

    outcome: Outcome
    confidence: float  # 0..1
    evidence: tuple[Proof, ...]
    cancelled_by: str | None = None
    cancelled_hours_before: float | None = None


def session_key(record: EventRecord) -> str:
    """Identity of a meeting across the mentor's and the mentee's calendar copies.

    Copies share the iCal UID; an occurrence of a series is told apart by its original
    start, which survives the occurrence being moved.
    """
    original = record.original_start
    if original is None and record.series_id is not None:
        original = record.start
    if original is None:
        return record.ical_uid
    return f"{record.ical_uid}#{rfc3339_utc(original)}"


# Copies of one meeting under different UIDs start and end within this of each other.
FOLD_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One UID's copies of a meeting, as folding compares them."""

    key: str
    start: datetime
    end: datetime
    cancelled: bool
    calendars: frozenset[str]


def fold_copies(
    groups: Mapping[str, Sequence[EventRecord]], *, keep: Container[str] = ()
) -> dict[str, list[EventRecord]]:
    """One meeting is one session whatever UID each of its copies carries.

    ``groups`` are a pairing's copies by :func:`session_key`. A meeting copied into the
    mentee's own calendar, or re-exported by another client, reaches us under another
    UID: groups that start and end within :data:`FOLD_TOLERANCE` of each other are folded
    into one session, so each copy still gives its owner's own answer. They are not
    folded when one calendar holds both and only one of them is cancelled: that is a
    meeting called off and booked again in the same slot (a reschedule, not a copy).
    Meetings of the pair at other times of the day stay apart.

    The folded session keeps a key from ``keep`` (the keys already stored) when it has
    one, else the smallest: a session's id does not change when a late copy joins it.
    """
    slots = sorted((_slot(key, copies) for key, copies in groups.items()), key=_slot_order)
    clusters: list[list[_Slot]] = []
    for slot in slots:
        target = _cluster_for(slot, clusters)
        if target is None:
            clusters.append([slot])
        else:
            target.append(slot)
    folded: dict[str, list[EventRecord]] = {}
    for cluster in clusters:
        keys = sorted(m.key for m in cluster)
        chosen = next((k for k in keys if k in keep), keys[0])
        folded[chosen] = [copy for k in keys for copy in groups[k]]
    return folded


def _slot(key: str, copies: Sequence[EventRecord]) -> _Slot:
    newest = max(copies, key=_recency)
    return _Slot(
        key,
        newest.start,
        newest.end,
        newest.status is EventStatus.CANCELLED,
        frozenset(c.calendar_owner or f"source:{c.source_id}" for c in copies),
    )


def _slot_order(slot: _Slot) -> tuple[datetime, datetime, str]:
    return (slot.start, slot.end, slot.key)


def _cluster_for(slot: _Slot, clusters: list[list[_Slot]]) -> list[_Slot] | None:
    """The cluster ``slot`` is a copy of, if any (see :func:`fold_copies`)."""
    for cluster in reversed(clusters):  # clusters are in order of their first start
        first = cluster[0]
        if slot.start - first.start > FOLD_TOLERANCE:
            return None
        if abs(slot.end - first.end) <= FOLD_TOLERANCE and all(
            m.cancelled == slot.cancelled or m.calendars.isdisjoint(slot.calendars) for m in cluster
        ):
            return cluster
    return None


def _recency(record: EventRecord) -> tuple[int, datetime, str, str]:
    # source/provider ids only make the order total, so the choice is deterministic.
    return (record.sequence, record.updated or _EPOCH, record.source_id, record.provider_id)


def format_moment(moment: datetime, zone: str | None) -> str:
    """``Tue 3 Mar 10:00`` in ``zone``: how people name a meeting slot."""
    local = moment.astimezone(zone_or_utc(zone))
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def _is_organizer_copy(record: EventRecord) -> bool:
    return record.organizer is not None and record.calendar_owner == record.organizer


@dataclass(frozen=True, slots=True)
class _Rsvp:
    party: str
    role: str  # "mentor" / "mentee"
    response: Response | None
    own: bool  # taken from the party's own calendar copy
    copy_owner: str | None


def _rsvp(copies: Sequence[EventRecord], party: str, role: str) -> _Rsvp:
    """The party's response: their own copy wins; else the organizer's, else the newest."""
    own = sorted((c for c in copies if c.calendar_owner == party), key=_recency, reverse=True)
    for copy in own:
        response = copy.response_of(party)
        if response is not None:
            return _Rsvp(party, role, response, own=True, copy_owner=party)
    others = sorted(
        (c for c in copies if c.calendar_owner != party),
        key=lambda c: (_is_organizer_copy(c), _recency(c)),
        reverse=True,
    )
    for copy in others:
        response = copy.response_of(party)
        if response is not None:
            return _Rsvp(party, role, response, own=False, copy_owner=copy.calendar_owner)
    return _Rsvp(party, role, None, own=False, copy_owner=None)


def _rsvp_proof(rsvp: _Rsvp) -> Proof:
    if rsvp.response is None:
        return Proof("no_response", rsvp.party, f"{rsvp.role} has no response on record", 1)
    words = {
        Response.ACCEPTED: "accepted",
        Response.DECLINED: "declined",
        Response.TENTATIVE: "answered tentatively",
        Response.NEEDS_ACTION: "has not answered",
    }[rsvp.response]
    if rsvp.own:
        where = "in their own calendar"
    elif rsvp.copy_owner:
        where = f"in {rsvp.copy_owner}'s calendar"
    else:
        where = "in a calendar copy of unknown owner"
    return Proof(str(rsvp.response), rsvp.party, f"{rsvp.role} {words} {where}", STRENGTH_CALENDAR)


def _moved_proofs(copies: Sequence[EventRecord]) -> list[Proof]:
    seen: set[tuple[datetime, datetime]] = set()
    proofs: list[Proof] = []
    for copy in sorted(copies, key=_recency, reverse=True):
        original = copy.original_start
        if original is None or original == copy.start or (original, copy.start) in seen:
            continue
        seen.add((original, copy.start))
        detail = (
            f"moved from {format_moment(original, copy.zone)} "
            f"to {format_moment(copy.start, copy.zone)}"
        )
        proofs.append(Proof("moved", copy.organizer, detail, STRENGTH_CALENDAR))
    return proofs


def _hours_phrase(hours: float) -> str:
    if hours >= 0:
        return f"{hours:.1f} hours before the start"
    return f"{-hours:.1f} hours after the start"


def _strongest_first(proofs: Sequence[Proof]) -> tuple[Proof, ...]:
    # sorted() is stable: among equal strengths the deciding proof stays first.
    return tuple(sorted(proofs, key=lambda p: -p.strength))


def judge(
    copies: Sequence[EventRecord],
    *,
    mentor: str,
    mentee: str,
    now: datetime,
    conference: Sequence[AttendanceEvidence] = (),
    answers: Sequence[ParticipantAnswer] = (),
) -> Verdict:
    """Judge one meeting from every stored copy of it (usually the mentor's and mentee's).

    ``conference`` is what a conference system logged for the meeting (empty when it has
    no log): once the meeting has ended it outranks every calendar state but a
    cancellation. ``answers`` (the parties' own, to an attendance check) rank below a log
    and above RSVPs: yes → held, no → missed, one of each → unknown (disputed). Nobody is
    asked about a cancelled session; one cancelled later stays cancelled.
    """
    if not copies:
        return Verdict(Outcome.UNKNOWN, 0.0, (Proof("no_copies", None, "no calendar copy", 0),))
    newest = max(copies, key=_recency)
    start, end = newest.start, newest.end
    moved = _moved_proofs(copies)

    cancelled = _cancellation(copies, newest)
    if cancelled is not None:
        return _cancelled_verdict(cancelled, start, moved)

    rsvps = [_rsvp(copies, mentor, "mentor"), _rsvp(copies, mentee, "mentee")]
    rsvp_proofs = [_rsvp_proof(r) for r in rsvps]
    declined = [r for r in rsvps if r.response is Response.DECLINED]
    both_accepted = all(r.response is Response.ACCEPTED for r in rsvps)

    if now < end:
        confidence = 1.0 if both_accepted else 0.4 if declined else 0.7
        # A decline is the most telling calendar state, so it leads the evidence.
        ordered = sorted(rsvp_proofs, key=lambda p: p.kind != "declined")
        return Verdict(Outcome.UPCOMING, confidence, _strongest_first([*ordered, *moved]))

    ended = f"the session ended {format_moment(end, newest.zone)}"
    calendar = [*rsvp_proofs, *moved, Proof("time_passed", None, ended, STRENGTH_TIME)]
    said = _answer_proofs(answers, mentor=mentor, mentee=mentee)
    if conference:
        return _judge_by_log(
            conference,
            mentor=mentor,
            mentee=mentee,
            start=start,
            end=end,
            calendar=[*(proof for _, proof in said), *calendar],
        )
    if said:
        return _judged_by_answers(said, calendar)
    if declined:
        return _declined_verdict(declined, calendar)
    confidence = 0.8 if both_accepted else 0.6
    return Verdict(Outcome.PRESUMED_HELD, confidence, _strongest_first(calendar))


def _answer_proofs(
    answers: Sequence[ParticipantAnswer], *, mentor: str, mentee: str
) -> list[tuple[bool, Proof]]:
    """The pair's answers (yes or no) as evidence, the mentor's first; anyone else's are
    ignored."""
    proofs = []
    for party, role in ((mentor, "mentor"), (mentee, "mentee")):
        answer = next((a for a in answers if a.email == party), None)
        if answer is None:
            continue
        said = "it took place" if answer.happened else "it did not take place"
        on = answer.answered_at
        detail = f"{role} answered that {said} ({on.day} {on:%b %Y})"
        proof = Proof(CONFIRMATION_EVIDENCE, party, detail, STRENGTH_PARTICIPANT)
        proofs.append((answer.happened, proof))
    return proofs


def _judged_by_answers(said: list[tuple[bool, Proof]], calendar: list[Proof]) -> Verdict:
    """Held on a yes, missed on a no; the parties disagreeing leave it unknown (disputed)."""
    proofs = [proof for _, proof in said]
    answers = {happened for happened, _ in said}
    confidence = 0.95 if len(said) > 1 else 0.9  # both parties said the same: surer
    if answers == {True, False}:
        (mentor_said, _), (mentee_said, _) = said  # both answered: the mentor's first
        words = (
            f"disputed: the mentor says it {'took place' if mentor_said else 'did not'}, "
            f"the mentee says it {'took place' if mentee_said else 'did not'}"
        )
        dispute = Proof(DISPUTED_EVIDENCE, None, words, STRENGTH_PARTICIPANT)
        return Verdict(Outcome.UNKNOWN, 0.5, _strongest_first([dispute, *proofs, *calendar]))
    outcome = Outcome.HELD if answers == {True} else Outcome.MISSED
    return Verdict(outcome, confidence, _strongest_first([*proofs, *calendar]))


def _cancelled_verdict(cancelled: EventRecord, start: datetime, moved: list[Proof]) -> Verdict:
    """Cancelled, by whom and how long before ``start`` when the copy says so."""
    by = cancelled.organizer or cancelled.calendar_owner
    hours = None
    if cancelled.updated is not None:
        hours = round((start - cancelled.updated).total_seconds() / 3600, 2)
    detail = f"cancelled by {by or 'unknown'}"
    if hours is not None:
        detail += f" {_hours_phrase(hours)}"
    proof = Proof("cancelled", by, detail, STRENGTH_CALENDAR)
    return Verdict(
        Outcome.CANCELLED,
        0.9,
        _strongest_first([proof, *moved]),
        cancelled_by=by,
        cancelled_hours_before=hours,
    )


def _declined_verdict(declined: list[_Rsvp], calendar: list[Proof]) -> Verdict:
    """Missed: a past session someone declined; their own calendar's word counts most."""
    declined.sort(key=lambda r: not r.own)
    decider = declined[0]
    confidence = 0.8 if decider.own else 0.6
    first = _rsvp_proof(decider)
    rest = [p for p in calendar if p != first]
    return Verdict(Outcome.MISSED, confidence, _strongest_first([first, *rest]))


def joined_enough(seconds: int, start: datetime, end: datetime) -> bool:
    """Present long enough to count: a quarter of the slot, and never more than 10 minutes."""
    scheduled = max((end - start).total_seconds(), 0.0)
    return seconds >= min(JOINED_ENOUGH_MAX_SECONDS, max(60.0, scheduled / 4))


def _judge_by_log(
    conference: Sequence[AttendanceEvidence],
    *,
    mentor: str,
    mentee: str,
    start: datetime,
    end: datetime,
    calendar: Sequence[Proof],
) -> Verdict:
    seconds: dict[str, int] = {}
    system = ""
    for item in conference:
        seconds[item.email] = seconds.get(item.email, 0) + item.seconds_present
        system = system or item.system
    where = _SYSTEM_NAMES.get(system, "the online meeting")
    proofs = []
    absent = []
    for party, role in ((mentor, "mentor"), (mentee, "mentee")):
        present = seconds.get(party, 0)
        if joined_enough(present, start, end):
            minutes = round(present / 60)
            proofs.append(
                Proof(
                    "joined", party, f"{role} was in {where} for {minutes} min", STRENGTH_CONFERENCE
                )
            )
        elif present:
            absent.append(
                Proof(
                    "no_show",
                    party,
                    f"{role} was in {where} for under a minute"
                    if present < 60
                    else f"{role} was in {where} for only {round(present / 60)} min",
                    STRENGTH_CONFERENCE,
                )
            )
        else:
            absent.append(
                Proof("no_show", party, f"{role} never joined {where}", STRENGTH_CONFERENCE)
            )
    if absent:
        return Verdict(Outcome.MISSED, 0.95, _strongest_first([*absent, *proofs, *calendar]))
    return Verdict(Outcome.HELD, 0.95, _strongest_first([*proofs, *calendar]))


def _cancellation(copies: Sequence[EventRecord], newest: EventRecord) -> EventRecord | None:
    """The copy that proves the meeting was cancelled, if the cancellation is authoritative.

    An attendee's copy alone saying "cancelled" is not enough (some clients mark a removed
    invitation that way); the newest copy or the organizer's own copy must say so.
    """
    if newest.status is EventStatus.CANCELLED:
        return newest
    by_organizer = [
        c for c in copies if c.status is EventStatus.CANCELLED and _is_organizer_copy(c)
    ]
    return max(by_organizer, key=_recency) if by_organizer else None


def mark_rescheduled(
    sessions: Sequence[tuple[str, datetime, Verdict]],
    *,
    window: timedelta,
    zone: str | None = None,
) -> dict[str, Verdict]:
    """Pair each cancelled session of ONE pairing with the rebooking that replaced it.

    A cancelled session becomes ``rescheduled`` when another, not cancelled, session of the
    same pairing starts less than ``window`` from it (either side) and is not an occurrence
    of the same series (those slots were booked anyway); each rebooking absorbs at most
    one cancellation, the closest first. Sessions already marked rescheduled are
    re-derived, so a rebooking that was itself cancelled later turns its predecessor back
    into ``cancelled``. Returns new verdicts only for the keys whose verdict changes;
    ``zone`` only words the evidence.
    """
    cancellations = sorted(
        (s for s in sessions if s[2].outcome in (Outcome.CANCELLED, Outcome.RESCHEDULED)),
        key=lambda s: (s[1], s[0]),
    )
    candidates = [
        s for s in sessions if s[2].outcome not in (Outcome.CANCELLED, Outcome.RESCHEDULED)
    ]
    used: set[str] = set()
    changes: dict[str, Verdict] = {}
    for key, start, verdict in cancellations:
        options = [
            c
            for c in candidates
            if c[0] not in used and _series(c[0]) != _series(key) and abs(c[1] - start) < window
        ]
        # Closest first; on a tie prefer the later one (rebookings usually come after).
        options.sort(key=lambda c: (abs(c[1] - start), -c[1].timestamp(), c[0]))
        base = _without_rebooking(verdict)
        if options:
            replacement = options[0]
            used.add(replacement[0])
            proof = Proof(
                "rebooked",
                None,
                f"rebooked for {format_moment(replacement[1], zone)}",
                STRENGTH_CALENDAR,
            )
            new = replace(base, outcome=Outcome.RESCHEDULED, evidence=(proof, *base.evidence))
        else:
            new = replace(base, outcome=Outcome.CANCELLED)
        if new != verdict:
            changes[key] = new
    return changes


def _series(key: str) -> str:
    """The iCal UID part of a session key: what occurrences of one series share."""
    return key.partition("#")[0]


def _without_rebooking(verdict: Verdict) -> Verdict:
    return replace(verdict, evidence=tuple(p for p in verdict.evidence if p.kind != "rebooked"))

"""Attendance checks: ask the pair whether a session took place, and keep their answers.

Calendars say a meeting was booked and nobody declined; only the people in it can say it
happened. For a program with ``attendance_check``, each asked party gets one email per
session, ever (idempotency key ``answer:<session id>:<email>``), with two signed links.
Opening a link records nothing (mail scanners open every link): the page it shows POSTs
the answer, which :func:`answer` keeps and judges at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session as Db

from mentorpulse.config.schema import AttendanceCheck, Program
from mentorpulse.notify.outbox import enqueue, sender_domain
from mentorpulse.notify.route import Notification
from mentorpulse.notify.timing import digest_due, next_send_time, zone
from mentorpulse.signing import ANSWER, BadToken, Signer
from mentorpulse.stages.context import Context
from mentorpulse.stages.sessions import rebuild_pairings
from mentorpulse.storage import answers as stored
from mentorpulse.storage.answers import AskedSession
from mentorpulse.storage.batch import chunks
from mentorpulse.storage.keys import signing_keys
from mentorpulse.storage.outbox import queued_keys

log = structlog.get_logger(__name__)

TEMPLATE = "attendance_check"
QUESTION_PREFIX = "answer:"  # of each question's idempotency key
# A token outlives its question by this much, so a late click says "closed" (with the
# day it closed) rather than "expired"; the deadline inside the token decides.
_TOKEN_SLACK = timedelta(days=30)


def question_key(session_id: int, email: str) -> str:
    """The outbox key of one question: one per session per person, ever."""
    return f"{QUESTION_PREFIX}{session_id}:{email.lower()}"


def questions_to_keep(ctx: Context, now: datetime) -> tuple[str, datetime]:
    """The outbox rows a purge must keep: questions (key prefix) queued since the instant
    returned. A session is asked about until ``after + answer_within`` past its end; a
    question row younger than that, once purged, would let the next notify run ask again."""
    windows = [
        p.attendance_check.after + p.attendance_check.answer_within
        for p in ctx.config.programs
        if p.attendance_check is not None
    ]
    return QUESTION_PREFIX, now - max(windows, default=timedelta(0))


def queue_attendance_checks(ctx: Context, db: Db, now: datetime) -> int:
    """Queue the questions that are due (in the caller's transaction); returns how many
    rows were new. Called by the notify stage, so ``notify`` and the service's notify job
    send them with no schedule of their own."""
    moot = stored.cancel_moot_questions(db, TEMPLATE, now=now)
    if moot:
        log.info("attendance_checks_cancelled", questions=moot)
    programs = [p for p in ctx.config.programs if p.attendance_check is not None]
    if not programs:
        return 0
    signer = Signer(signing_keys(db), ANSWER)
    notes: list[Notification] = []
    for program in programs:
        check = program.attendance_check
        assert check is not None
        due = stored.sessions_to_ask(
            db, program.id, ended_after=now - check.answer_within, ended_before=now - check.after
        )
        asked = _already_asked(db, due, check)
        for session in due:
            notes += _questions(
                ctx,
                program=program,
                check=check,
                session=session,
                signer=signer,
                now=now,
                asked=asked,
            )
    if not notes:
        return 0
    queued = enqueue(db, notes, now=now, domain=sender_domain(ctx.config.notify.sender))
    if queued:
        log.info("attendance_checks_queued", questions=queued)
    return queued


def _questions(
    ctx: Context,
    *,
    program: Program,
    check: AttendanceCheck,
    session: AskedSession,
    signer: Signer,
    now: datetime,
    asked: set[str],
) -> list[Notification]:
    deadline = session.end + check.answer_within
    out = []
    for role in check.ask:
        email, name, timezone = _party(session, role)
        if question_key(session.id, email) in asked:
            continue
        other_role = "mentee" if role == "mentor" else "mentor"
        other_email, other_name, _ = _party(session, other_role)
        tz = zone(timezone, ctx.config.timezone)
        token = signer.sign({"s": session.id, "e": email.lower(), "d": int(deadline.timestamp())})
        link = f"{ctx.config.service.http.base_url}answer/{token}"
        payload: dict[str, object] = {
            "recipient_name": name,
            "recipient_role": role,
            "other_name": other_name,
            "other_email": other_email,
            "mentor_name": session.mentor_name,
            "mentor_email": session.mentor_email,
            "mentee_name": session.mentee_name,
            "mentee_email": session.mentee_email,
            "program": program.id,
            "program_name": session.program_name or program.id,
            "session_id": session.id,
            "when_display": when_display(session.start, tz),
            "closes_display": when_display(deadline, tz),
            "yes_url": f"{link}?a=yes",
            "no_url": f"{link}?a=no",
        }
        due = digest_due(now, tz, check.digest) if check.digest else now
        if check.digest:
            payload["digest_window"] = int(check.digest.total_seconds())
        send_at = next_send_time(due, tz, ctx.config.notify.send_window)
        send_by = deadline - check.margin  # later, and the question arrives (nearly) closed
        if send_at > send_by:
            # debug: each notify run meets it again until its window passes
            log.debug("attendance_check_skipped", session=session.id, role=role, reason="late")
            continue
        payload["send_by"] = int(send_by.timestamp())  # held back past it: cancelled
        out.append(
            Notification(
                recipient=email,
                template=TEMPLATE,
                idempotency_key=question_key(session.id, email),
                payload=payload,
                due=send_at,
                digest=check.digest is not None,
            )
        )
    return out


def _already_asked(db: Db, due: list[AskedSession], check: AttendanceCheck) -> set[str]:
    """The questions of ``due`` that have their outbox row: every notify run meets a
    session again for ``answer_within``, and signs and renders only what is new."""
    keys = [question_key(s.id, _party(s, role)[0]) for s in due for role in check.ask]
    return {key for part in chunks(keys) for key in queued_keys(db, part)}


def _party(session: AskedSession, role: str) -> tuple[str, str | None, str | None]:
    if role == "mentor":
        return session.mentor_email, session.mentor_name, session.mentor_timezone
    return session.mentee_email, session.mentee_name, session.mentee_timezone


def when_display(moment: datetime, tz: Any) -> str:
    """``Tue 3 Mar, 10:00`` on the reader's clock: how people name a meeting slot."""
    local = moment.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b}, {local:%H:%M}"


# ---- answering (the HTTP pages call these) -------------------------------------------


@dataclass(frozen=True)
class Question:
    """What an answer page shows: the session as its reader knows it, and their answer."""

    session_id: int
    email: str
    role: str  # mentor / mentee
    other: str  # the other party's name (or address)
    when: str  # "Tue 3 Mar, 10:00" in the reader's zone
    closes: str  # when answers stop counting, in the reader's zone
    program_name: str
    current: bool | None  # their answer so far, if any


class LinkRefused(Exception):
    """A link that cannot be used: ``expired`` (or the question closed), or invalid.
    Never carries the token."""

    def __init__(self, reason: str, *, expired: bool, closed_on: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired
        self.closed_on = closed_on


def read_link(ctx: Context, db: Db, token: str) -> Question:
    """The question a link asks (raises :class:`LinkRefused`); records nothing."""
    session_id, email, deadline = _claims(ctx, db, token)
    session = stored.asked_session(db, session_id)
    if session is None:
        raise LinkRefused("session gone", expired=False)
    roles = [r for r in ("mentor", "mentee") if _party(session, r)[0].lower() == email]
    if not roles:
        raise LinkRefused("not a party of the session", expired=False)
    role = roles[0]
    own_zone = _party(session, role)[2]
    tz = zone(own_zone, ctx.config.timezone)
    if ctx.clock() >= deadline:
        raise LinkRefused("question closed", expired=True, closed_on=when_display(deadline, tz))
    other_email, other_name, _ = _party(session, "mentee" if role == "mentor" else "mentor")
    current = stored.answers(db, sessions=[session_id]).get(session_id, [])
    mine = next((a.happened for a in current if a.email == email), None)
    return Question(
        session_id=session_id,
        email=email,
        role=role,
        other=other_name or other_email,
        when=when_display(session.start, tz),
        closes=when_display(deadline, tz),
        program_name=session.program_name or session.program_id,
        current=mine,
    )


def answer(ctx: Context, token: str, *, happened: bool) -> Question:
    """Keep the answer a link's page POSTed and judge the session's pairing again now, so
    its outcome shows at once; the rules see it at their next run. Raises
    :class:`LinkRefused` (expired, closed or invalid) before writing anything."""
    now = ctx.clock()
    with ctx.db.begin() as db:
        question = read_link(ctx, db, token)
        changed = stored.record_answer(
            db, question.session_id, question.email, happened=happened, now=now
        )
        session = stored.asked_session(db, question.session_id)
    if changed and session is not None:
        _judge_now(ctx, session.pairing_id)
    log.info(
        "attendance_answered",
        session=question.session_id,
        role=question.role,
        answer="yes" if happened else "no",
        changed=changed,
    )
    return Question(**{**question.__dict__, "current": happened})


@dataclass(frozen=True)
class QueuedQuestion:
    """A question already queued: who it asks, about which session, and its token."""

    session_id: int
    recipient: str
    role: str
    token: str


def queued_questions(ctx: Context) -> list[QueuedQuestion]:
    """The attendance questions in the outbox, by session then recipient: what
    ``demo --answer`` answers through :func:`answer`, as a person would by their link."""
    with ctx.db() as db:
        rows = stored.questions_queued(db, TEMPLATE)
    found = []
    for recipient, payload in rows:
        url = str(payload.get("yes_url", ""))
        token = url.rpartition("/answer/")[2].partition("?")[0]
        session_id = payload.get("session_id")
        if token and isinstance(session_id, int):
            role = str(payload.get("recipient_role", ""))
            found.append(QueuedQuestion(session_id, recipient, role, token))
    return sorted(found, key=lambda q: (q.session_id, q.recipient))


def _judge_now(ctx: Context, pairing_id: int) -> None:
    """Judge the pairing's sessions again, in a transaction of its own: the answer is kept
    whatever happens here (say a sessions run of the daemon judging the same pairing at
    the same moment), and its pairing stays flagged for the next sessions run."""
    try:
        with ctx.db.begin() as db:
            rebuild_pairings(ctx, db, [pairing_id])
    except Exception as exc:  # the answer is stored; the sessions stage will judge it
        log.warning("answer_judged_later", pairing=pairing_id, error=type(exc).__name__)


def _claims(ctx: Context, db: Db, token: str) -> tuple[int, str, datetime]:
    """Session id, address and deadline a token was signed for (or :class:`LinkRefused`)."""
    signer = Signer(signing_keys(db), ANSWER)
    try:
        claims = signer.read(token, max_age=_max_age(ctx))
    except BadToken as exc:
        raise LinkRefused(exc.reason, expired=exc.expired) from None
    session_id, email, deadline = claims.get("s"), claims.get("e"), claims.get("d")
    if not (isinstance(session_id, int) and isinstance(email, str) and isinstance(deadline, int)):
        raise LinkRefused("token invalid", expired=False)
    return session_id, email.lower(), datetime.fromtimestamp(deadline, UTC)


def _max_age(ctx: Context) -> timedelta:
    """The longest a token may be honoured: it was signed after its session ended, so
    the longest ``answer_within`` configured (plus a slack, so a late click reads "closed
    on ..."). The deadline signed into each token is what closes its question."""
    windows = [p.attendance_check.answer_within for p in ctx.config.programs if p.attendance_check]
    return max(windows, default=timedelta(days=7)) + _TOKEN_SLACK


__all__ = [
    "TEMPLATE",
    "LinkRefused",
    "Question",
    "QueuedQuestion",
    "answer",
    "question_key",
    "questions_to_keep",
    "queue_attendance_checks",
    "queued_questions",
    "read_link",
    "when_display",
]

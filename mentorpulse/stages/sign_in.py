"""Dashboard sign-in: who may sign in, and the magic link sent to them.

A link is a signed token (:data:`mentorpulse.signing.SIGN_IN`) holding the email and a
random nonce; the nonce is kept when the link is sent and marked when it is used, so a
link signs in once, within :data:`LINK_LIFETIME`. The email goes through the outbox like
every other (idempotency key per link, Message-ID from it), and is sent at once by the
process that queued it, so nobody waits for the next notify run; if that send fails, the
notify stage retries it as any other row.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import structlog

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.notify.outbox import claim_one, enqueue, mark_failed, mark_sent, sender_domain
from mentorpulse.notify.render import RenderError, render
from mentorpulse.notify.route import Notification, Router
from mentorpulse.notify.transport import SendResult, build_transport
from mentorpulse.signing import SIGN_IN, BadToken, Signer
from mentorpulse.stages.context import Context
from mentorpulse.stages.notify import template_dir
from mentorpulse.storage import outbox as stored_outbox
from mentorpulse.storage import sign_in as stored
from mentorpulse.storage.keys import signing_keys

log = structlog.get_logger(__name__)

LINK_LIFETIME = timedelta(minutes=15)
TEMPLATE = "sign_in"
# At most this many links per address per LINK_LIFETIME: the sign-in form is open to
# anyone, and must not become a way to flood an admin's mailbox.
LINKS_PER_LIFETIME = 5


@dataclass(frozen=True, slots=True)
class Viewer:
    """Someone who may sign in: HR (every program) or the admin of some programs."""

    email: str
    hr: bool
    programs: frozenset[str]  # the programs they admin (HR: every program anyway)

    def sees(self, program_id: str) -> bool:
        return self.hr or program_id in self.programs

    def visible(self, config: MentorpulseConfig) -> list[str]:
        """The program ids this viewer may see, in config order."""
        return [p.id for p in config.programs if self.sees(p.id)]


def viewers(config: MentorpulseConfig) -> dict[str, Viewer]:
    """Everyone who may sign in, by lower-cased email: the addresses ``notify.hr`` resolves
    to, and each program's ``admins`` (contact names or addresses), resolved as the
    notifier resolves them."""
    router = Router.from_config(config)
    hr = {p.email.lower() for p in router.report_recipients(["hr"])} if _has_hr(config) else set()
    admin_of: dict[str, set[str]] = {}
    for program in config.programs:
        for person in router.report_recipients(program.admins):
            admin_of.setdefault(person.email.lower(), set()).add(program.id)
    return {
        email: Viewer(email, email in hr, frozenset(admin_of.get(email, ())))
        for email in hr | admin_of.keys()
    }


def _has_hr(config: MentorpulseConfig) -> bool:
    """Whether ``notify.hr`` names anyone (its default, ``hr``, needs a contact named hr)."""
    return config.notify.hr != ("hr",) or "hr" in config.contacts


def viewer(config: MentorpulseConfig, email: str) -> Viewer | None:
    """The viewer ``email`` is, if it may sign in."""
    return viewers(config).get(email.strip().lower())


def send_link(ctx: Context, email: str, *, base_url: str) -> bool:
    """Send a sign-in link to ``email`` if it may sign in (and has not asked too often).

    Returns whether a link was queued; the caller never tells the person which (the form
    answers the same either way, so it does not reveal who may sign in).
    """
    email = email.strip().lower()
    person = viewer(ctx.config, email)
    if person is None:
        log.info("sign_in_refused", reason="not allowed", domain=email.rpartition("@")[2])
        return False
    now = ctx.clock()
    nonce = secrets.token_urlsafe(16)
    key = f"sign-in:{nonce}"
    with ctx.db.begin() as db:
        if stored.links_since(db, email, now - LINK_LIFETIME) >= LINKS_PER_LIFETIME:
            log.warning("sign_in_throttled", domain=email.rpartition("@")[2])
            return False
        stored.forget_links(db, before=now - timedelta(days=1))
        token = Signer(signing_keys(db), SIGN_IN).sign({"email": email, "nonce": nonce})
        stored.record_link(db, nonce=nonce, email=email, now=now, expires_at=now + LINK_LIFETIME)
        note = Notification(
            recipient=email,
            template=TEMPLATE,
            idempotency_key=key,
            payload={
                "recipient_name": _name(ctx.config, email),
                "link": f"{base_url}sign-in/{token}",
                "minutes": int(LINK_LIFETIME.total_seconds() // 60),
                "hr": person.hr,
            },
            due=now,
        )
        enqueue(db, [note], now=now, domain=sender_domain(ctx.config.notify.sender))
        row_id = stored_outbox.id_of(db, key)
    log.info("sign_in_link_queued", message_row=row_id)
    if row_id is not None:
        _send_now(ctx, row_id)
    return True


def _name(config: MentorpulseConfig, email: str) -> str | None:
    return next((c.name for c in config.contacts.values() if c.email.lower() == email), None)


def _send_now(ctx: Context, row_id: int) -> None:
    """Send the queued row now, as the dispatcher would (lease, render, send, mark); if
    another worker took it first, or anything fails, the notify stage has it."""
    config = ctx.config.notify
    now = ctx.clock()
    with ctx.db.begin() as db:
        lease_until = claim_one(db, row_id, now=now, lease=config.lease)
        row = stored_outbox.get_for_write(db, row_id) if lease_until else None
        if row is not None:
            db.expunge(row)
    if row is None or lease_until is None:
        return
    transport = build_transport(config, ctx.config.base_dir, ctx.config.state_dir)
    try:
        try:
            message = render(row, sender=config.sender, template_dir=template_dir(ctx), now=now)
            result = transport.send(message)
        except RenderError as exc:
            result = SendResult(ok=False, retryable=False, error=f"render: {exc}")
        except Exception as exc:  # a transport bug: the notify stage retries the row
            result = SendResult(ok=False, retryable=True, error=type(exc).__name__)
    finally:
        transport.close()
    with ctx.db.begin() as db:
        if result.ok:
            mark_sent(db, row_id, now=ctx.clock(), lease_until=lease_until)
            log.info("sign_in_link_sent", message_row=row_id)
        else:
            mark_failed(
                db,
                row_id,
                error=result.error or "unknown error",
                retryable=result.retryable,
                now=ctx.clock(),
                lease_until=lease_until,
            )
            log.warning("sign_in_link_not_sent", message_row=row_id, error=result.error)


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """What a sign-in link is: usable (with its email and nonce), or why not."""

    problem: str | None  # None, "expired", "invalid", "used"
    email: str = ""
    nonce: str = ""


def check_link(ctx: Context, token: str) -> LinkCheck:
    """Whether a link would sign in now, without using it (a GET: mail scanners fetch
    links). Never logs the token."""
    with ctx.db.begin() as db:
        keys = signing_keys(db)
        try:
            payload = Signer(keys, SIGN_IN).read(token, max_age=LINK_LIFETIME)
        except BadToken as exc:
            log.info("sign_in_link_refused", reason=exc.reason)
            return LinkCheck("expired" if exc.expired else "invalid")
        email, nonce = str(payload.get("email", "")), str(payload.get("nonce", ""))
        if not email or not nonce:
            return LinkCheck("invalid")
        if stored.link_used(db, nonce):
            log.info("sign_in_link_refused", reason="used")
            return LinkCheck("used")
    if viewer(ctx.config, email) is None:  # no longer HR or an admin since it was sent
        log.info("sign_in_link_refused", reason="no longer allowed")
        return LinkCheck("invalid")
    return LinkCheck(None, email, nonce)


def use_link(ctx: Context, token: str) -> LinkCheck:
    """Use a link (the POST): the email it signs in, once; or why it cannot."""
    check = check_link(ctx, token)
    if check.problem is not None:
        return check
    with ctx.db.begin() as db:
        used = stored.use_link(db, check.nonce, now=ctx.clock())
    if not used:
        log.info("sign_in_link_refused", reason="used")
        return LinkCheck("used")
    log.info("signed_in", domain=check.email.rpartition("@")[2])
    return check


def open_session(ctx: Context, email: str, *, lifetime: timedelta) -> str:
    """A new dashboard session for ``email``: its random id, for the signed cookie. The
    session counts while its row is kept (:func:`session_open`), so signing out ends it
    even for a copied cookie."""
    sid = secrets.token_urlsafe(16)
    now = ctx.clock()
    with ctx.db.begin() as db:
        stored.forget_sessions(db, before=now)
        stored.open_session(db, sid, email=email, now=now, expires_at=now + lifetime)
    return sid


def session_open(ctx: Context, sid: str) -> bool:
    """Whether the dashboard session ``sid`` is still signed in."""
    with ctx.db() as db:
        return stored.session_open(db, sid, now=ctx.clock())


def close_session(ctx: Context, sid: str) -> None:
    """Sign the dashboard session ``sid`` out, for every copy of its cookie."""
    with ctx.db.begin() as db:
        stored.close_session(db, sid)
    log.info("signed_out")

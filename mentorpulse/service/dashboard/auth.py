"""Who is asking, and may they: the dashboard's sessions, CSRF tokens and proxy header.

- ``magic_link``: a signed (:data:`~mentorpulse.signing.SESSION`) cookie holds the email
  and a random session id; it expires after ``session_lifetime`` (the signature's age),
  and counts only while the session is kept in the database: signing out ends it for
  every copy of the cookie.
- ``trusted_header``: the SSO proxy's header names the email, believed only when the
  request's peer is one of ``trusted_proxies``; anything else is refused with 403.

Every POST carries a ``csrf_token`` form field: a signed (:data:`~mentorpulse.signing.CSRF`)
token bound to the session (to the proxy's email in ``trusted_header`` mode; to a random
value in a cookie of its own before sign-in, the double-submit pattern). A POST without it,
or with someone else's, gets 403. Who may sign in is decided on every request from the
config in force (:func:`mentorpulse.stages.sign_in.viewer`), so removing an admin from the
config ends their session.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mentorpulse import stages
from mentorpulse.config.schema import DashboardConfig
from mentorpulse.service.pages import render, secured
from mentorpulse.signing import CSRF, SESSION, BadToken, Signer
from mentorpulse.stages import sign_in
from mentorpulse.stages.sign_in import Viewer, viewer
from mentorpulse.storage.keys import signing_keys

log = structlog.get_logger(__name__)

SESSION_COOKIE = "mentorpulse_session"
FORM_COOKIE = "mentorpulse_form"  # before sign-in: what the sign-in forms' tokens bind to
FORM_LIFETIME = timedelta(hours=1)
MAX_FORM_BYTES = 16 * 1024  # the dashboard's forms are a few fields


class Keys:
    """The house's signing keys, read as every other page reads them
    (:func:`~mentorpulse.storage.keys.signing_keys`, cached there for a short while)."""

    def __init__(self, ctx: stages.Context) -> None:
        self._ctx = ctx

    def get(self) -> list[bytes]:
        with self._ctx.db.begin() as db:  # commits the first key, if this call made it
            return signing_keys(db)


@dataclass
class Visit:
    """One request as a page handler sees it: who asks, the form, the token for forms."""

    ctx: stages.Context
    request: Request
    keys: list[bytes]
    form: dict[str, str] = field(default_factory=dict)
    viewer: Viewer | None = None
    csrf_token: str = ""
    sign_out: bool = False  # a cookie session to end (magic_link)
    set_form_cookie: str | None = None

    @property
    def config(self) -> DashboardConfig:
        return self.ctx.config.service.dashboard

    def page(self, template: str, *, status: int = 200, **context: Any) -> Response:
        return render(
            template,
            status=status,
            zone=self.ctx.config.timezone,
            viewer=self.viewer,
            csrf_token=self.csrf_token,
            sign_out=self.sign_out,
            **context,
        )

    def query(self, name: str) -> str:
        return self.request.query_params.get(name, "").strip()

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()

    def start_session(self, response: Response, email: str) -> Response:
        """Sign ``email`` in: the session cookie on ``response``."""
        sid = sign_in.open_session(self.ctx, email, lifetime=self.config.session_lifetime)
        token = Signer(self.keys, SESSION).sign({"email": email, "sid": sid})
        _cookie(response, SESSION_COOKIE, token, self.config.session_lifetime, self.config)
        response.delete_cookie(FORM_COOKIE, path="/")
        return response

    def end_session(self, response: Response) -> Response:
        """Sign out: the session ends in the database (a copied cookie is refused from
        now on) and its cookie is dropped."""
        session = _session(self)
        if session is not None:
            sign_in.close_session(self.ctx, str(session.get("sid", "")))
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=not self.config.insecure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response


def _cookie(
    response: Response, name: str, value: str, lifetime: timedelta, config: DashboardConfig
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(lifetime.total_seconds()),
        path="/",
        secure=not config.insecure_cookies,
        httponly=True,
        samesite="lax",
    )


def refused(visit: Visit, status: int, page_id: str, message: str) -> Response:
    """The 403 or 404 page (404 also for what exists but is not the viewer's)."""
    return visit.page("dashboard/error.html.j2", status=status, page_id=page_id, message=message)


def not_found(visit: Visit) -> Response:
    return refused(visit, 404, "not-found", "There is no such page.")


def admit(visit: Visit, *, public: bool) -> Response | None:
    """Fill in who the visitor is and check the CSRF token of a POST; a response when the
    request stops here (403, 404, or a redirect to sign in)."""
    config = visit.config
    if config.auth == "trusted_header":
        if public:
            return not_found(visit)  # signing in is the proxy's business
        bound = _from_proxy(visit)
        if bound is None:
            return refused(visit, 403, "forbidden", "You may not use this dashboard.")
        lifetime = config.session_lifetime
    else:
        session = _session(visit)
        if session is not None:
            visit.viewer = viewer(visit.ctx.config, str(session.get("email", "")))
            visit.sign_out = True
        if visit.viewer is not None and session is not None:
            bound, lifetime = str(session.get("sid", "")), config.session_lifetime
        elif public:
            bound, lifetime = _form_binding(visit), FORM_LIFETIME
        elif visit.request.method == "GET":
            return secured(RedirectResponse("/sign-in", status_code=303))
        else:
            return refused(visit, 403, "csrf-refused", "Your session has ended: sign in again.")
    signer = Signer(visit.keys, CSRF)
    visit.csrf_token = signer.sign({"sid": bound})
    if visit.request.method == "POST":
        try:
            payload = signer.read(visit.form.get("csrf_token", ""), max_age=lifetime)
        except BadToken as exc:
            log.warning("dashboard_csrf_refused", reason=exc.reason, path=_path(visit))
            return refused(visit, 403, "csrf-refused", "This form has expired: reload the page.")
        if not bound or payload.get("sid") != bound:
            log.warning("dashboard_csrf_refused", reason="not this session", path=_path(visit))
            return refused(visit, 403, "csrf-refused", "This form has expired: reload the page.")
    return None


def _path(visit: Visit) -> str:
    """The route, never the path itself (a sign-in link's path holds its token)."""
    route = visit.request.scope.get("route")
    return str(getattr(route, "path", "?"))


def _session(visit: Visit) -> dict[str, Any] | None:
    token = visit.request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        session = Signer(visit.keys, SESSION).read(token, max_age=visit.config.session_lifetime)
    except BadToken as exc:
        log.info("dashboard_session_refused", reason=exc.reason)
        return None
    if not sign_in.session_open(visit.ctx, str(session.get("sid", ""))):
        log.info("dashboard_session_refused", reason="signed out")
        return None
    return session


def _form_binding(visit: Visit) -> str:
    """The random value this browser's sign-in forms are bound to (made on first visit)."""
    value = visit.request.cookies.get(FORM_COOKIE, "")
    if not 16 <= len(value) <= 64:
        value = secrets.token_urlsafe(24)
        visit.set_form_cookie = value
    return "form:" + value


def with_form_cookie(visit: Visit, response: Response) -> Response:
    if visit.set_form_cookie is not None:
        _cookie(response, FORM_COOKIE, visit.set_form_cookie, FORM_LIFETIME, visit.config)
    return response


def trusted_peer(peer: str, config: DashboardConfig) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in config.proxies())


def _from_proxy(visit: Visit) -> str | None:
    """The proxy's email, when the peer is a trusted proxy and the email may sign in."""
    config = visit.config
    peer = visit.request.client.host if visit.request.client else ""
    if not trusted_peer(peer, config):
        log.warning("dashboard_untrusted_peer", peer=peer)
        return None
    email = visit.request.headers.get(config.header, "").strip().lower()
    who = viewer(visit.ctx.config, email) if email else None
    if who is None:
        log.warning("dashboard_not_allowed", domain=email.rpartition("@")[2] or None)
        return None
    visit.viewer = who
    return "header:" + email

"""The HR and program-admin dashboard, served by the process's HTTP service.

:func:`dashboard_routes` gives the routes :func:`mentorpulse.service.http.create_app` adds
when ``service.dashboard`` is served. Each route reads its form (if any) on the event loop,
then does everything else (who asks, CSRF, the page) in the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mentorpulse import stages
from mentorpulse.service.dashboard import pages
from mentorpulse.service.dashboard.auth import (
    MAX_FORM_BYTES,
    Keys,
    Visit,
    admit,
    refused,
    with_form_cookie,
)
from mentorpulse.service.pages import FormRefused, read_form, secured

log = structlog.get_logger(__name__)

Handler = Callable[[Visit], Response]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def dashboard_routes(ctx: stages.Context) -> list[BaseRoute]:
    """The dashboard's routes (none when ``service.dashboard`` is not served)."""
    if not ctx.config.service.dashboard_served:
        return []
    keys = Keys(ctx)
    http, auth = ctx.config.service.http, ctx.config.service.dashboard.auth
    if auth == "magic_link" and http.public_url is None and http.host not in LOOPBACK:
        # Sign-in links would point at http://<listening address>/, which people
        # outside this host cannot open.
        log.warning(
            "dashboard_public_url_unset",
            hint="set service.http.public_url to where people reach this service",
        )

    def route(path: str, handler: Handler, method: str = "GET", *, public: bool = False) -> Route:
        return Route(path, _endpoint(ctx, keys, handler, public=public), methods=[method])

    return [
        route("/sign-in", pages.sign_in_form, public=True),
        route("/sign-in", pages.sign_in_request, "POST", public=True),
        route("/sign-in/{token}", pages.sign_in_link, public=True),
        route("/sign-in/{token}", pages.sign_in_use, "POST", public=True),
        route("/sign-out", pages.sign_out, "POST"),
        route("/", pages.programs),
        route("/programs/{program_id}", pages.program),
        route("/pairings/{pairing_id:int}", pages.pairing),
        route("/findings", pages.findings),
        route("/findings/{finding_id:int}/silence", pages.silence, "POST"),
        route("/silences/{silence_id:int}/expire", pages.expire, "POST"),
        route("/reports", pages.reports),
    ]


def _endpoint(
    ctx: stages.Context, keys: Keys, handler: Handler, *, public: bool
) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        form: dict[str, str] = {}
        if request.method == "POST":
            try:
                form = await read_form(request, max_bytes=MAX_FORM_BYTES)
            except FormRefused as exc:
                log.warning("dashboard_form_refused", reason=exc.reason)
                message = "This form is not one of ours: reload the page and try again."
                page = refused(Visit(ctx, request, []), exc.status, "form-refused", message)
                return secured(page)
        return await run_in_threadpool(
            _run, request, form, ctx=ctx, keys=keys, handler=handler, public=public
        )

    return endpoint


def _run(
    request: Request,
    form: dict[str, str],
    *,
    ctx: stages.Context,
    keys: Keys,
    handler: Handler,
    public: bool,
) -> Response:
    visit = Visit(ctx, request, keys.get(), form)
    try:
        response = admit(visit, public=public) or handler(visit)
    except Exception:
        log.exception("dashboard_page_failed", handler=handler.__name__)
        response = visit.page(
            "dashboard/error.html.j2",
            status=500,
            page_id="server-error",
            message="Something went wrong on our side; the log says what.",
        )
    return with_form_cookie(visit, secured(response))


__all__ = ["dashboard_routes"]

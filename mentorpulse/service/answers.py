"""The attendance-answer pages: what a link in an attendance-check email opens.

``GET /answer/{token}?a=yes|no`` records nothing (mail scanners such as Safe Links open
every link): it shows the question and one button (both without ``a``). The button POSTs
``answer=yes|no`` to the same address, which records it and thanks. An expired or closed
link, and a forged or cut one, get a page that says so (410 and 400), logged with the
reason and never the token. Server-rendered, no script, no asset from elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mentorpulse import stages
from mentorpulse.service import metrics
from mentorpulse.service.pages import FormRefused, read_form, render
from mentorpulse.stages.answers import LinkRefused, Question, answer, read_link

log = structlog.get_logger(__name__)

_CHOICES = {"yes": True, "no": False}
MAX_FORM_BYTES = 1024


def _refused(exc: LinkRefused, method: str) -> Response:
    reason = "expired" if exc.expired else "invalid"
    log.warning("answer_link_refused", reason=reason, detail=exc.reason, method=method)
    metrics.observe_answer(method, reason)
    if exc.expired:
        return render("answer_expired.html.j2", status=410, closed_on=exc.closed_on)
    return render("answer_invalid.html.j2", status=400)


def _failing_safely(
    method: str, page: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """``page``, with an unexpected error (a database down …) shown as our error page and
    logged by event name, never with the request's path (the token is in it)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await page(request)
        except Exception:
            log.exception("answer_page_failed", method=method)
            metrics.observe_answer(method, "failed")
            return render("answer_error.html.j2", status=500)

    return endpoint


def answer_routes(ctx: stages.Context) -> list[BaseRoute]:
    """The routes of the answer pages, for :func:`mentorpulse.service.http.create_app`."""

    def question(token: str) -> Question:
        with ctx.db() as db:
            return read_link(ctx, db, token)

    async def show(request: Request) -> Response:
        token = request.path_params["token"]
        choice = request.query_params.get("a")
        try:
            found = await run_in_threadpool(question, token)
        except LinkRefused as exc:
            return _refused(exc, "GET")
        metrics.observe_answer("GET", "shown")
        return render(
            "answer_question.html.j2", q=found, choice=choice if choice in _CHOICES else None
        )

    async def record(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            form = await read_form(request, max_bytes=MAX_FORM_BYTES)
        except FormRefused as exc:
            metrics.observe_answer("POST", "invalid")
            return render("answer_invalid.html.j2", status=exc.status)
        choice = form.get("answer", "")
        if choice not in _CHOICES:
            metrics.observe_answer("POST", "invalid")
            return render("answer_invalid.html.j2", status=400)
        try:
            found = await run_in_threadpool(answer, ctx, token, happened=_CHOICES[choice])
        except LinkRefused as exc:
            return _refused(exc, "POST")
        metrics.observe_answer("POST", "recorded")
        return render("answer_recorded.html.j2", q=found)

    return [
        Route("/answer/{token}", _failing_safely("GET", show), methods=["GET"]),
        Route("/answer/{token}", _failing_safely("POST", record), methods=["POST"]),
    ]

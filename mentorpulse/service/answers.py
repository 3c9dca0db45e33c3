"""The attendance-answer pages: what a link in an attendance-check email opens.

``GET /answer/{token}?a=yes|no`` records nothing (mail scanners such as Safe Links open
every link): it shows the question and one button (both without ``a``). The button POSTs
``answer=yes|no`` to the same address, which records it and thanks. An expired or closed
link, and a forged or cut one, get a page that says so (410 and 400), logged with the
reason and never the token. Server-rendered, no script, no asset from elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mentorpulse import stages
from mentorpulse.service import metrics, pages
from mentorpulse.stages.answers import LinkRefused, Question, answer, read_link

log = structlog.get_logger(__name__)

_CHOICES = {"yes": True, "no": False}
MAX_FORM_BYTES = 1024


def _page(template: str, status: int = 200, **context: Any) -> Response:
    """A participant's page: the people-facing pages' one environment and headers (no
    script, nothing from elsewhere, no referrer: the token is in the address)."""
    return pages.render(template, status=status, **context)


def _refused(exc: LinkRefused, method: str) -> Response:
    reason = "expired" if exc.expired else "invalid"
    log.warning("answer_link_refused", reason=reason, detail=exc.reason, method=method)
    metrics.observe_answer(method, reason)
    if exc.expired:
        return _page("answer_expired.html.j2", 410, closed_on=exc.closed_on)
    return _page("answer_invalid.html.j2", 400)


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
        return _page(
            "answer_question.html.j2", q=found, choice=choice if choice in _CHOICES else None
        )

    async def record(request: Request) -> Response:
        token = request.path_params["token"]
        body = b""
        async for chunk in request.stream():  # a form of one field: refuse a flood
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                metrics.observe_answer("POST", "invalid")
                return _page("answer_invalid.html.j2", 413)
        form = parse_qs(body.decode("utf-8", "replace"))
        choice = (form.get("answer") or [""])[0]
        if choice not in _CHOICES:
            metrics.observe_answer("POST", "invalid")
            return _page("answer_invalid.html.j2", 400)
        try:
            found = await run_in_threadpool(answer, ctx, token, happened=_CHOICES[choice])
        except LinkRefused as exc:
            return _refused(exc, "POST")
        metrics.observe_answer("POST", "recorded")
        return _page("answer_recorded.html.j2", q=found)

    return [
        Route("/answer/{token}", show, methods=["GET"]),
        Route("/answer/{token}", record, methods=["POST"]),
    ]

"""The dashboard's pages: one sync handler per page, run in Starlette's thread pool (they
query the database; the event loop the health endpoints share never waits on them).

Each handler gets a :class:`~mentorpulse.service.dashboard.auth.Visit` (who asks, their
form) once :func:`~mentorpulse.service.dashboard.auth.admit` has let it through, and
prepares nothing itself: the data comes from :mod:`mentorpulse.stages.dashboard`,
``explain`` and the report's figures. Whatever is not the viewer's is 404, as if it did
not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.background import BackgroundTask
from starlette.responses import RedirectResponse, Response

from mentorpulse import stages
from mentorpulse.config.schema import parse_duration
from mentorpulse.errors import UserError
from mentorpulse.reports.charts import Chart
from mentorpulse.reports.export import CONTENT_TYPES, FORMATS, render_report
from mentorpulse.reports.render import format_range, report_charts
from mentorpulse.service.dashboard.auth import Visit, not_found, refused
from mentorpulse.stages import dashboard as data
from mentorpulse.stages import sign_in
from mentorpulse.stages.explain import explain
from mentorpulse.stages.reports import range_report

log = structlog.get_logger(__name__)

MAX_SILENCE = timedelta(days=365)
MAX_REPORT_DAYS = 3 * 366
SILENCE_CHOICES = ("1d", "1w", "2w", "4w", "12w")


def _viewer(visit: Visit) -> sign_in.Viewer:
    assert visit.viewer is not None  # admit() let only viewers through to these pages
    return visit.viewer


def _visible(visit: Visit) -> list[str]:
    return _viewer(visit).visible(visit.ctx.config)


# ------------------------------------------------------------------ sign-in (magic link)


def sign_in_form(visit: Visit) -> Response:
    if visit.viewer is not None:
        return RedirectResponse("/", status_code=303)
    return visit.page("dashboard/sign_in.html.j2")


def sign_in_request(visit: Visit) -> Response:
    """Always the same answer, whoever asks: the link (if any) is sent after the answer."""
    email = visit.field("email")[:320]
    task = BackgroundTask(_send_link, visit.ctx, email, link_base(visit)) if "@" in email else None
    response = visit.page("dashboard/sign_in_sent.html.j2")
    response.background = task
    return response


def _send_link(ctx: stages.Context, email: str, base_url: str) -> None:
    try:
        sign_in.send_link(ctx, email, base_url=base_url)
    except Exception:  # the answer has gone: the log is where this shows
        log.exception("sign_in_link_failed")


def link_base(visit: Visit) -> str:
    """Where links in emails point: ``service.http.public_url``, else this service's own
    address (with the port it really listens on, when the config says any free port).
    Never the request's Host header: anyone can set that, and the link carries a token."""
    http = visit.ctx.config.service.http
    if http.public_url is not None or http.port != 0:
        return http.base_url
    server = visit.request.scope.get("server")
    port = int(server[1]) if server and server[1] else http.port
    return http.model_copy(update={"port": port}).base_url


_LINK_PROBLEMS = {
    "expired": (410, "link-expired", "This sign-in link has expired."),
    "used": (410, "link-used", "This sign-in link has been used already."),
    "invalid": (400, "link-invalid", "This sign-in link is not valid."),
}


def _link_problem(visit: Visit, problem: str) -> Response:
    status, page_id, message = _LINK_PROBLEMS.get(problem, _LINK_PROBLEMS["invalid"])
    return visit.page(
        "dashboard/link_problem.html.j2", status=status, page_id=page_id, message=message
    )


def sign_in_link(visit: Visit) -> Response:
    """The page a link opens: a button. A GET uses nothing (mail scanners fetch links)."""
    token = str(visit.request.path_params["token"])
    check = sign_in.check_link(visit.ctx, token)
    if check.problem is not None:
        return _link_problem(visit, check.problem)
    return visit.page("dashboard/sign_in_link.html.j2", token=token, email=check.email)


def sign_in_use(visit: Visit) -> Response:
    check = sign_in.use_link(visit.ctx, str(visit.request.path_params["token"]))
    if check.problem is not None:
        return _link_problem(visit, check.problem)
    return visit.start_session(RedirectResponse("/", status_code=303), check.email)


def sign_out(visit: Visit) -> Response:
    response = RedirectResponse("/sign-in" if visit.sign_out else "/", status_code=303)
    return visit.end_session(response)


# ------------------------------------------------------------------ programs, pairings


def programs(visit: Visit) -> Response:
    cards, first = data.program_cards(visit.ctx, _visible(visit))
    return visit.page("dashboard/programs.html.j2", cards=cards, first=first, pct=_pct)


def program(visit: Visit) -> Response:
    program_id = str(visit.request.path_params["program_id"])
    if program_id not in _visible(visit):
        return not_found(visit)
    overview = data.program_overview(visit.ctx, program_id)
    return visit.page(
        "dashboard/program.html.j2",
        overview=overview,
        period=format_range(overview.first, overview.last, overview.report.zone),
        charts=_overview_charts(overview),
        pct=_pct,
    )


def _overview_charts(overview: data.Overview) -> list[Chart]:
    """The overview's inline SVG charts: the report's own for this program (sessions per
    month by outcome, the spread of attendance rates, the pair health grid); the page's
    tables carry the same figures."""
    return report_charts(overview.report).get(overview.program_id, [])


def pairing(visit: Visit) -> Response:
    pairing_id = int(visit.request.path_params["pairing_id"])
    try:
        explanation = explain(visit.ctx, str(pairing_id))
    except UserError:
        return not_found(visit)
    view = next((p for p in explanation.pairings if p.id == pairing_id), None)
    if view is None or view.program not in _visible(visit):
        return not_found(visit)
    mentor, _sep, mentee = view.key.removeprefix(f"{view.program}:").partition(":")
    # Named as the overview and the findings name it (the roster's names; a pairing that
    # left the roster keeps its addresses).
    entry = next((p for p in visit.ctx.roster if p.key == view.key), None)
    return visit.page(
        "dashboard/pairing.html.j2",
        view=view,
        mentor=mentor,
        mentee=mentee,
        mentor_name=(entry.mentor_name if entry else None) or mentor,
        mentee_name=(entry.mentee_name if entry else None) or mentee,
        program_name=data.program_name(visit.ctx.config, view.program),
        stale=explanation.stale_sources,
    )


# ------------------------------------------------------------------ findings, silences


def findings(visit: Visit) -> Response:
    visible = _visible(visit)
    program_id, rule, state = visit.query("program"), visit.query("rule"), visit.query("state")
    if program_id and program_id not in visible:
        return not_found(visit)
    if state and state not in data.FINDING_STATES:
        state = ""
    found = data.list_findings(
        visit.ctx, [program_id] if program_id else visible, rule=rule or None, state=state or None
    )
    config = visit.ctx.config
    rules = sorted({r.id for p in config.programs if p.id in visible for r in config.rules_for(p)})
    return visit.page(
        "dashboard/findings.html.j2",
        findings=found,
        programs=[(p, data.program_name(config, p)) for p in visible],
        names={p: data.program_name(config, p) for p in visible},
        rules=rules,
        states=data.FINDING_STATES,
        chosen={"program": program_id, "rule": rule, "state": state},
        back=urlencode({"program": program_id, "rule": rule, "state": state}),
        silence_choices=SILENCE_CHOICES,
        may_expire={
            f.silence_id
            for f in found
            if f.silence_id is not None and _may_expire(visit, f.silence_program_id)
        },
    )


def _may_expire(visit: Visit, program_id: str | None) -> bool:
    """Whether the viewer may end a silence limited to ``program_id`` (None: a silence of
    every program, which only HR may end)."""
    return _viewer(visit).hr if program_id is None else program_id in _visible(visit)


def _back_to_findings(visit: Visit) -> Response:
    """Back to the findings list, with the filters it had (rebuilt, never echoed)."""
    kept = {
        k: v
        for k, v in parse_qsl(visit.field("back")[:500])
        if k in ("program", "rule", "state") and v
    }
    return RedirectResponse("/findings" + (f"?{urlencode(kept)}" if kept else ""), 303)


def silence(visit: Visit) -> Response:
    found = data.finding(visit.ctx, int(visit.request.path_params["finding_id"]), _visible(visit))
    if found is None:
        return not_found(visit)
    reason = visit.field("reason")
    try:
        length = parse_duration(visit.field("duration") or "1w")
    except ValueError as exc:
        return refused(visit, 400, "bad-request", f"duration: {exc}")
    if not timedelta(0) < length <= MAX_SILENCE:
        return refused(visit, 400, "bad-request", "duration: at most 365d, and more than 0")
    if not reason or len(reason) > 500:
        return refused(visit, 400, "bad-request", "Say why (at most 500 characters).")
    silence_id = data.silence_finding(
        visit.ctx, found, length=length, reason=reason, by=_viewer(visit).email
    )
    log.info("dashboard_silenced", finding=found.id, silence=silence_id, program=found.program_id)
    return _back_to_findings(visit)


def expire(visit: Visit) -> Response:
    silence_id = int(visit.request.path_params["silence_id"])
    exists, program_id = data.silence_program(visit.ctx, silence_id)
    if not exists or not _may_expire(visit, program_id):
        return not_found(visit)
    data.end_silence(visit.ctx, silence_id)
    log.info("dashboard_silence_expired", silence=silence_id)
    return _back_to_findings(visit)


# ------------------------------------------------------------------ reports


@dataclass(frozen=True, slots=True)
class ReportFile:
    content: bytes
    media_type: str
    extension: str


def report_file(
    ctx: stages.Context, first: date, last: date, programs: list[str], fmt: str
) -> ReportFile:
    """The report for ``programs`` over ``first``..``last`` in ``fmt`` (html, csv, xlsx).

    The one place the dashboard makes a report: the report's own builder and renderers,
    so the page, its downloads, the CLI and the mailed reports show the same figures.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}")
    report = range_report(ctx, first=first, last=last, programs=programs)
    return ReportFile(render_report(report, fmt), CONTENT_TYPES[fmt], fmt)


def reports(visit: Visit) -> Response:
    visible = _visible(visit)
    today = data.today(visit.ctx)
    last_month_end = today.replace(day=1) - timedelta(days=1)
    chosen = {
        "first": visit.query("first") or last_month_end.replace(day=1).isoformat(),
        "last": visit.query("last") or last_month_end.isoformat(),
        "program": visit.query("program"),
        "format": visit.query("format") or "html",
    }
    if chosen["program"] and chosen["program"] not in visible:
        return not_found(visit)
    page: dict[str, Any] = {
        "chosen": chosen,
        "programs": [(p, data.program_name(visit.ctx.config, p)) for p in visible],
        "formats": FORMATS,
        "report": None,
        "error": None,
    }
    if not visit.query("first"):  # the form alone
        return visit.page("dashboard/reports.html.j2", **page)
    try:
        first, last = date.fromisoformat(chosen["first"]), date.fromisoformat(chosen["last"])
    except ValueError:
        return visit.page(
            "dashboard/reports.html.j2", status=400, **{**page, "error": "Dates are YYYY-MM-DD."}
        )
    error = _range_problem(first, last, chosen["format"])
    if error:
        return visit.page("dashboard/reports.html.j2", status=400, **{**page, "error": error})
    selected = [chosen["program"]] if chosen["program"] else visible
    made = report_file(visit.ctx, first, last, selected, chosen["format"])
    if made.extension == "html":
        return visit.page("dashboard/reports.html.j2", **{**page, "report": made.content.decode()})
    name = f"mentorpulse-report-{first.isoformat()}-{last.isoformat()}.{made.extension}"
    return Response(
        made.content,
        media_type=made.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _range_problem(first: date, last: date, fmt: str) -> str | None:
    if fmt not in FORMATS:
        return f"Format: one of {', '.join(FORMATS)}."
    if last < first:
        return "The last day is before the first."
    if (last - first).days >= MAX_REPORT_DAYS:
        return "At most three years at once."
    return None


def _pct(rate: float | None) -> str:
    return "\u2014" if rate is None else f"{rate:.0%}"

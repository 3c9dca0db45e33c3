"""What the dashboard's pages show, as data: one function per page, read only (bar the
silences), each opening its own database session.

The figures are the report's (:mod:`mentorpulse.reports.figures`) and a pairing's page is
``explain``'s (:mod:`mentorpulse.stages.explain`): the dashboard shows what the CLI shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.model import ATTENDED
from mentorpulse.reports.figures import (
    SCHEDULED,
    PairingFigures,
    ProgramTotals,
    Report,
)
from mentorpulse.stages.context import Context
from mentorpulse.stages.reports import range_report
from mentorpulse.stages.silences import SilenceRequest, add_silence, expire_silence
from mentorpulse.stages.source_health import sources_feeding, stale_sources
from mentorpulse.storage import findings as stored_findings
from mentorpulse.storage.findings import ListedFinding
from mentorpulse.storage.timelines import pairings_of_program, sources_by_id

OVERVIEW_MONTHS = 6
CARD_DAYS = 90  # the programs list shows figures over this many days
# Attendance-rate bands of the overview's distribution: (label, lowest rate in it).
RATE_BANDS = (("75-100%", 0.75), ("50-74%", 0.5), ("25-49%", 0.25), ("under 25%", 0.0))
NOTHING_SCHEDULED = "nothing scheduled"


def program_name(config: MentorpulseConfig, program_id: str) -> str:
    program = config.program(program_id)
    return (program.name if program else None) or program_id


def today(ctx: Context) -> date:
    """Today in the organisation's zone (the top-level ``timezone``)."""
    return ctx.clock().astimezone(ZoneInfo(ctx.config.timezone)).date()


@dataclass(frozen=True, slots=True)
class ProgramCard:
    id: str
    name: str
    totals: ProgramTotals | None  # over the last CARD_DAYS; None: no active pairing


def program_cards(ctx: Context, program_ids: Sequence[str]) -> tuple[list[ProgramCard], date]:
    """The programs' summaries over the last :data:`CARD_DAYS` days; with the first day."""
    last = today(ctx)
    first = last - timedelta(days=CARD_DAYS - 1)
    report = range_report(ctx, first=first, last=last, programs=program_ids)
    totals = {t.program: t for t in report.totals}
    cards = [ProgramCard(p, program_name(ctx.config, p), totals.get(p)) for p in program_ids]
    return cards, first


@dataclass(frozen=True, slots=True)
class MonthFigures:
    first: date
    label: str  # "Sep 2026"
    scheduled: int
    attended: int
    missed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class RateBand:
    label: str
    pairs: int


@dataclass(frozen=True, slots=True)
class PairAtRisk:
    pairing_id: int
    mentor: str
    mentee: str
    findings: tuple[ListedFinding, ...]


@dataclass(frozen=True, slots=True)
class SourceHealth:
    id: str
    problem: str | None  # None: its data can be trusted now
    last_success: datetime | None


@dataclass(frozen=True, slots=True)
class Overview:
    program_id: str
    name: str
    first: date  # the window the figures cover, in the organisation's zone
    last: date
    months: tuple[MonthFigures, ...]
    rows: tuple[PairingFigures, ...]  # per pairing over the whole window
    totals: ProgramTotals | None
    rates: tuple[RateBand, ...]
    at_risk: tuple[PairAtRisk, ...]
    sources: tuple[SourceHealth, ...]
    report: Report  # the window's report (figures and what its charts draw), this program's


def program_overview(ctx: Context, program_id: str, *, months: int = OVERVIEW_MONTHS) -> Overview:
    """A program's page: sessions scheduled and attended per month (this month and the
    ``months - 1`` before), how its pairs' attendance rates spread, its pairs with firing
    findings, and the health of the sources that feed its pairings."""
    last = today(ctx)
    firsts = _month_starts(last, months)
    report = range_report(ctx, first=firsts[0], last=last, programs=[program_id])
    per_month = [
        MonthFigures(
            first=first,
            label=f"{first:%b %Y}",
            scheduled=sum(counts.get(o, 0) for o in SCHEDULED),
            attended=sum(counts.get(o.value, 0) for o in ATTENDED),
            missed=counts.get("missed", 0),
            cancelled=counts.get("cancelled", 0),
        )
        for first, counts in zip(
            report.monthly.months,
            report.monthly.by_program.get(program_id, [{} for _ in report.monthly.months]),
            strict=True,
        )
    ]
    rows = report.rows_of(program_id)
    totals = report.totals
    now = ctx.clock()
    with ctx.db() as db:
        firing = stored_findings.listed_findings(db, programs=[program_id], state="firing")
        stale = stale_sources(db, ctx.config, now)
        stored_sources = sources_by_id(db)
        feeding = sources_feeding(db, ctx.config, pairings_of_program(db, program_id))
    sources = tuple(
        SourceHealth(
            s.id,
            stale.get(s.id),
            stored_sources[s.id].last_success_at if s.id in stored_sources else None,
        )
        for s in ctx.config.sources
        if s.id in feeding
    )
    return Overview(
        program_id=program_id,
        name=program_name(ctx.config, program_id),
        first=firsts[0],
        last=last,
        months=tuple(per_month),
        rows=tuple(rows),
        totals=totals[0] if totals else None,
        report=report,
        rates=rate_bands(rows),
        at_risk=pairs_at_risk(firing),
        sources=sources,
    )


def _month_starts(last: date, months: int) -> list[date]:
    """The first days of ``months`` months ending with ``last``'s, oldest first."""
    year, month = last.year, last.month
    starts = []
    for _ in range(months):
        starts.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return starts[::-1]


def rate_bands(rows: Sequence[PairingFigures]) -> tuple[RateBand, ...]:
    """How many pairs fall in each attendance-rate band (and how many had nothing
    scheduled)."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.attendance_rate is None:
            counts[NOTHING_SCHEDULED] += 1
            continue
        label = next(label for label, low in RATE_BANDS if row.attendance_rate >= low)
        counts[label] += 1
    labels = [label for label, _low in RATE_BANDS] + [NOTHING_SCHEDULED]
    return tuple(RateBand(label, counts[label]) for label in labels)


def pairs_at_risk(firing: Sequence[ListedFinding]) -> tuple[PairAtRisk, ...]:
    by_pairing: dict[int, list[ListedFinding]] = defaultdict(list)
    for finding in firing:
        by_pairing[finding.pairing_id].append(finding)
    return tuple(
        PairAtRisk(
            pairing_id,
            found[0].mentor_name or found[0].mentor_email,
            found[0].mentee_name or found[0].mentee_email,
            tuple(found),
        )
        for pairing_id, found in sorted(by_pairing.items(), key=lambda kv: kv[1][0].mentor_email)
    )


FINDING_STATES = ("pending", "firing", "resolved", "suppressed")


def list_findings(
    ctx: Context, programs: Collection[str], *, rule: str | None, state: str | None
) -> list[ListedFinding]:
    """The findings page: findings of pairings of ``programs``, newest first."""
    with ctx.db() as db:
        return stored_findings.listed_findings(db, programs=programs, rule=rule, state=state)


def finding(ctx: Context, finding_id: int, programs: Collection[str]) -> ListedFinding | None:
    """One finding of a pairing of ``programs`` (None: none such, or not theirs)."""
    with ctx.db() as db:
        found = stored_findings.listed_findings(db, programs=programs, finding_id=finding_id)
    return found[0] if found else None


def silence_finding(
    ctx: Context, found: ListedFinding, *, length: timedelta, reason: str, by: str
) -> int:
    """Silence the pair of a finding (in its program) for ``length``; returns its id."""
    silence = add_silence(
        ctx,
        SilenceRequest(
            reason=reason,
            length=length,
            program_id=found.program_id,
            mentor_email=found.mentor_email,
            mentee_email=found.mentee_email,
            created_by=by,
        ),
    )
    return silence.id


def silence_program(ctx: Context, silence_id: int) -> tuple[bool, str | None]:
    """Whether the silence exists, and the program it is limited to (None: any)."""
    with ctx.db() as db:
        silence = stored_findings.get_silence(db, silence_id)
        if silence is None:
            return False, None
        return True, silence.program_id


def end_silence(ctx: Context, silence_id: int) -> None:
    expire_silence(ctx, silence_id)

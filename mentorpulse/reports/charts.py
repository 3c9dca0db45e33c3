"""The report's charts: inline SVG drawn on the server, readable without JavaScript.

matplotlib draws them (its own ``Figure`` and SVG canvas, never pyplot's global state),
with text as paths, so the reader needs no font, and a fixed hash salt, so the same
figures give the same bytes. It is imported on the first chart, not with the CLI: a CSV
report never pays for it. Each chart is a :class:`Chart` the HTML report and the
dashboard place in a ``<figure class="chart ..." id="...">``; its ``description`` is the
text alternative, and the tables beside it keep every number (some email clients drop
SVG altogether).

Every drawn data point (a bar of a month and outcome, a bin of the histogram, a cell of
the health grid) is an SVG group whose id starts with the chart's id, so a test or a
browser can find and count them.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from mentorpulse.reports.figures import MONTHLY_OUTCOMES, PairingFigures, Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_PAIRS = 60  # rows of the health grid; the rest are named in a line under it
RATE_BINS = 10  # 0-10%, ..., 90-100%
LABELS = {
    "held": "held",
    "presumed_held": "presumed held",
    "missed": "missed",
    "cancelled": "cancelled",
    "unknown": "unknown",
    "upcoming": "upcoming",
}
COLOURS = {
    "held": "#1a7f37",
    "presumed_held": "#8fd19e",
    "missed": "#cf222e",
    "cancelled": "#8c959f",
    "unknown": "#d4a72c",
    "upcoming": "#54aeff",
}
NONE_COLOUR = "#ffffff"
LOW_COLOUR, OK_COLOUR = "#cf222e", "#1a7f37"
_RC = {
    "svg.fonttype": "path",  # glyphs as paths: no font needed where it is read
    "svg.hashsalt": "mentorpulse-report",  # ids from content, not random: same bytes
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs everywhere
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.0,
}
_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
# matplotlib's rcParams are process-wide: one chart at a time (the dashboard serves
# several requests at once), each inside its own rc_context.
_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Chart:
    kind: str  # outcomes, rates, health: also the figure's CSS class
    id: str  # chart-<kind>-<program slug>: the figure's id, and the prefix of its groups
    title: str  # the SVG's <title> and the figure's aria-label
    description: str  # the text alternative, under the chart
    svg: Markup  # an <svg> element to inline (no prolog, no script, no external link)


def chart_id(kind: str, program: str) -> str:
    """``chart-outcomes-engineering``: a stable HTML id for any program id.

    A program id that is not already a plain slug gets a short hash of itself, so two
    ids that slug alike (``R&D``, ``r-d``) still get two charts.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", program.lower()).strip("-")
    if slug != program:
        slug = f"{slug}-{hashlib.sha256(program.encode()).hexdigest()[:6]}".strip("-")
    return f"chart-{kind}-{slug}"


def program_charts(report: Report, program: str) -> Iterator[Chart]:
    """The three charts of one program's section, in the order the page shows them."""
    yield outcomes_chart(report, program)
    yield rates_chart(report, program)
    yield health_chart(report, program)


def outcomes_chart(report: Report, program: str) -> Chart:
    """Sessions per month of the report's zone, stacked by outcome."""
    ident = chart_id("outcomes", program)
    months = report.monthly.months
    per_month = report.monthly.by_program.get(program, [{} for _ in months])
    name = _program_name(report, program)
    title = f"{name}: sessions per month by outcome"
    parts = []
    for month, counts in zip(months, per_month, strict=True):
        said = ", ".join(f"{counts[o]} {LABELS[o]}" for o in MONTHLY_OUTCOMES if counts.get(o))
        parts.append(f"{_month(month)}: {said or 'none'}")
    description = "Sessions per month: " + "; ".join(parts) + "."

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = figure.add_subplot()
        positions = list(range(len(months)))
        bottoms = [0] * len(months)
        for outcome in MONTHLY_OUTCOMES:
            heights = [counts.get(outcome, 0) for counts in per_month]
            shown = [i for i, height in enumerate(heights) if height]
            if not shown:
                continue
            bars = ax.bar(
                [positions[i] for i in shown],
                [heights[i] for i in shown],
                bottom=[bottoms[i] for i in shown],
                color=COLOURS[outcome],
                label=LABELS[outcome],
                width=0.7,
            )
            for i, patch in zip(shown, bars.patches, strict=True):
                patch.set_gid(f"{ident}-{outcome}-{months[i]:%Y-%m}")
                bottoms[i] += heights[i]
        ax.set_xticks(positions, [_month(m) for m in months])
        ax.set_ylabel("sessions")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if any(bottoms):
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        else:
            _empty(ax, "No sessions in this range")
        ax.set_title(title, loc="left", parse_math=False)

    return _chart("outcomes", ident, title, description, draw, size=(6.4, 2.8))


def rates_chart(report: Report, program: str) -> Chart:
    """How many pairs attended what share of their scheduled sessions (10% bins)."""
    ident = chart_id("rates", program)
    rows = report.rows_of(program)
    rates = [r.attendance_rate for r in rows if r.attendance_rate is not None]
    bins = [0] * RATE_BINS
    for rate in rates:
        bins[min(int(rate * RATE_BINS), RATE_BINS - 1)] += 1
    name = _program_name(report, program)
    title = f"{name}: pairings by attendance rate"
    low = sum(1 for rate in rates if rate < 0.5)
    high = sum(1 for rate in rates if rate >= 0.8)
    description = (
        f"Attendance rate of {len(rates)} pairings with scheduled sessions: {low} below 50%, "
        f"{len(rates) - low - high} from 50% to 79%, {high} at 80% or more; "
        f"{len(rows) - len(rates)} with nothing scheduled."
    )

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        ax = figure.add_subplot()
        width = 100 / RATE_BINS
        for index, count in enumerate(bins):
            if not count:
                continue
            lower = index * width
            (patch,) = ax.bar(
                [lower + width / 2],
                [count],
                width=width * 0.9,
                color=LOW_COLOUR if lower < 50 else OK_COLOUR,
            ).patches
            patch.set_gid(f"{ident}-bin-{int(lower):02d}")
        ax.set_xlim(0, 100)
        ax.set_xticks(range(0, 101, 20), [f"{p}%" for p in range(0, 101, 20)])
        ax.set_xlabel("attendance rate (attended / scheduled)")
        ax.set_ylabel("pairings")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if not rates:
            _empty(ax, "No pairing had a scheduled session")
        ax.set_title(title, loc="left", parse_math=False)

    return _chart("rates", ident, title, description, draw, size=(4.8, 2.8))


def health_order(rows: Sequence[tuple[int, PairingFigures]]) -> list[tuple[int, PairingFigures]]:
    """Pairs at risk first: nothing scheduled, then the lowest attendance rate."""
    return sorted(
        rows,
        key=lambda item: (
            item[1].attendance_rate is not None,
            item[1].attendance_rate or 0.0,
            item[1].mentor_email,
            item[1].mentee_email,
        ),
    )


def health_chart(report: Report, program: str) -> Chart:
    """Pairs by months, each cell coloured by the pair's outcome that month."""
    ident = chart_id("health", program)
    months = report.monthly.months
    members = health_order([(i, r) for i, r in enumerate(report.rows) if r.program == program])
    shown, hidden = members[:MAX_PAIRS], len(members) - MAX_PAIRS
    name = _program_name(report, program)
    title = f"{name}: pair health by month"
    description = (
        f"{len(shown)} pairings (lowest attendance first) by {len(months)} months; a cell "
        "is green when the pair met that month (light green: presumed), red when a "
        "session was missed, grey when cancelled, white when nothing was booked."
    )
    if hidden > 0:
        description += f" And {hidden} more pairings not shown: the table lists every one."

    def draw(figure: Figure) -> None:
        _draw_health(figure, report, ident=ident, title=title, shown=shown, hidden=hidden)

    # Room for the title, the two-line month labels and the legend (8 rows) at least.
    height = max(2.6, 1.2 + 0.2 * len(shown))
    return _chart("health", ident, title, description, draw, size=(6.4, height))


def _draw_health(
    figure: Figure,
    report: Report,
    *,
    ident: str,
    title: str,
    shown: list[tuple[int, PairingFigures]],
    hidden: int,
) -> None:
    from matplotlib.patches import Patch, Rectangle

    months = report.monthly.months
    ax = figure.add_subplot()
    for row, (index, _pair) in enumerate(shown):
        cells = report.monthly.health[index]
        for column, outcome in enumerate(cells):
            ax.add_patch(
                Rectangle(
                    (column, row),
                    0.94,
                    0.86,
                    facecolor=COLOURS.get(outcome or "", NONE_COLOUR),
                    edgecolor="#d0d7de",
                    linewidth=0.5,
                    gid=f"{ident}-cell-{row}-{months[column]:%Y-%m}",
                )
            )
    ax.set_xlim(-0.1, max(len(months), 1))
    ax.set_ylim(max(len(shown), 1), -0.2)
    ax.set_xticks(
        [c + 0.47 for c in range(len(months))],
        [_grid_month(m, first=c == 0) for c, m in enumerate(months)],
    )
    ax.xaxis.tick_top()
    ax.set_yticks(
        [r + 0.43 for r in range(len(shown))],
        [_pair_label(pair) for _index, pair in shown],
        parse_math=False,
    )
    ax.tick_params(length=0)
    for side in ("left", "bottom", "top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(
        handles=[
            Patch(facecolor=COLOURS[o], label=LABELS[o])
            for o in ("held", "presumed_held", "missed", "cancelled", "unknown", "upcoming")
        ]
        + [Patch(facecolor=NONE_COLOUR, edgecolor="#d0d7de", label="none")],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
    )
    if not shown:
        _empty(ax, "No pairings")
    if hidden > 0:
        ax.set_xlabel(f"and {hidden} more pairings (see the table)")
    ax.set_title(title, loc="left", parse_math=False, pad=18)


def _chart(
    kind: str,
    ident: str,
    title: str,
    description: str,
    draw: Any,
    *,
    size: tuple[float, float],
) -> Chart:
    import matplotlib as mpl
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    settings: Any = _RC  # rc_context's stubs want literal keys
    with _LOCK, mpl.rc_context(settings), warnings.catch_warnings():
        # A name in a script DejaVu Sans lacks draws as boxes; the table has it right.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasSVG(figure)
        draw(figure)
        stream = io.StringIO()
        figure.savefig(stream, format="svg", metadata=_METADATA)
    return Chart(kind, ident, title, description, _inline(stream.getvalue(), ident, title))


def _inline(svg: str, ident: str, title: str) -> Markup:
    """The <svg> element alone (no XML prolog or doctype: it goes inside HTML), as an
    image with a title a screen reader says, scaled to its box."""
    svg = svg[svg.index("<svg") :]
    head_end = svg.index(">") + 1
    head = svg[: head_end - 1].replace(
        "<svg ", f'<svg role="img" aria-labelledby="{ident}-title" ', 1
    )
    title_tag = f'<title id="{ident}-title">{html.escape(title)}</title>'
    return Markup(f"{head}>{title_tag}{svg[head_end:]}")  # noqa: S704 (ours, escaped)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#57606a")


def _month(month: date) -> str:
    return f"{month:%b %Y}"


def _grid_month(month: date, *, first: bool) -> str:
    """A grid column is narrow: the month, with its year under it where the year starts
    (the first column and each January), so labels never run into each other."""
    return f"{month:%b}\n{month:%Y}" if first or month.month == 1 else f"{month:%b}"


def _pair_label(pair: PairingFigures) -> str:
    mentor = pair.mentor_name or pair.mentor_email
    mentee = pair.mentee_name or pair.mentee_email
    label = f"{mentor} / {mentee}"
    return label if len(label) <= 40 else label[:39] + "\u2026"


def _program_name(report: Report, program: str) -> str:
    return next((t.program_name for t in report.totals if t.program == program), program)

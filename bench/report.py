"""Figure 4: the HR report for a quarter, over every pairing of the organisation.

Starting from a fully ingested organisation whose sessions were built and rules
evaluated (their times are recorded too, as setup), the real report path
(``write_report``) runs for the 13 weeks before today, as CSV, as HTML (with charts) and
as XLSX.
The figures query (``pairing_figures``) is timed on its own as well.

    python -m bench.report [--scale small] [--backend sqlite|postgresql]
"""

from __future__ import annotations

from datetime import timedelta

from bench import common
from mentorpulse.reports.export import day_range, write_report
from mentorpulse.reports.figures import pairing_figures
from mentorpulse.stages import evaluate_rules, rebuild_sessions


def measure(scale: str = "small", backend: str = "sqlite") -> dict[str, float | int]:
    org = common.org_dir(scale)
    spec = common.summary(org).spec
    first, last = spec.day - timedelta(days=91), spec.day - timedelta(days=1)
    figures: dict[str, float | int] = {}
    with common.ingested_database(scale, backend, org) as url:
        ctx = common.open_context(org, url)
        try:
            seconds, _sessions = common.timed(lambda: rebuild_sessions(ctx))
            figures["setup_sessions_seconds"] = round(seconds, 3)
            figures["peak_rss_after_sessions_mb"] = common.peak_rss_mb()
            seconds, _stats = common.timed(lambda: evaluate_rules(ctx))
            figures["setup_evaluate_seconds"] = round(seconds, 3)
            figures["peak_rss_after_evaluate_mb"] = common.peak_rss_mb()
            zone = ctx.config.timezone
            start, end = day_range(first, last, zone)
            with ctx.db() as db:
                seconds, rows = common.timed(
                    lambda: pairing_figures(db, start=start, end=end, now=spec.now)
                )
            figures["figures_seconds"] = round(seconds, 3)
            figures["pairings"] = len(rows)
            figures["scheduled"] = sum(r.scheduled for r in rows)
            figures["attended"] = sum(r.attended for r in rows)
            for fmt in ("csv", "html", "xlsx"):
                out = common.workdir() / f"report-{scale}-{backend}.{fmt}"
                seconds, _rows = common.timed(
                    lambda fmt=fmt, out=out: write_report(
                        ctx.db,
                        first=first,
                        last=last,
                        zone=zone,
                        now=spec.now,
                        fmt=fmt,
                        out=out,
                    )
                )
                figures[f"report_{fmt}_seconds"] = round(seconds, 3)
                figures[f"report_{fmt}_bytes"] = out.stat().st_size
            figures["peak_rss_mb"] = common.peak_rss_mb()
        finally:
            ctx.engine.dispose()
    return figures


if __name__ == "__main__":
    common.figure_main(measure, prog="python -m bench.report", doc=__doc__)

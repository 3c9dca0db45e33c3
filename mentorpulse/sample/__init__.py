"""The one synthetic organisation: the demo at 12 pairs, bench at scale.

``write(spec, out)`` writes ``mentorpulse.yaml``, ``roster.csv``, ``calendars/<email>.ics``
(and at bench scales ``fixtures/<email>.json``, the Google-shaped copies) and
``manifest.json``, what was planted (:class:`~mentorpulse.sample.manifest.Manifest`). The
demo scale is twelve hand-placed pairs written through ``icalendar``, the way real
servers export; the bench scales are a seeded plan written as plain text, fast enough for
a million occurrences. The same spec gives byte-identical files (no wall clock).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import structlog

from mentorpulse.sample import demo, fast, ical, scaled
from mentorpulse.sample.manifest import FILE, Manifest, manifest, read_manifest
from mentorpulse.sample.org import Org, Spec
from mentorpulse.sample.template import ConfigTemplate, roster_text

__all__ = ["SCALES", "Manifest", "Spec", "mutate", "plan", "read_manifest", "write", "write_demo"]

log = structlog.get_logger(__name__)

SCALES: dict[str, Spec] = {
    "demo": demo.SPEC,
    "small": Spec(pairs=200, months=3, noise=2, scale="small"),
    "medium": Spec(pairs=2000, months=6, noise=2, scale="medium"),
    "large": Spec(pairs=10000, months=12, noise=1, scale="large"),
}


def plan(spec: Spec) -> Org:
    return demo.plan(spec) if spec.scale == "demo" else scaled.plan(spec)


def _config(spec: Spec) -> ConfigTemplate:
    return demo.config(spec) if spec.scale == "demo" else scaled.config(spec)


def write(spec: Spec, out: Path, *, fixtures: bool | None = None) -> Manifest:
    """Write the organisation of ``spec`` into ``out``; returns what was planted.

    ``fixtures`` (the Google-shaped JSON) defaults to on at bench scales, off for the
    demo. Existing files of the same names are overwritten; nothing else is touched.
    """
    org = plan(spec)
    with_fixtures = spec.scale != "demo" if fixtures is None else fixtures
    out.mkdir(parents=True, exist_ok=True)
    if spec.scale == "demo":
        ical.write_calendars(org, out / "calendars")
    else:
        fast.write_calendars(org, out, fixtures=with_fixtures)
    (out / "mentorpulse.yaml").write_text(_config(spec).render(org.domain), encoding="utf-8")
    (out / "roster.csv").write_text(roster_text(org), encoding="utf-8", newline="")
    planted = manifest(org, fixtures=with_fixtures)
    (out / FILE).write_text(planted.to_json(), encoding="utf-8")
    log.info("sample_written", out=str(out), scale=spec.scale, today=spec.today, **planted.counts)
    return planted


def write_demo(workdir: Path, *, today: date) -> Manifest:
    """The demo organisation as of ``today`` in ``workdir``."""
    return write(replace(SCALES["demo"], today=today.isoformat()), workdir)


def mutate(out: Path, fraction: float, *, seed: int = 7) -> dict[str, int]:
    """Change ``fraction`` of all occurrences written in ``out``, as a day of edits would,
    and rewrite only the calendars that hold a change. Returns what changed."""
    planted = read_manifest(out)
    org = plan(planted.spec)
    changed, touched = scaled.mutate(org, fraction, planted.counts["occurrences"], seed=seed)
    for email in sorted(touched):
        fast.write_person(org, org.people[email], out, (out / "fixtures").is_dir())
    return {**changed, "calendars_rewritten": len(touched)}

"""``python -m bench.generate``: write the synthetic organisation at a bench scale.

The organisation itself (people, series, roster, config, calendars, Google-shaped
fixtures and the manifest of planted counts) is :mod:`mentorpulse.sample`, the generator
the demo uses too; this is its command line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from mentorpulse.sample import SCALES, write
from mentorpulse.sample.org import TODAY

BENCH_SCALES = ("small", "medium", "large")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.generate",
        description="Write a deterministic synthetic organisation (roster, config, calendars).",
    )
    parser.add_argument("--scale", choices=BENCH_SCALES, help="Preset for the numbers below.")
    parser.add_argument("--pairs", type=int, help="Number of mentor/mentee pairings.")
    parser.add_argument("--months", type=int, help="Months of history before today.")
    parser.add_argument("--noise", type=int, help="Other meetings per person per week.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the random plan.")
    parser.add_argument("--today", default=TODAY.isoformat(), help="The day the org is 'now'.")
    parser.add_argument("--out", type=Path, required=True, help="Folder to write into.")
    parser.add_argument(
        "--no-fixtures", action="store_true", help="Skip the Google-shaped JSON fixtures."
    )
    args = parser.parse_args(argv)
    sizes = {
        k: getattr(args, k) for k in ("pairs", "months", "noise") if getattr(args, k) is not None
    }
    spec = replace(SCALES[args.scale or "small"], seed=args.seed, today=args.today, **sizes)
    if sizes or not args.scale:
        spec = replace(spec, scale="custom")
    planted = write(spec, args.out, fixtures=not args.no_fixtures)
    print(json.dumps({"out": str(args.out), **planted.counts}, indent=2))


if __name__ == "__main__":
    main()

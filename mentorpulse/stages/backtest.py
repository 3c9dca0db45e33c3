"""The backtest stage (``rules test``): replay stored history with the rules in force,
or compare them with a candidate configuration. Reads only; sends nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.errors import UserError
from mentorpulse.rules.backtest import Case, Difference, compare, replay
from mentorpulse.stages.context import Context
from mentorpulse.stages.timelines import load_timelines

IN_FORCE = "in force"  # the status of every episode when no candidate is compared


@dataclass(frozen=True, slots=True)
class Backtest:
    first: date
    last: date
    replayed: int  # pairings judged (the larger number, when two configurations differ)
    rows: tuple[Difference, ...]

    @property
    def counts(self) -> dict[str, int]:
        """Episodes by status, in the order the statuses first appear."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts


def backtest(
    ctx: Context,
    first: date,
    last: date,
    *,
    candidate: MentorpulseConfig | None = None,
    candidate_name: str = "",
) -> Backtest:
    """Every episode that would have started firing between ``first`` and ``last``; with
    a ``candidate``, lined up with the rules in force (``candidate_name`` names it in
    errors)."""
    in_force_cases = _cases(ctx, ctx.config)
    in_force = replay(in_force_cases, first, last)
    if candidate is None:
        rows = [Difference(f, IN_FORCE) for f in in_force]
        return Backtest(first, last, len(in_force_cases), tuple(rows))
    missing = [p.id for p in ctx.config.programs if candidate.program(p.id) is None]
    if missing:
        raise UserError(
            f"{candidate_name}: programs {', '.join(missing)} of the configuration in "
            f"force are missing from the candidate"
        )
    candidate_cases = _cases(ctx, candidate)
    rows = compare(in_force, replay(candidate_cases, first, last))
    replayed = max(len(in_force_cases), len(candidate_cases))
    return Backtest(first, last, replayed, tuple(rows))


def _cases(ctx: Context, config: MentorpulseConfig) -> list[Case]:
    """The pairings as ``config`` judges them (its overrides and pauses too)."""
    with ctx.db() as db:
        loaded = load_timelines(db, config, ctx.roster)
    found = []
    for judged in loaded:
        timeline = judged.timeline
        program = config.program(timeline.program) if timeline else None
        if timeline is not None and program is not None:
            found.append(Case(timeline, program, config.rules_for(program)))
    return found

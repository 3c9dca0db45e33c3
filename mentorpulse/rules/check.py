"""Checks of the rules against the roster, made once both are loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mentorpulse.config.loader import format_key_path, key_line
from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig, pair_matches
from mentorpulse.errors import ConfigError


def check_selectors(
    config: MentorpulseConfig, roster: Sequence[RosterPairing], config_file: Path
) -> None:
    """A ``pairings`` pattern or a program override that matches no pairing is a mistake
    (usually a typo in an address): say so at its line instead of silently judging
    nothing. All such problems are reported at once."""
    problems: list[str] = []

    def matches(pattern: str, program_ids: Sequence[str]) -> bool:
        return any(
            pair_matches(e.mentor_email, e.mentee_email, pattern)
            for e in roster
            if e.program in program_ids
        )

    def report(keys: tuple[str | int, ...], pattern: str, where: str) -> None:
        line = key_line(config_file, keys)
        problems.append(
            f"{config_file}:{line}: {format_key_path(keys)}: {pattern!r} matches no "
            f"MENTOR:MENTEE pair of {where} in the roster"
        )

    for p_index, program in enumerate(config.programs):
        scopes: list[tuple[tuple[str | int, ...], Sequence[str]]] = [
            (("programs", p_index, "rules", r_index, "pairings", i), (pattern,))
            for r_index, rule in enumerate(program.rules)
            for i, pattern in enumerate(rule.pairings)
        ]
        scopes += [
            (("programs", p_index, "overrides", o_index, "pair"), (override.pair,))
            for o_index, override in enumerate(program.overrides)
        ]
        for keys, (pattern,) in scopes:
            if not matches(pattern, [program.id]):
                report(keys, pattern, f"program {program.id!r}")
    for r_index, rule in enumerate(config.rules):
        selected = [p.id for p in config.programs if config.selects(rule, p.id)]
        for i, pattern in enumerate(rule.pairings):
            if not matches(pattern, selected):
                report(("rules", r_index, "pairings", i), pattern, "its programs")
    if problems:
        raise ConfigError(problems)

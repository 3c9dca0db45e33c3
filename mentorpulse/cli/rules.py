"""Admin tools of the rules engine: backtest (`rules test`), `explain`, and silences."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from mentorpulse.cli.common import (
    ConfigOption,
    FormatOption,
    OptionError,
    OutputFormat,
    TzOption,
    check_range,
    day_option,
    duration_option,
    heading,
    out,
    print_json,
    user_errors,
    view_zone,
    with_context,
)
from mentorpulse.text import local_time

rules_app = typer.Typer(help="Try rules against stored history.", no_args_is_help=True)
silence_app = typer.Typer(
    help="Silence findings of a pair or a program: state is kept, nobody is notified.",
    no_args_is_help=True,
)

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from mentorpulse import stages
    from mentorpulse.stages.backtest import Backtest
    from mentorpulse.stages.explain import Explanation, FindingView, PairingView
    from mentorpulse.storage.models import Silence


SILENCE_LIMIT = timedelta(days=366)  # a year of leave; longer is a pairing to end, not mute


# ---------------------------------------------------------------- rules test


@rules_app.command("test")
def rules_test(  # keyword-only: typer passes options by name
    *,
    config: ConfigOption = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First day to replay (YYYY-MM-DD); default 90 days ago."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day to replay (YYYY-MM-DD); default today.")
    ] = None,
    rules_file: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="A candidate mentorpulse.yaml whose programs and rules are compared with "
            "the rules in force.",
        ),
    ] = None,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Replay stored history day by day and print what would have fired, when, for whom."""
    from mentorpulse.config.loader import load_config
    from mentorpulse.stages.backtest import backtest

    with user_errors():
        first_given = day_option(start, "--from") if start is not None else None
        last_given = day_option(end, "--to") if end is not None else None
        candidate = load_config(rules_file) if rules_file is not None else None

    def action(ctx: stages.Context) -> None:
        zone = view_zone(tz, ctx.config)
        last = last_given or ctx.clock().astimezone(zone).date()
        first = first_given or last - timedelta(days=90)
        check_range(first, last)
        result = backtest(ctx, first, last, candidate=candidate, candidate_name=str(rules_file))
        if fmt is OutputFormat.json:
            _print_backtest_json(result, zone)
        else:
            _print_backtest(result, zone)

    with_context(config, action, write=False)


def _print_backtest_json(result: Backtest, zone: ZoneInfo) -> None:
    fired = [
        {
            "day": row.fired.day.isoformat(),
            "firing_since": row.fired.firing_since,
            "mentor": row.fired.mentor,
            "mentee": row.fired.mentee,
            "rule": row.fired.rule_id,
            "severity": row.fired.severity,
            "config": row.status,
        }
        for row in result.rows
    ]
    document = {
        "from": result.first.isoformat(),
        "to": result.last.isoformat(),
        "zone": str(zone),
        "pairings_replayed": result.replayed,
        "fired": fired,
        "counts": result.counts,
    }
    print_json(document, zone=zone)


def _print_backtest(result: Backtest, zone: ZoneInfo) -> None:
    table = Table("day", "firing since", "mentor", "mentee", "rule", "severity", "config")
    for row in result.rows:
        f = row.fired
        table.add_row(
            f.day.isoformat(),
            local_time(f.firing_since, zone),
            f.mentor,
            f.mentee,
            f.rule_id,
            f.severity,
            row.status,
        )
    out.print(table)
    summary = ", ".join(f"{n} {s}" for s, n in result.counts.items()) or "nothing"
    out.print(
        f"{result.first} … {result.last}: {result.replayed} pairings replayed; "
        f"would have fired: {summary}",
        highlight=False,
    )


# ---------------------------------------------------------------- explain


def explain(
    pair: Annotated[str, typer.Argument(help="MENTOR:MENTEE email addresses, or a pairing id.")],
    config: ConfigOption = None,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Why a pairing is (or is not) flagged: sessions, evidence, verdicts, next deadline."""
    from dataclasses import asdict

    from mentorpulse.stages.explain import explain as explained

    def action(ctx: stages.Context) -> None:
        zone = view_zone(tz, ctx.config)
        explanation = explained(ctx, pair)
        if fmt is OutputFormat.json:
            print_json({"zone": str(zone), **asdict(explanation)}, zone=zone)
            return
        for item in explanation.pairings:
            _print_explained(item, explanation, zone)

    with_context(config, action, write=False)


def _print_explained(item: PairingView, explanation: Explanation, zone: ZoneInfo) -> None:
    heading(f"{item.key} (pairing {item.id})")
    out.print(
        f"program {item.program}, started {item.started_on}, "
        f"ended {item.ended_on or '—'}, {item.state}"
        + (f", pairing's zone {item.pairing_zone}" if item.pairing_zone else "")
        + (f", own cadence {item.cadence}" if item.cadence else "")
        + f"; times in {zone}"
    )
    asked = any(s.answers for s in item.sessions)
    columns = ["start", "outcome", "confidence", "evidence (strongest first)"]
    sessions = Table(*columns, *(["answers (attendance check)"] if asked else []))
    for s in item.sessions:
        answers = [f"{a.email}: {'yes' if a.happened else 'no'}" for a in s.answers]
        cells = [local_time(s.start, zone), s.outcome, f"{s.confidence:.0%}", "; ".join(s.evidence)]
        sessions.add_row(*cells, *(["\n".join(answers) or "—"] if asked else []))
    out.print(sessions)
    verdicts = Table("rule", "verdict now", "finding", "facts")
    for rule in item.rules:
        facts = {**rule.facts, **({"error": rule.error} if rule.error is not None else {})}
        verdicts.add_row(
            rule.rule,
            rule.verdict,
            _finding_text(rule.finding, zone),
            "\n".join(f"{k}: {v}" for k, v in facts.items()),
        )
    out.print(verdicts)
    if explanation.stale_sources:
        out.print(
            "stale sources (findings suppressed): "
            + "; ".join(f"{k}: {v}" for k, v in explanation.stale_sources.items())
        )
    out.print(f"next deadline: {local_time(item.next_deadline, zone)}")


def _finding_text(finding: FindingView | None, zone: ZoneInfo) -> str:
    """A finding in one line; each moment said once (a firing finding's start is its
    firing time, and when it began to hold is added only when that differs)."""
    if finding is None:
        return "none"
    state, since, firing, until = finding.state, finding.since, finding.firing_since, finding.until
    if state == "firing" and firing is not None:
        text = f"firing since {local_time(firing, zone)}"
        if since != firing:
            text += f" (holding since {local_time(since, zone)})"
    elif state == "resolved" and until is not None:
        text = f"resolved at {local_time(until, zone)}"
        if firing is not None:
            text += f" (had fired since {local_time(firing, zone)})"
    else:
        text = f"{state} since {local_time(since, zone)}"
        if firing is not None:
            text += f", fired at {local_time(firing, zone)}"
    if finding.reason:
        text += f" ({finding.reason})"
    if finding.silence is not None:
        silence = finding.silence
        text += f"; silenced by #{silence.id} until {local_time(silence.until, zone)}"
    return text


# ---------------------------------------------------------------- silences


@silence_app.command("add")
def silence_add(
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in list and explain).")],
    duration: Annotated[
        str, typer.Option("--for", help="How long, like 14d or 2w.", show_default=False)
    ],
    pair: Annotated[
        str | None, typer.Option("--pair", help="MENTOR:MENTEE email addresses.")
    ] = None,
    program: Annotated[
        str | None,
        typer.Option("--program", help="A program id (with --pair: that pair in it only)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Silence a pair or a whole program for a while."""
    from mentorpulse.stages.silences import SilenceRequest, add_silence

    with user_errors():
        length = duration_option(duration, "--for")
        if not timedelta(0) < length <= SILENCE_LIMIT:
            raise OptionError(
                f"--for: a silence lasts more than 0s and at most {SILENCE_LIMIT.days}d, "
                f"got {duration!r}"
            )
        if pair is None and program is None:
            raise OptionError("give --pair MENTOR:MENTEE or --program ID (or both)")
        if not reason.strip():
            raise OptionError("--reason must not be empty")

    def action(ctx: stages.Context) -> None:
        mentor, mentee = _silenced_pair(ctx, pair, program)
        request = SilenceRequest(reason.strip(), length, program, mentor, mentee)
        silence = add_silence(ctx, request)
        until = local_time(silence.ends_at, view_zone(None, ctx.config))
        out.print(f"silence #{silence.id} until {until}", highlight=False)

    with_context(config, action)


def _silenced_pair(
    ctx: stages.Context, pair: str | None, program: str | None
) -> tuple[str | None, str | None]:
    """Check ``--program`` and ``--pair`` against the config and roster; the pair's
    mentor and mentee emails (None, None without ``--pair``)."""
    if program is not None and ctx.config.program(program) is None:
        known = ", ".join(p.id for p in ctx.config.programs) or "none"
        raise OptionError(f"--program: unknown program {program!r} (programs: {known})")
    if pair is None:
        return None, None
    mentor, _, mentee = pair.lower().partition(":")
    if not any(
        e.mentor_email == mentor
        and e.mentee_email == mentee
        and (program is None or e.program == program)
        for e in ctx.roster
    ):
        raise OptionError(f"--pair: {pair} is not a pair in the roster")
    return mentor, mentee


@silence_app.command("list")
def silence_list(
    config: ConfigOption = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List active silences (with --all: also expired ones)."""
    from mentorpulse.stages.silences import list_silences

    def action(ctx: stages.Context) -> None:
        zone = view_zone(tz, ctx.config)
        silences = list_silences(ctx, expired=show_all)
        if fmt is OutputFormat.json:
            _print_silences_json(silences, zone)
        else:
            _print_silences(silences, zone)

    with_context(config, action, write=False)


def _print_silences_json(silences: Sequence[Silence], zone: ZoneInfo) -> None:
    document = {
        "zone": str(zone),
        "silences": [
            {
                "id": s.id,
                "program": s.program_id,
                "mentor": s.mentor_email,
                "mentee": s.mentee_email,
                "from": s.starts_at,
                "until": s.ends_at,
                "reason": s.reason,
                "by": s.created_by,
            }
            for s in silences
        ],
    }
    print_json(document, zone=zone)


def _print_silences(silences: Sequence[Silence], zone: ZoneInfo) -> None:
    table = Table("id", "scope", "from", "until", "reason", "by")
    for s in silences:
        scope = " ".join(
            part
            for part in (
                f"program {s.program_id}" if s.program_id else "",
                f"pair {s.mentor_email}:{s.mentee_email}" if s.mentor_email else "",
            )
            if part
        )
        table.add_row(
            str(s.id),
            scope,
            local_time(s.starts_at, zone),
            local_time(s.ends_at, zone),
            s.reason,
            s.created_by or "",
        )
    out.print(table)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The silence id (see `silence list`).")],
    config: ConfigOption = None,
) -> None:
    """End a silence now: its findings notify again from the next evaluation."""
    from mentorpulse.stages.silences import expire_silence

    def action(ctx: stages.Context) -> None:
        expire_silence(ctx, silence_id)
        out.print(f"silence #{silence_id} expired", highlight=False)

    with_context(config, action)

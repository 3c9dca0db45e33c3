"""Admin tools of the rules engine: backtest (`rules test`), `explain`, and silences."""

from __future__ import annotations

import getpass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from mentorpulse.commands.common import (
    ConfigOption,
    OptionError,
    check_range,
    day_option,
    duration_option,
    out,
    user_errors,
    with_context,
)
from mentorpulse.errors import UserError

rules_app = typer.Typer(help="Try rules against stored history.", no_args_is_help=True)
silence_app = typer.Typer(
    help="Silence findings of a pair or a program: state is kept, nobody is notified.",
    no_args_is_help=True,
)

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from sqlalchemy.orm import Session as DbSession

    from mentorpulse.config.schema import MentorpulseConfig
    from mentorpulse.daemon import jobs
    from mentorpulse.storage.models import Finding


def _local(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return "—"
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M %Z}"


# ---------------------------------------------------------------- rules test


@rules_app.command("test")
def rules_test(
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
) -> None:
    """Replay stored history day by day and print what would have fired, when, for whom."""
    from mentorpulse.config.loader import load_config
    from mentorpulse.daemon.jobs.evaluate import load_timelines
    from mentorpulse.rules.backtest import Case, Difference, compare, replay

    with user_errors():
        first_given = day_option(start, "--from") if start is not None else None
        last_given = day_option(end, "--to") if end is not None else None
        candidate = load_config(rules_file) if rules_file is not None else None

    def action(ctx: jobs.Context) -> None:
        today = ctx.clock().astimezone(ZoneInfo(ctx.config.timezone)).date()
        last = last_given or today
        first = first_given or last - timedelta(days=90)
        check_range(first, last)
        replayed = 0

        def cases(source: MentorpulseConfig) -> list[Case]:
            """The pairings as ``source`` judges them (its overrides and pauses too)."""
            nonlocal replayed
            with ctx.sessions() as db:
                loaded = load_timelines(db, source, ctx.roster)
            found = []
            for _pairing, timeline in loaded:
                program = source.program(timeline.program) if timeline else None
                if timeline is not None and program is not None:
                    found.append(Case(timeline, program, source.rules_for(program)))
            replayed = max(replayed, len(found))
            return found

        in_force = replay(cases(ctx.config), first, last)
        if candidate is None:
            rows = [Difference(f, "in force") for f in in_force]
        else:
            missing = [p.id for p in ctx.config.programs if candidate.program(p.id) is None]
            if missing:
                raise UserError(
                    f"{rules_file}: programs {', '.join(missing)} of the configuration in "
                    f"force are missing from the candidate"
                )
            rows = compare(in_force, replay(cases(candidate), first, last))
        table = Table("day", "firing since", "mentor", "mentee", "rule", "severity", "config")
        for row in rows:
            f = row.fired
            table.add_row(
                f.day.isoformat(),
                _local(f.firing_since, ctx.config.timezone),
                f.mentor,
                f.mentee,
                f.rule_id,
                f.severity,
                row.status,
            )
        out.print(table)
        counts = {
            s: sum(1 for r in rows if r.status == s) for s in dict.fromkeys(r.status for r in rows)
        }
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing"
        out.print(
            f"{first} … {last}: {replayed} pairings replayed; would have fired: {summary}",
            highlight=False,
        )

    with_context(config, action)


# ---------------------------------------------------------------- explain


def explain(
    pair: Annotated[str, typer.Argument(help="MENTOR:MENTEE email addresses, or a pairing id.")],
    config: ConfigOption = None,
) -> None:
    """Why a pairing is (or is not) flagged: sessions, evidence, verdicts, next deadline."""
    from sqlalchemy import select

    from mentorpulse.daemon.jobs.evaluate import load_timelines, stale_sources
    from mentorpulse.rules.engine import evaluate
    from mentorpulse.storage.models import Evidence, Finding
    from mentorpulse.storage.models import Session as SessionRow

    def action(ctx: jobs.Context) -> None:
        now = ctx.clock()
        with ctx.sessions() as db:
            ids = _pairing_ids(db, pair)
            stale = stale_sources(db, ctx.config, now)
            for pairing, timeline in load_timelines(db, ctx.config, ctx.roster, ids):
                zone = timeline.zone if timeline else ctx.config.timezone
                program = ctx.config.program(pairing.program_id)
                out.rule(f"{pairing.key} (pairing {pairing.id})")
                state = "active" if pairing.active else "left the roster"
                if pairing.active and timeline is None:
                    state = "paused (not judged)"
                out.print(
                    f"program {pairing.program_id}, started {pairing.started_on}, "
                    f"ended {pairing.ended_on or '—'}, {state}, zone {zone}"
                    + (
                        f", own cadence {timeline.cadence}" if timeline and timeline.cadence else ""
                    ),
                    highlight=False,
                )
                sessions = Table("start", "outcome", "confidence", "evidence (strongest first)")
                rows = db.scalars(
                    select(SessionRow)
                    .where(SessionRow.pairing_id == pairing.id)
                    .order_by(SessionRow.start)
                )
                for s in rows:
                    proofs = db.scalars(
                        select(Evidence.detail)
                        .where(Evidence.session_id == s.id)
                        .order_by(Evidence.rank)
                    )
                    sessions.add_row(
                        _local(s.start, zone), s.outcome, f"{s.confidence:.0%}", "; ".join(proofs)
                    )
                out.print(sessions)
                stored = {
                    f.rule_id: f
                    for f in db.scalars(select(Finding).where(Finding.pairing_id == pairing.id))
                }
                verdicts = Table("rule", "verdict now", "finding", "facts")
                if timeline is not None and program is not None:
                    for condition in evaluate(
                        timeline, program, now, ctx.config.rules_for(program)
                    ):
                        finding = stored.get(condition.rule_id)
                        verdict = "holds" if condition.holds else "clear"
                        if "error" in condition.facts:
                            verdict = "error"
                        verdicts.add_row(
                            condition.rule_id,
                            verdict,
                            _finding_text(db, finding, zone),
                            "\n".join(f"{k}: {v}" for k, v in condition.facts.items()),
                        )
                for rule_id, finding in stored.items():
                    if timeline is None or program is None:
                        verdicts.add_row(
                            rule_id, "not judged", _finding_text(db, finding, zone), ""
                        )
                out.print(verdicts)
                if stale:
                    out.print(
                        "stale sources (findings suppressed): "
                        + "; ".join(f"{k}: {v}" for k, v in stale.items()),
                        highlight=False,
                    )
                out.print(f"next deadline: {_local(pairing.next_deadline, zone)}", highlight=False)

    with_context(config, action)


def _finding_text(db: DbSession, finding: Finding | None, zone: str) -> str:
    from mentorpulse.storage.models import Silence

    if finding is None:
        return "none"
    text = f"{finding.state} since {_local(finding.since, zone)}"
    if finding.firing_since:
        text += f", firing since {_local(finding.firing_since, zone)}"
    if finding.until:
        text += f", until {_local(finding.until, zone)}"
    if finding.reason:
        text += f" ({finding.reason})"
    if finding.silence_id is not None:
        silence = db.get(Silence, finding.silence_id)
        if silence is not None:
            text += f"; silenced by #{silence.id} until {_local(silence.ends_at, zone)}"
    return text


def _pairing_ids(db: DbSession, pair: str) -> list[int]:
    from sqlalchemy import select

    from mentorpulse.storage.models import Pairing, Person

    if pair.isdigit():
        if db.get(Pairing, int(pair)) is None:
            raise UserError(f"no pairing with id {pair}")
        return [int(pair)]
    mentor_email, _, mentee_email = pair.lower().partition(":")
    if not mentee_email:
        raise UserError(f"{pair!r}: expected MENTOR:MENTEE email addresses or a pairing id")
    people = dict(db.execute(select(Person.email, Person.id)).all())
    found = list(
        db.scalars(
            select(Pairing.id).where(
                Pairing.mentor_id == people.get(mentor_email, -1),
                Pairing.mentee_id == people.get(mentee_email, -1),
            )
        )
    )
    if not found:
        raise UserError(f"no pairing of mentor {mentor_email} with mentee {mentee_email}")
    return found


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
    from mentorpulse.daemon.jobs.evaluate import apply_silences
    from mentorpulse.storage.models import Silence

    with user_errors():
        length = duration_option(duration, "--for")
        if pair is None and program is None:
            raise OptionError("give --pair MENTOR:MENTEE or --program ID (or both)")
        if not reason.strip():
            raise OptionError("--reason must not be empty")

    def action(ctx: jobs.Context) -> None:
        if program is not None and ctx.config.program(program) is None:
            known = ", ".join(p.id for p in ctx.config.programs) or "none"
            raise OptionError(f"--program: unknown program {program!r} (programs: {known})")
        mentor = mentee = None
        if pair is not None:
            mentor, _, mentee = pair.lower().partition(":")
            if not any(
                e.mentor_email == mentor
                and e.mentee_email == mentee
                and (program is None or e.program == program)
                for e in ctx.roster
            ):
                raise OptionError(f"--pair: {pair} is not a pair in the roster")
        now = ctx.clock()
        with ctx.sessions.begin() as db:
            silence = Silence(
                program_id=program,
                mentor_email=mentor,
                mentee_email=mentee,
                starts_at=now,
                ends_at=now + length,
                reason=reason.strip(),
                created_by=getpass.getuser(),
                created_at=now,
            )
            db.add(silence)
            db.flush()
            apply_silences(db, now)
            out.print(
                f"silence #{silence.id} until {_local(silence.ends_at, ctx.config.timezone)}",
                highlight=False,
            )

    with_context(config, action)


@silence_app.command("list")
def silence_list(
    config: ConfigOption = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
) -> None:
    """List active silences (with --all: also expired ones)."""
    from sqlalchemy import select

    from mentorpulse.storage.models import Silence

    def action(ctx: jobs.Context) -> None:
        now = ctx.clock()
        table = Table("id", "scope", "from", "until", "reason", "by")
        with ctx.sessions() as db:
            query = select(Silence).order_by(Silence.id)
            if not show_all:
                query = query.where(Silence.ends_at > now)
            for s in db.scalars(query):
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
                    _local(s.starts_at, ctx.config.timezone),
                    _local(s.ends_at, ctx.config.timezone),
                    s.reason,
                    s.created_by or "",
                )
        out.print(table)

    with_context(config, action)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The silence id (see `silence list`).")],
    config: ConfigOption = None,
) -> None:
    """End a silence now: its findings notify again from the next evaluation."""
    from mentorpulse.daemon.jobs.evaluate import apply_silences
    from mentorpulse.storage.models import Silence

    def action(ctx: jobs.Context) -> None:
        now = ctx.clock()
        with ctx.sessions.begin() as db:
            silence = db.get(Silence, silence_id)
            if silence is None:
                raise UserError(f"no silence with id {silence_id}")
            if silence.ends_at > now:
                silence.ends_at = max(now, silence.starts_at)
            apply_silences(db, now)
        out.print(f"silence #{silence_id} expired", highlight=False)

    with_context(config, action)

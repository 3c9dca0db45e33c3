"""Admin tools of the rules engine: backtest (`rules test`), `explain`, and silences."""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
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
    local_time,
    out,
    print_json,
    user_errors,
    view_zone,
    with_context,
)
from mentorpulse.errors import UserError

rules_app = typer.Typer(help="Try rules against stored history.", no_args_is_help=True)
silence_app = typer.Typer(
    help="Silence findings of a pair or a program: state is kept, nobody is notified.",
    no_args_is_help=True,
)

if TYPE_CHECKING:  # the stages load lazily, so `--help` stays fast
    from sqlalchemy.orm import Session as Db

    from mentorpulse import stages
    from mentorpulse.config.roster import RosterPairing
    from mentorpulse.config.schema import MentorpulseConfig
    from mentorpulse.rules.kinds import Timeline
    from mentorpulse.storage.models import Finding, Pairing


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
    from mentorpulse.rules.backtest import Case, Difference, compare, replay
    from mentorpulse.stages.evaluate import load_timelines

    with user_errors():
        first_given = day_option(start, "--from") if start is not None else None
        last_given = day_option(end, "--to") if end is not None else None
        candidate = load_config(rules_file) if rules_file is not None else None

    def action(ctx: stages.Context) -> None:
        zone = view_zone(tz, ctx.config)
        today = ctx.clock().astimezone(zone).date()
        last = last_given or today
        first = first_given or last - timedelta(days=90)
        check_range(first, last)
        replayed = 0

        def cases(source: MentorpulseConfig) -> list[Case]:
            """The pairings as ``source`` judges them (its overrides and pauses too)."""
            nonlocal replayed
            with ctx.db() as db:
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
        counts = {
            s: sum(1 for r in rows if r.status == s) for s in dict.fromkeys(r.status for r in rows)
        }
        if fmt is OutputFormat.json:
            print_json(
                {
                    "from": first.isoformat(),
                    "to": last.isoformat(),
                    "zone": str(zone),
                    "pairings_replayed": replayed,
                    "fired": [
                        {
                            "day": row.fired.day.isoformat(),
                            "firing_since": row.fired.firing_since,
                            "mentor": row.fired.mentor,
                            "mentee": row.fired.mentee,
                            "rule": row.fired.rule_id,
                            "severity": row.fired.severity,
                            "config": row.status,
                        }
                        for row in rows
                    ],
                    "counts": counts,
                },
                zone=zone,
            )
            return
        table = Table("day", "firing since", "mentor", "mentee", "rule", "severity", "config")
        for row in rows:
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
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing"
        out.print(
            f"{first} … {last}: {replayed} pairings replayed; would have fired: {summary}",
            highlight=False,
        )

    with_context(config, action, write=False)


# ---------------------------------------------------------------- explain


def explain(
    pair: Annotated[str, typer.Argument(help="MENTOR:MENTEE email addresses, or a pairing id.")],
    config: ConfigOption = None,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Why a pairing is (or is not) flagged: sessions, evidence, verdicts, next deadline."""
    from mentorpulse.stages.evaluate import load_timelines, stale_sources

    def action(ctx: stages.Context) -> None:
        now = ctx.clock()
        zone = view_zone(tz, ctx.config)
        with ctx.db() as db:
            ids = _pairing_ids(db, pair, ctx.roster)
            stale = stale_sources(db, ctx.config, now)
            explained = [
                _explained(db, ctx.config, pairing, timeline, now)
                for pairing, timeline in load_timelines(db, ctx.config, ctx.roster, ids)
            ]
        if fmt is OutputFormat.json:
            print_json(
                {"zone": str(zone), "stale_sources": stale, "pairings": explained}, zone=zone
            )
            return
        for item in explained:
            _print_explained(item, stale, zone)

    with_context(config, action, write=False)


def _explained(
    db: Db,
    config: MentorpulseConfig,
    pairing: Pairing,
    timeline: Timeline | None,
    now: datetime,
) -> dict[str, Any]:
    """One pairing as explain shows it: plain data, for the table and for --format json."""
    from sqlalchemy import select

    from mentorpulse.rules.engine import evaluate
    from mentorpulse.storage.models import Evidence, Finding, MentoringSession

    program = config.program(pairing.program_id)
    state = "active" if pairing.active else "left the roster"
    if pairing.active and timeline is None:
        state = "paused (not judged)"
    sessions = []
    for row in db.scalars(
        select(MentoringSession)
        .where(MentoringSession.pairing_id == pairing.id)
        .order_by(MentoringSession.start)
    ):
        evidence = db.scalars(
            select(Evidence.detail).where(Evidence.session_id == row.id).order_by(Evidence.rank)
        )
        sessions.append(
            {
                "start": row.start,
                "outcome": row.outcome,
                "confidence": row.confidence,
                "evidence": list(evidence),
            }
        )
    stored = {
        f.rule_id: f for f in db.scalars(select(Finding).where(Finding.pairing_id == pairing.id))
    }
    rules = []
    if timeline is not None and program is not None:
        for condition in evaluate(timeline, program, now, config.rules_for(program)):
            verdict = "holds" if condition.holds else "clear"
            if "error" in condition.facts:
                verdict = "error"
            rules.append(
                {
                    "rule": condition.rule_id,
                    "verdict": verdict,
                    "finding": _finding(db, stored.get(condition.rule_id)),
                    "facts": dict(condition.facts),
                }
            )
    else:
        rules = [
            {"rule": rule_id, "verdict": "not judged", "finding": _finding(db, f), "facts": {}}
            for rule_id, f in stored.items()
        ]
    return {
        "id": pairing.id,
        "key": pairing.key,
        "program": pairing.program_id,
        "started_on": pairing.started_on,
        "ended_on": pairing.ended_on,
        "state": state,
        "pairing_zone": timeline.zone if timeline else None,
        "cadence": timeline.cadence if timeline else None,
        "sessions": sessions,
        "rules": rules,
        "next_deadline": pairing.next_deadline,
    }


def _finding(db: Db, finding: Finding | None) -> dict[str, Any] | None:
    from mentorpulse.storage.models import Silence

    if finding is None:
        return None
    silence = db.get(Silence, finding.silence_id) if finding.silence_id is not None else None
    return {
        "state": finding.state,
        "since": finding.since,
        "firing_since": finding.firing_since,
        "until": finding.until,
        "reason": finding.reason,
        "silence": None if silence is None else {"id": silence.id, "until": silence.ends_at},
    }


def _print_explained(item: dict[str, Any], stale: dict[str, str], zone: ZoneInfo) -> None:
    heading(f"{item['key']} (pairing {item['id']})")
    out.print(
        f"program {item['program']}, started {item['started_on']}, "
        f"ended {item['ended_on'] or '—'}, {item['state']}"
        + (f", pairing's zone {item['pairing_zone']}" if item["pairing_zone"] else "")
        + (f", own cadence {item['cadence']}" if item["cadence"] else "")
        + f"; times in {zone}"
    )
    sessions = Table("start", "outcome", "confidence", "evidence (strongest first)")
    for s in item["sessions"]:
        sessions.add_row(
            local_time(s["start"], zone),
            s["outcome"],
            f"{s['confidence']:.0%}",
            "; ".join(s["evidence"]),
        )
    out.print(sessions)
    verdicts = Table("rule", "verdict now", "finding", "facts")
    for rule in item["rules"]:
        verdicts.add_row(
            rule["rule"],
            rule["verdict"],
            _finding_text(rule["finding"], zone),
            "\n".join(f"{k}: {v}" for k, v in rule["facts"].items()),
        )
    out.print(verdicts)
    if stale:
        out.print(
            "stale sources (findings suppressed): "
            + "; ".join(f"{k}: {v}" for k, v in stale.items())
        )
    out.print(f"next deadline: {local_time(item['next_deadline'], zone)}")


def _finding_text(finding: dict[str, Any] | None, zone: ZoneInfo) -> str:
    """A finding in one line; each moment said once (a firing finding's start is its
    firing time, and when it began to hold is added only when that differs)."""
    if finding is None:
        return "none"
    state, since, firing, until = (finding[k] for k in ("state", "since", "firing_since", "until"))
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
    if finding["reason"]:
        text += f" ({finding['reason']})"
    if finding["silence"] is not None:
        silence = finding["silence"]
        text += f"; silenced by #{silence['id']} until {local_time(silence['until'], zone)}"
    return text


def _pairing_ids(db: Db, pair: str, roster: Sequence[RosterPairing]) -> list[int]:
    """The pairings the database holds for ``pair`` (explain only reads: a pair added to
    the roster since the last writing run is named as such, not written)."""
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
    if not found and any(
        (e.mentor_email, e.mentee_email) == (mentor_email, mentee_email) for e in roster
    ):
        raise UserError(
            f"mentor {mentor_email} with mentee {mentee_email} is in the roster but not yet "
            "in the database: run `mentorpulse evaluate` (the daemon adds it when it next starts)"
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
    from mentorpulse.stages.evaluate import apply_silences
    from mentorpulse.storage.models import Silence

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
        with ctx.db.begin() as db:
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
                f"silence #{silence.id} until "
                f"{local_time(silence.ends_at, view_zone(None, ctx.config))}",
                highlight=False,
            )

    with_context(config, action)


@silence_app.command("list")
def silence_list(
    config: ConfigOption = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include expired silences.")] = False,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List active silences (with --all: also expired ones)."""
    from sqlalchemy import select

    from mentorpulse.storage.models import Silence

    def action(ctx: stages.Context) -> None:
        now = ctx.clock()
        zone = view_zone(tz, ctx.config)
        with ctx.db() as db:
            query = select(Silence).order_by(Silence.id)
            if not show_all:
                query = query.where(Silence.ends_at > now)
            silences = list(db.scalars(query))
        if fmt is OutputFormat.json:
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
            return
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

    with_context(config, action, write=False)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[int, typer.Argument(help="The silence id (see `silence list`).")],
    config: ConfigOption = None,
) -> None:
    """End a silence now: its findings notify again from the next evaluation."""
    from mentorpulse.stages.evaluate import apply_silences
    from mentorpulse.storage.models import Silence

    def action(ctx: stages.Context) -> None:
        now = ctx.clock()
        with ctx.db.begin() as db:
            silence = db.get(Silence, silence_id)
            if silence is None:
                raise UserError(f"no silence with id {silence_id}")
            if silence.ends_at > now:
                silence.ends_at = max(now, silence.starts_at)
            apply_silences(db, now)
        out.print(f"silence #{silence_id} expired", highlight=False)

    with_context(config, action)

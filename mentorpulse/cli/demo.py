"""`mentorpulse demo`: a sample organisation, run through every stage on SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.table import Table

from mentorpulse.cli.common import (
    out,
    user_errors,
)
from mentorpulse.errors import UserError

if TYPE_CHECKING:
    from mentorpulse import stages

DEMO_SPAN = timedelta(days=91)  # the report covers the generated window, both sides of today
MANIFEST = ".mentorpulse-demo.json"  # what the demo wrote here, so it overwrites only that
DATABASE = "mentorpulse.db"  # the demo config's; its content changes, so it has no digest
LEGACY_MARKER = b"# The mentorpulse demo organisation"  # first line of a demo's yaml


@dataclass
class DemoSummary:
    workdir: Path
    pairs: int
    outcomes: dict[str, int]
    findings: dict[str, int]
    emails_sent: int
    emails_total: int
    sync_errors: int
    reports: list[Path] = field(default_factory=list)
    questions: int = 0  # attendance-check questions in the outbox
    answered: dict[str, int] = field(default_factory=dict)  # by --answer: yes / no

    def table(self) -> Table:
        table = Table(title=f"mentorpulse demo in {self.workdir}", show_header=False)
        table.add_column("what")
        table.add_column("value", overflow="fold")
        table.add_row("pairs", str(self.pairs))
        for outcome, count in sorted(self.outcomes.items()):
            table.add_row(f"sessions {outcome}", str(count))
        for state, count in sorted(self.findings.items()):
            table.add_row(f"findings {state}", str(count))
        table.add_row("emails written this run", str(self.emails_sent))
        table.add_row("emails in outbox/", str(self.emails_total))
        table.add_row("calendar items rejected", str(self.sync_errors))
        table.add_row("attendance questions asked", str(self.questions))
        for answer, count in sorted(self.answered.items()):
            table.add_row(f"answered {answer} (demo --answer)", str(count))
        for path in self.reports:
            table.add_row("report", str(path))
        return table


def run_demo(
    workdir: Path, *, today: date, force: bool = False, answer: bool = False
) -> DemoSummary:
    """Write the sample deployment into ``workdir`` and run sync → … → report on it.

    Deterministic for a given day: a second run on the same day changes nothing and
    sends nothing twice. Files in ``workdir`` that an earlier demo did not write (a real
    mentorpulse.yaml, roster, database or report) are never overwritten unless ``force``.
    With ``answer``, a few attendance questions are answered (:func:`answer_some`) before
    the rules and reports run again.
    """
    reports_here = [workdir / f"report.{fmt}" for fmt in ("csv", "html", "xlsx")]
    pairs = _write_sample(workdir, today=today, force=force, reports=reports_here)
    from mentorpulse import stages  # the stack loads when the demo runs, not for --help
    from mentorpulse.cli.progress import sync_progress
    from mentorpulse.stages.answers import queued_questions
    from mentorpulse.storage import findings as stored_findings
    from mentorpulse.storage import sessions as stored_sessions

    ctx = stages.Context.open(workdir / "mentorpulse.yaml")
    _record(workdir, [Path(DATABASE)])
    try:
        with sync_progress() as progress:
            synced = stages.sync_sources(ctx, progress=progress)
        stages.rebuild_sessions(ctx)
        stages.evaluate_rules(ctx)
        sent = stages.send_notifications(ctx)
        answered = answer_some(ctx) if answer else {}
        if answered:  # a dispute fires for the admins, and the reports show the answers
            stages.evaluate_rules(ctx)
            sent.sent += stages.send_notifications(ctx).sent
        reports = _write_reports(ctx, workdir, reports_here, today=today)
        with ctx.db() as db:
            findings = stored_findings.state_counts(db)
            outcomes = stored_sessions.outcome_counts(db)
        questions = len(queued_questions(ctx))
    finally:
        ctx.engine.dispose()
    transport = ctx.config.notify.transport
    assert transport.kind == "file"  # the demo writes its own config
    outbox = ctx.config.resolve_state(transport.path)
    return DemoSummary(
        workdir=workdir,
        pairs=pairs,
        outcomes=outcomes,
        findings=findings,
        emails_sent=sent.sent,
        emails_total=len(list(outbox.glob("*.eml"))) if outbox.exists() else 0,
        sync_errors=sum(r.item_errors for r in synced),
        reports=reports,
        questions=questions,
        answered=answered,
    )


def _write_reports(
    ctx: stages.Context, workdir: Path, reports_here: list[Path], *, today: date
) -> list[Path]:
    """The monthly HR report the notify stage just mailed, and the whole span's."""
    from mentorpulse.reports.export import Format, write_report

    reports = sorted(ctx.config.resolve_state(ctx.config.reports.out_dir).glob("report-*"))
    for path in reports_here:
        write_report(
            ctx.db,
            first=today - DEMO_SPAN,
            last=today + DEMO_SPAN,
            zone=ctx.config.timezone,
            now=ctx.clock(),
            fmt=cast(Format, path.suffix[1:]),
            out=path,
        )
        reports.append(path)
    _record(workdir, [Path(p.name) for p in reports_here])
    return reports


# What `demo --answer` says, session by session, in order of the questions: three mentors
# confirm, then a pair disagree (the mentor says yes, the mentee no).
_DEMO_ANSWERS = (
    {"mentor": True},
    {"mentor": True},
    {"mentor": True},
    {"mentor": True, "mentee": False},
)


def answer_some(ctx: stages.Context) -> dict[str, int]:
    """Answer a few of the demo's attendance questions through the code the answer page's
    POST runs, with the tokens their emails carry; returns how many yes and no.

    Deterministic: the same questions get the same answers, and answering again with the
    same answer changes nothing.
    """
    from mentorpulse.stages.answers import LinkRefused, queued_questions
    from mentorpulse.stages.answers import answer as record

    by_session: dict[int, dict[str, str]] = {}
    for question in queued_questions(ctx):
        by_session.setdefault(question.session_id, {})[question.role] = question.token
    counts: dict[str, int] = {}
    plans = list(_DEMO_ANSWERS)
    for tokens in by_session.values():
        if not plans:
            break
        if not set(plans[0]) <= set(tokens):
            continue  # this session lacks a question the plan needs
        for role, happened in plans.pop(0).items():
            try:
                record(ctx, tokens[role], happened=happened)
            except LinkRefused:  # closed since it was asked: leave it
                continue
            word = "yes" if happened else "no"
            counts[word] = counts.get(word, 0) + 1
    return counts


def _write_sample(workdir: Path, *, today: date, force: bool, reports: list[Path]) -> int:
    """Write the sample organisation into ``workdir`` (refusing to overwrite a file an
    earlier demo did not write, unless ``force``); returns the number of pairs."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--workdir {workdir}: cannot create it ({exc.strerror})", code=2) from None
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".demo-") as staging:
        from mentorpulse.sample import write_demo

        planted = write_demo(Path(staging), today=today)
        written = sorted(p.relative_to(staging) for p in Path(staging).rglob("*") if p.is_file())
        if not force:
            _refuse_foreign(workdir, [*written, Path(DATABASE), *(Path(p.name) for p in reports)])
        for relative in written:
            (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(staging) / relative, workdir / relative)
    _record(workdir, written)
    return planted.counts["pairings"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(workdir: Path) -> dict[str, str | None]:
    """What earlier demos wrote in ``workdir``: relative path → digest (None: any content)."""
    try:
        found = json.loads((workdir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = found.get("files") if isinstance(found, dict) else None
    return {str(k): v for k, v in files.items()} if isinstance(files, dict) else {}


def _refuse_foreign(workdir: Path, targets: list[Path]) -> None:
    """Stop before overwriting a file the demo did not write (or that was edited since)."""
    known = _manifest(workdir)
    if not known:  # a demo folder from before the manifest: its yaml says so
        try:
            with (workdir / "mentorpulse.yaml").open("rb") as stream:
                legacy = stream.readline().startswith(LEGACY_MARKER)
        except OSError:
            legacy = False
        if legacy:
            return
    foreign = []
    for relative in targets:
        path = workdir / relative
        if not path.exists():
            continue
        if str(relative) not in known:
            foreign.append(path)
            continue
        expected = known[str(relative)]
        if expected is not None and (not path.is_file() or _digest(path) != expected):
            foreign.append(path)
    if foreign:
        names = ", ".join(str(p) for p in foreign[:5]) + (" …" if len(foreign) > 5 else "")
        raise UserError(
            f"{names}: not written by mentorpulse demo (or changed since); the demo would "
            "overwrite it. Choose another --workdir, or pass --force to overwrite",
            code=2,
        )


def _record(workdir: Path, relatives: list[Path]) -> None:
    """Add what the demo just wrote to the manifest, with the digest of its content."""
    known = _manifest(workdir)
    for relative in relatives:
        path = workdir / relative
        if path.exists():
            known[str(relative)] = None if str(relative) == DATABASE else _digest(path)
    document = {"written_by": "mentorpulse demo", "files": dict(sorted(known.items()))}
    (workdir / MANIFEST).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def demo(
    workdir: Annotated[
        Path, typer.Option(help="Folder for the sample deployment (created if missing).")
    ] = Path("mentorpulse-demo"),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite files in --workdir that an earlier demo did not write."
        ),
    ] = False,
    answer: Annotated[
        bool,
        typer.Option(
            "--answer",
            help="Answer a few attendance checks (some yes, one disagreement) as their links "
            "would, so the report shows confirmed and disputed sessions.",
        ),
    ] = False,
) -> None:
    """Write a sample organisation and run the whole flow on it, on SQLite."""
    from mentorpulse.cli.demo import run_demo

    with user_errors():
        summary = run_demo(workdir, today=datetime.now(UTC).date(), force=force, answer=answer)
    out.print(summary.table())

"""`mentorpulse report`: attended-vs-scheduled figures for HR, as CSV, HTML or XLSX."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mentorpulse.cli.common import (
    ConfigOption,
    OptionError,
    check_range,
    day_option,
    user_errors,
    with_context,
)


class ReportFormat(StrEnum):
    csv = "csv"
    html = "html"
    xlsx = "xlsx"


REPORT_SUFFIXES = {
    ".csv": ReportFormat.csv,
    ".html": ReportFormat.html,
    ".htm": ReportFormat.html,
    ".xlsx": ReportFormat.xlsx,
}


FormatOption = Annotated[
    ReportFormat | None,
    typer.Option(
        "--format",
        help="csv, html or xlsx (default: from the extension of --out, else csv).",
        show_default=False,
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Write here instead of standard output (xlsx: required)."),
]
ProgramsOption = Annotated[
    list[str] | None,
    typer.Option("--program", metavar="<id>", help="Only this program id (repeat for several)."),
]
ChartsOption = Annotated[
    bool, typer.Option("--charts/--no-charts", help="Draw the HTML report's charts.")
]


def report(
    *,
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), inclusive.")],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
    config: ConfigOption = None,
    fmt: FormatOption = None,
    out_path: OutOption = None,
    programs: ProgramsOption = None,
    charts: ChartsOption = True,
) -> None:
    """Attended vs scheduled, one row per pairing, for the days given."""
    from mentorpulse import stages
    from mentorpulse.reports.export import write_report

    with user_errors():
        first, last = day_option(start, "--from"), day_option(end, "--to")
        check_range(first, last)
        if out_path is not None:
            check_out_path(out_path)
        chosen = report_format(fmt, out_path)

    def action(ctx: stages.Context) -> None:
        check_programs(programs, known=[p.id for p in ctx.config.programs])
        try:
            written = write_report(
                ctx.db,
                first=first,
                last=last,
                zone=ctx.config.timezone,
                now=ctx.clock(),
                fmt=chosen.value,
                out=out_path,
                sources=ctx.config.sources,
                programs=programs or None,
                program_names=ctx.config.program_names(),
                charts=charts,
            )
        except BrokenPipeError:  # the reader (`| head`) has all it wanted: not an error
            raise typer.Exit(0) from None
        except OSError as exc:  # a full disk, a folder removed meanwhile, no permission
            if out_path is None:
                raise
            raise OptionError(
                f"--out {out_path}: cannot write the report ({exc.strerror})"
            ) from None
        if written.note:
            typer.echo(f"warning: {written.note}", err=True)

    with_context(config, action, write=False)


def check_programs(programs: list[str] | None, *, known: list[str]) -> None:
    """Each --program names a configured program."""
    unknown = sorted(set(programs or ()) - set(known))
    if unknown:
        raise OptionError(
            f"--program {unknown[0]}: no such program; the config has: " + ", ".join(sorted(known))
        )


def report_format(fmt: ReportFormat | None, out_path: Path | None) -> ReportFormat:
    """--format, else the one --out's extension names; a mismatch is refused, not obeyed.

    XLSX is a binary file: it goes to a file, never to a terminal or a pipe."""
    if out_path is None:
        if fmt == ReportFormat.xlsx:
            raise OptionError(
                "--format xlsx writes a spreadsheet file: give --out FILE.xlsx "
                "(standard output takes csv or html)"
            )
        return fmt or ReportFormat.csv
    suffix = out_path.suffix.lower()
    implied = REPORT_SUFFIXES.get(suffix)
    if fmt is None:
        if implied is None:
            raise OptionError(
                f"--out {out_path}: cannot tell the format from "
                + (f"the extension {suffix}" if suffix else "a name without extension")
                + "; give --format csv, html or xlsx"
            )
        return implied
    if implied is not None and implied != fmt:
        raise OptionError(
            f"--format {fmt.value} does not match --out {out_path} (a {suffix} file): "
            f"name the file .{fmt.value} or drop --format"
        )
    return fmt


def check_out_path(path: Path) -> None:
    """--out names a file in a folder that exists: say so before the report is computed."""
    try:
        is_folder, parent_exists = path.is_dir(), path.parent.is_dir()
    except OSError as exc:  # a name too long, a folder we may not look into
        raise OptionError(f"--out {path}: cannot write the report ({exc.strerror})") from None
    if is_folder:
        raise OptionError(
            f"--out {path}: is a folder; give a file name, like {path / 'report.csv'}"
        )
    if not parent_exists:
        raise OptionError(f"--out {path}: the folder {path.parent} does not exist; create it first")

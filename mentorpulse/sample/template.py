"""The organisation's ``mentorpulse.yaml`` and ``roster.csv``, one template at every scale.

The YAML is written as text, not dumped, so the comments that explain the sample to
the person reading it survive.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from mentorpulse.config.roster import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from mentorpulse.sample.org import Org

ROSTER_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS  # every column, so the sample shows all


@dataclass(frozen=True)
class Program:
    id: str
    every: str  # "14d"
    grace: str
    admins: tuple[str, ...]
    name: str | None = None
    match: tuple[str, ...] = ()  # lines under ``match:`` (YAML, comments included)
    rule: str = "cadence-gap"  # the cadence rule's id is "<program>-<rule>"
    rule_for: str | None = None
    attendance_check: tuple[str, ...] = ()  # lines under ``attendance_check:``, if any

    def lines(self) -> list[str]:
        lines = [f"  - id: {self.id}"]
        if self.name:
            lines.append(f"    name: {self.name}")
        if self.match:
            lines += ["    match:", *(f"      {line}" for line in self.match)]
        lines += [
            "    cadence:",
            f"      every: {self.every}",
            f"      grace: {self.grace}",
            "    rules:",
            f"      - id: {self.id}-{self.rule}",
            "        kind: cadence_gap",
            "        severity: warning",
        ]
        if self.rule_for:
            lines.append(f"        for: {self.rule_for}")
        lines.append(f"    admins: [{', '.join(self.admins)}]")
        if self.attendance_check:
            lines += ["    attendance_check:", *(f"      {line}" for line in self.attendance_check)]
        return lines


@dataclass(frozen=True)
class Contact:
    id: str
    local: str  # the part of the address before the organisation's domain
    name: str
    timezone: str | None = None


@dataclass(frozen=True)
class ConfigTemplate:
    header: tuple[str, ...]  # the comment lines at the top
    source_id: str
    source_comment: str
    window_past: int  # days
    window_future: int
    programs: tuple[Program, ...]
    contacts: tuple[Contact, ...]
    monthly_report_to_hr: bool = False

    def render(self, domain: str) -> str:
        lines = [f"# {line}" for line in self.header]
        lines += [
            "database: sqlite:///mentorpulse.db",
            "timezone: Europe/London",
            "sources:",
            f"  - id: {self.source_id}",
            "    kind: ics",
            f"    path: calendars          # {self.source_comment}",
            f"    window_past: {self.window_past}d",
            f"    window_future: {self.window_future}d",
            "roster:",
            "  path: roster.csv",
            "programs:",
        ]
        for program in self.programs:
            lines += program.lines()
        lines.append("contacts:")
        for contact in self.contacts:
            lines += [f"  {contact.id}:", f"    email: {contact.local}@{domain}"]
            lines.append(f"    name: {contact.name}")
            if contact.timezone:
                lines.append(f"    timezone: {contact.timezone}")
        lines += [
            "notify:",
            f"  sender: mentorpulse@{domain}",
            "  transport:",
            "    kind: file",
            "    path: outbox",
        ]
        if any(program.attendance_check for program in self.programs):
            lines += [
                "service:",
                "  http:",
                "    # Where the links in attendance-check emails point; each question is sent",
                "    # once, so set this to where people reach the service before they get mail.",
                "    public_url: http://127.0.0.1:9464/",
            ]
        if self.monthly_report_to_hr:
            lines += [
                "reports:",
                "  out_dir: reports",
                "  send:                      # when a month ends, HR gets its "
                "attended-vs-scheduled report",
                "    - every: month",
                "      to: [hr]",
            ]
        return "\n".join(lines) + "\n"


def roster_text(org: Org) -> str:
    """Every pair of ``org`` under every roster column (the optional ones left empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROSTER_COLUMNS)
    for x in org.pairs:
        cells = {
            "program": x.program,
            "mentor_email": x.mentor.email,
            "mentee_email": x.mentee.email,
            "started_on": x.started_on.isoformat(),
            "mentor_name": x.mentor.name,
            "mentee_name": x.mentee.name,
            "mentor_timezone": x.mentor.zone,
            "mentee_timezone": x.mentee.zone,
        }
        writer.writerow([cells.get(column, "") for column in ROSTER_COLUMNS])
    return out.getvalue()

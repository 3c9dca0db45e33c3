"""The HR report: figures from the database, and their CSV and HTML renderings.

(The XLSX and the charts have their own files: test_report_xlsx.py, test_report_charts.py.)
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session as Db

from mentorpulse.model import last_attended_day
from mentorpulse.reports.export import Report, build_report, day_range, render_report
from mentorpulse.reports.figures import (
    COLUMNS,
    PairingFigures,
    month_starts,
    pairing_figures,
    program_totals,
)
from mentorpulse.reports.render import format_range, render_csv, render_html, write_csv
from mentorpulse.storage.models import (
    Base,
    Evidence,
    Finding,
    MentoringSession,
    Pairing,
    Person,
    Program,
)

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 4, 1, tzinfo=UTC)
NOW = datetime(2025, 3, 20, 12, tzinfo=UTC)
EVIL = '=HYPERLINK("http://x.example")'  # a program id a spreadsheet would run


def at(day: int, hour: int = 10, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


class Org:
    """A tiny organisation written straight into the tables the report reads."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.people: dict[str, Person] = {}
        self.sessions = 0

    def person(self, email: str, name: str | None = None, zone: str | None = None) -> Person:
        if email not in self.people:
            self.people[email] = Person(email=email, name=name, timezone=zone)
            self.db.add(self.people[email])
            self.db.flush()
        return self.people[email]

    def pairing(
        self,
        program: str,
        mentor: Person,
        mentee: Person,
        active: bool = True,
        name: str | None = None,
    ) -> int:
        if self.db.get(Program, program) is None:
            self.db.add(Program(id=program, name=name))
            self.db.flush()
        row = Pairing(
            key=f"{program}:{mentor.email}:{mentee.email}",
            program_id=program,
            mentor_id=mentor.id,
            mentee_id=mentee.id,
            started_on=date(2025, 1, 1),
            active=active,
        )
        self.db.add(row)
        self.db.flush()
        return row.id

    def session(
        self, pairing: int, start: datetime, outcome: str, evidence: tuple[str, ...] = ()
    ) -> None:
        """A session whose outcome was decided by ``evidence`` (kinds, strongest first)."""
        self.sessions += 1
        row = MentoringSession(
            pairing_id=pairing,
            key=f"uid-{self.sessions}",
            start=start,
            end=start + timedelta(minutes=45),
            zone="UTC",
            outcome=outcome,
            confidence=0.9,
            updated_at=NOW,
        )
        self.db.add(row)
        if evidence:
            self.db.flush()
            for rank, kind in enumerate(evidence):
                self.db.add(
                    Evidence(session_id=row.id, rank=rank, kind=kind, party=None, detail=kind)
                )

    def finding(self, pairing: int, state: str) -> None:
        self.db.add(
            Finding(
                fingerprint=f"fp-{pairing}-{state}",
                rule_id="cadence",
                pairing_id=pairing,
                severity="warning",
                state=state,
                since=at(1),
                last_evaluated_at=NOW,
                facts={},
            )
        )


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


CONFIRMED = ("participant_confirmation", "rsvp")
CONFERENCE = ("conference_log", "participant_confirmation")


@pytest.fixture
def report(engine: Engine) -> Report:
    with Db(engine) as db:
        org = Org(db)
        ana = org.person("ana@demo.example", "Ana", "Asia/Kolkata")
        ben = org.person("ben@demo.example", "Ben", "Europe/London")
        cy = org.person("cy@demo.example")  # no name, no zone
        dee = org.person("dee@demo.example", "Dee")
        eve = org.person("eve@demo.example", "<script>alert('eve')</script>", "Europe/Berlin")

        busy = org.pairing("engineering", ana, ben, name="Engineering mentoring")
        for day, outcome, evidence in [
            (2, "held", CONFIRMED),  # a participant said yes: confirmed
            (4, "presumed_held", ()),
            (6, "missed", ("participant_confirmation",)),  # said no: a dispute, not confirmed
            (8, "cancelled", ()),
            (9, "rescheduled", ()),
            (12, "unknown", ()),
            (27, "upcoming", ()),
        ]:
            org.session(busy, at(day), outcome, evidence)
        # The latest attended session: 23:30 UTC, already the 11th in Kolkata. A
        # conference log decided it, the participant's answer only backs it up.
        org.session(busy, at(10, 23) + timedelta(minutes=30), "held", CONFERENCE)
        org.session(busy, at(25, 10, month=2), "held", CONFIRMED)  # before the range
        org.session(busy, at(5, 10, month=4), "held")  # after it: neither counted nor last
        org.session(busy, at(25), "upcoming")  # the first one after now
        org.session(busy, at(15), "upcoming")  # before now: never "next"
        org.finding(busy, "firing")
        org.finding(busy, "pending")
        org.finding(busy, "resolved")

        org.pairing("engineering", cy, dee)  # never had a session

        quiet = org.pairing("leadership", dee, ana)  # no name: the id is its name
        org.session(quiet, at(20, 9, month=1), "held")
        org.session(quiet, at(10, 9, month=5), "upcoming")  # outside the range, still next
        org.finding(quiet, "suppressed")

        left = org.pairing("leadership", ben, cy, active=False)  # left the roster
        org.session(left, at(5), "held", CONFIRMED)
        org.finding(left, "firing")

        evil = org.pairing(EVIL, eve, ben, name=EVIL)
        org.session(evil, at(3), "held")
        for day in (10, 17, 24):
            org.session(evil, at(day), "missed")
        db.commit()
        return build_report(db, first=date(2025, 3, 1), last=date(2025, 3, 31), zone="UTC", now=NOW)


@pytest.fixture
def rows(report: Report) -> list[PairingFigures]:
    return report.rows


def test_one_row_per_active_pairing_sorted(rows: list[PairingFigures]) -> None:
    assert [(r.program, r.mentor_email, r.mentee_email) for r in rows] == [
        (EVIL, "eve@demo.example", "ben@demo.example"),
        ("engineering", "ana@demo.example", "ben@demo.example"),
        ("engineering", "cy@demo.example", "dee@demo.example"),
        ("leadership", "dee@demo.example", "ana@demo.example"),
    ]
    assert [r.program_name for r in rows] == [
        EVIL,
        "Engineering mentoring",
        "Engineering mentoring",
        "leadership",
    ]


def test_counts_by_outcome_over_the_range(rows: list[PairingFigures]) -> None:
    busy = rows[1]
    assert (busy.held, busy.presumed_held, busy.attended) == (2, 1, 3)
    assert busy.confirmed == 1  # held, and a participant's answer decided it
    assert (busy.missed, busy.cancelled, busy.rescheduled) == (1, 1, 1)
    # held + presumed + missed + cancelled + unknown; the rescheduled and upcoming are not.
    assert busy.scheduled == 6
    assert busy.attendance_rate == 0.5
    assert busy.last_attended == date(2025, 3, 10)  # in the report's zone (UTC here)
    assert busy.next_scheduled == at(25)
    assert busy.open_findings == 2
    assert (busy.mentor_name, busy.mentee_name) == ("Ana", "Ben")


def test_a_pairing_with_no_sessions_still_has_a_row(rows: list[PairingFigures]) -> None:
    empty = rows[2]
    assert (empty.scheduled, empty.attended, empty.missed, empty.open_findings) == (0, 0, 0, 0)
    assert empty.confirmed == 0
    assert empty.attendance_rate is None
    assert empty.last_attended is None
    assert empty.next_scheduled is None


def test_last_and_next_reach_outside_the_range(rows: list[PairingFigures]) -> None:
    quiet = rows[3]
    assert quiet.scheduled == 0
    assert quiet.last_attended == date(2025, 1, 20)
    assert quiet.next_scheduled == at(10, 9, month=5)
    assert quiet.open_findings == 0  # suppressed is not open


def test_program_totals_sum_the_pairings(report: Report) -> None:
    totals = {t.program: t for t in report.totals}
    assert totals == {t.program: t for t in program_totals(report.rows)}
    assert list(totals) == sorted(totals)
    engineering = totals["engineering"]
    assert (engineering.pairings, engineering.scheduled, engineering.attended) == (2, 6, 3)
    assert (engineering.held, engineering.confirmed, engineering.presumed_held) == (2, 1, 1)
    assert engineering.program_name == "Engineering mentoring"
    assert engineering.attendance_rate == 0.5
    assert engineering.open_findings == 2
    assert totals[EVIL].attendance_rate == 0.25
    assert totals[EVIL].below_half == 1
    assert totals["leadership"].attendance_rate is None


def test_programs_limit_the_report_and_config_names_win(engine: Engine, report: Report) -> None:
    with Db(engine) as db:
        only = build_report(
            db,
            first=date(2025, 3, 1),
            last=date(2025, 3, 31),
            zone="UTC",
            now=NOW,
            programs=["leadership"],
            program_names={"leadership": "Leaders", "engineering": "Eng"},
        )
    assert [(r.program, r.program_name) for r in only.rows] == [("leadership", "Leaders")]
    assert [t.program for t in only.totals] == ["leadership"]
    assert list(only.monthly.by_program) == ["leadership"]
    assert only.rows[0] == report.rows[3].__class__(
        **{**{f: getattr(report.rows[3], f) for f in COLUMNS}, "program_name": "Leaders"},
        mentor_name="Dee",
        mentee_name="Ana",
    )


def test_months_and_pair_health_in_the_reports_zone(report: Report) -> None:
    assert report.monthly.months == (date(2025, 3, 1),)
    engineering = report.monthly.by_program["engineering"]
    assert engineering == [
        {"held": 2, "presumed_held": 1, "missed": 1, "cancelled": 1, "unknown": 1, "upcoming": 3}
    ]
    assert report.monthly.health == [("held",), ("held",), (None,), (None,)]
    # A quarter in London: the month a session counts in is London's.
    start, end = day_range(date(2025, 1, 1), date(2025, 3, 31), "Europe/London")
    assert month_starts(start, end) == (date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1))
    start, end = day_range(date(2025, 1, 31), date(2025, 2, 1), "Asia/Kolkata")
    assert month_starts(start, end) == (date(2025, 1, 1), date(2025, 2, 1))


def test_a_month_is_the_reports_zones_month(engine: Engine) -> None:
    # 31 Mar 23:30 UTC is already 1 April in Berlin (CEST).
    with Db(engine) as db:
        org = Org(db)
        pair = org.pairing("eng", org.person("a@demo.example"), org.person("b@demo.example"))
        org.session(pair, at(31, 22) + timedelta(minutes=30), "missed")
        org.session(pair, at(2, 10, month=4), "held")
        db.commit()
        berlin = build_report(
            db, first=date(2025, 3, 1), last=date(2025, 4, 30), zone="Europe/Berlin", now=NOW
        )
        utc = build_report(db, first=date(2025, 3, 1), last=date(2025, 4, 30), zone="UTC", now=NOW)
    assert berlin.monthly.by_program["eng"] == [{}, {"missed": 1, "held": 1}]
    assert berlin.monthly.health == [(None, "held")]
    assert utc.monthly.by_program["eng"] == [{"missed": 1}, {"held": 1}]
    assert utc.monthly.health == [("missed", "held")]


def test_query_count_does_not_grow_with_pairings(engine: Engine) -> None:
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    def run() -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            with Db(engine) as db:
                pairing_figures(db, start=START, end=END, now=NOW)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    with Db(engine) as db:
        org = Org(db)
        mentor = org.person("m@demo.example", zone="America/New_York")
        for i in range(3):
            org.session(org.pairing("p", mentor, org.person(f"a{i}@demo.example")), at(3), "held")
        db.commit()
        few = run()
        for i in range(60):
            org.session(org.pairing("p", mentor, org.person(f"b{i}@demo.example")), at(3), "held")
        db.commit()
    assert run() == few <= 6


def test_csv_round_trips_and_defuses_formulas(report: Report, tmp_path: Path) -> None:
    text = render_csv(report)
    assert render_report(report, "csv") == text.encode()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 4
    assert tuple(parsed[0]) == (*COLUMNS, "zone", "note")
    assert parsed[0]["program"] == "'" + EVIL
    assert parsed[0]["program_name"] == "'" + EVIL
    assert parsed[0]["attendance_rate"] == "0.25"
    busy = parsed[1]
    assert busy == {
        "program": "engineering",
        "program_name": "Engineering mentoring",
        "mentor_email": "ana@demo.example",
        "mentee_email": "ben@demo.example",
        "scheduled": "6",
        "attended": "3",
        "held": "2",
        "confirmed": "1",
        "presumed_held": "1",
        "missed": "1",
        "cancelled": "1",
        "rescheduled": "1",
        "attendance_rate": "0.50",
        "last_attended": "2025-03-10",
        "next_scheduled": "2025-03-25 10:00",
        "open_findings": "2",
        "zone": "UTC",
        "note": "",
    }
    assert (parsed[2]["attendance_rate"], parsed[2]["last_attended"]) == ("", "")
    assert parsed[2]["next_scheduled"] == ""

    path = tmp_path / "report.csv"
    write_csv(report.rows, path)
    assert path.read_bytes() == text.encode()


def test_html_escapes_names_and_flags_low_attendance(report: Report) -> None:
    report = replace(report, title="Mentoring <Q1> & more")
    page = render_html(report, charts=False)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#39;eve&#39;)&lt;/script&gt;" in page
    assert "<title>Mentoring &lt;Q1&gt; &amp; more</title>" in page
    assert "<link" not in page
    assert "src=" not in page  # self-contained: nothing to fetch
    assert "<style>" in page
    assert "<svg" not in page  # charts=False
    low = re.findall(r'<td class="num low">([^<]*)</td>', page)
    assert low == ["25%", "25%"]  # the program total and its one pairing; 50% is not low
    assert page.count("<table") == 1 + 3  # totals, then one table per program
    assert "<h2>Engineering mentoring</h2>" in page
    assert "<h2>engineering</h2>" not in page  # names, not ids, where a person reads
    assert "2025-03-25 10:00" in page
    assert "never" in page
    assert "nothing scheduled" in page


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Asia/Kolkata", date(2025, 3, 11)),
        ("UTC", date(2025, 3, 10)),
        ("America/New_York", date(2025, 3, 10)),
    ],
)
def test_last_attended_is_the_start_day_in_the_reports_zone_whoever_the_mentor_is(
    engine: Engine, zone: str, day: date
) -> None:
    # Held 23:30-00:15 UTC: the 11th in Kolkata, the 10th in New York and in UTC. The
    # mentor's own zone (Kolkata) and the session's end do not decide; the report's does,
    # and explain (last_attended_day) says the same.
    late = at(10, 23) + timedelta(minutes=30)
    with Db(engine) as db:
        org = Org(db)
        mentor = org.person("ana@demo.example", zone="Asia/Kolkata")
        org.session(org.pairing("eng", mentor, org.person("ben@demo.example")), late, "held")
        org.session(org.pairing("eng", mentor, org.person("cy@demo.example")), late, "missed")
        db.commit()
        start, end = day_range(date(2025, 3, 1), date(2025, 3, 31), zone)
        held, missed = pairing_figures(db, start=start, end=end, now=NOW)
    assert held.last_attended == day
    assert missed.last_attended is None
    assert last_attended_day([(late, "held"), (at(2), "presumed_held")], zone) == day
    assert last_attended_day([(late, "missed")], zone) is None


def test_html_and_csv_name_the_local_days_and_times_of_the_report(engine: Engine) -> None:
    with Db(engine) as db:
        org = Org(db)
        pair = org.pairing("eng", org.person("a@demo.example"), org.person("b@demo.example"))
        org.session(pair, at(25), "upcoming")
        db.commit()
        report = build_report(
            db, first=date(2025, 3, 1), last=date(2025, 3, 31), zone="Europe/Berlin", now=NOW
        )
    page = render_html(report, charts=False)
    assert "1 \u2013 31 Mar 2025, Europe/Berlin" in page
    assert "generated 2025-03-20 13:00 CET" in page
    assert "2025-02-28 23:00" not in page  # the UTC instant the first day starts at
    assert "2025-03-25 11:00" in page  # next scheduled, on Berlin's clock
    assert 'class="note"' not in page
    (row,) = csv.DictReader(io.StringIO(render_csv(report)))
    assert (row["next_scheduled"], row["zone"]) == ("2025-03-25 11:00", "Europe/Berlin")


@pytest.mark.parametrize(
    ("first", "last", "said"),
    [
        (date(2026, 9, 1), date(2026, 11, 30), "1 Sep \u2013 30 Nov 2026, Europe/London"),
        (date(2026, 11, 1), date(2026, 11, 30), "1 \u2013 30 Nov 2026, Europe/London"),
        (date(2026, 12, 1), date(2027, 2, 28), "1 Dec 2026 \u2013 28 Feb 2027, Europe/London"),
        (date(2026, 12, 1), date(2026, 12, 1), "1 Dec 2026, Europe/London"),
    ],
)
def test_the_range_reads_as_a_person_says_it(first: date, last: date, said: str) -> None:
    assert format_range(first, last, "Europe/London") == said


def test_a_note_is_visible_in_the_page_and_on_every_csv_row(report: Report) -> None:
    note = "Incomplete: the calendars are read from 2025-03-05 00:00 on"
    report = replace(report, note=note)
    page = render_html(report, charts=False)
    assert re.search(r'<p class="note" role="alert">Incomplete: the calendars', page)
    parsed = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(parsed) == 4
    assert {row["note"] for row in parsed} == {note}

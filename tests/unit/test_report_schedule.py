"""Which period a scheduled report covers: the last whole one, in local days."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from mentorpulse.config.schema import ReportSchedule
from mentorpulse.stages.reports import period_before


@pytest.mark.parametrize(
    ("every", "today", "label", "title", "first", "last"),
    [
        # Monday: the week that ended yesterday; the period changes at local midnight.
        (
            "week",
            date(2026, 11, 23),
            "2026-W47",
            "week 47 of 2026",
            date(2026, 11, 16),
            date(2026, 11, 22),
        ),
        (
            "week",
            date(2026, 11, 29),
            "2026-W47",
            "week 47 of 2026",
            date(2026, 11, 16),
            date(2026, 11, 22),
        ),
        # ISO weeks: the last days of 2026 fall in week 53; 2027-01-04 is the next Monday.
        (
            "week",
            date(2027, 1, 4),
            "2026-W53",
            "week 53 of 2026",
            date(2026, 12, 28),
            date(2027, 1, 3),
        ),
        (
            "month",
            date(2026, 11, 23),
            "2026-10",
            "October 2026",
            date(2026, 10, 1),
            date(2026, 10, 31),
        ),
        (
            "month",
            date(2026, 12, 1),
            "2026-11",
            "November 2026",
            date(2026, 11, 1),
            date(2026, 11, 30),
        ),
        (
            "month",
            date(2027, 1, 1),
            "2026-12",
            "December 2026",
            date(2026, 12, 1),
            date(2026, 12, 31),
        ),
        (
            "month",
            date(2028, 3, 1),
            "2028-02",
            "February 2028",
            date(2028, 2, 1),
            date(2028, 2, 29),
        ),
        ("quarter", date(2026, 11, 23), "2026-Q3", "Q3 2026", date(2026, 7, 1), date(2026, 9, 30)),
        ("quarter", date(2026, 12, 31), "2026-Q3", "Q3 2026", date(2026, 7, 1), date(2026, 9, 30)),
        ("quarter", date(2027, 1, 1), "2026-Q4", "Q4 2026", date(2026, 10, 1), date(2026, 12, 31)),
        ("quarter", date(2027, 4, 1), "2027-Q1", "Q1 2027", date(2027, 1, 1), date(2027, 3, 31)),
    ],
)
def test_the_period_just_ended(
    every: str, today: date, label: str, title: str, first: date, last: date
) -> None:
    period = period_before(every, today)
    assert (period.label, period.title, period.first, period.last) == (label, title, first, last)


def test_a_schedules_formats_default_to_todays_files_and_are_checked() -> None:
    assert ReportSchedule(every="month").formats == ("html", "csv")
    assert ReportSchedule(every="month", formats=("html", "xlsx")).formats == ("html", "xlsx")
    with pytest.raises(ValidationError, match="xlsx is listed twice"):
        ReportSchedule(every="month", formats=("xlsx", "html", "xlsx"))
    with pytest.raises(ValidationError, match="'html', 'csv' or 'xlsx'"):
        ReportSchedule.model_validate({"every": "month", "formats": ["pdf"]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        ReportSchedule(every="month", formats=())

"""Quiet hours and digest windows on the recipient's own clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mentorpulse.config.schema import MentorpulseConfig, SendWindow
from mentorpulse.notify.timing import digest_due, in_send_window, next_send_time

BERLIN = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
OFFICE = SendWindow(start=time(8), end=time(20), days=("mon", "tue", "wed", "thu", "fri"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (utc(2026, 3, 4, 10, 0), utc(2026, 3, 4, 10, 0)),  # Wed 11:00 Berlin: now
        (utc(2026, 3, 4, 2, 0), utc(2026, 3, 4, 7, 0)),  # Wed 03:00: at 08:00
        (utc(2026, 3, 4, 19, 30), utc(2026, 3, 5, 7, 0)),  # Wed 20:30: Thursday 08:00
        (utc(2026, 3, 6, 19, 30), utc(2026, 3, 9, 7, 0)),  # Fri 20:30: Monday 08:00
        (utc(2026, 3, 28, 12, 0), utc(2026, 3, 30, 6, 0)),  # Sat; Monday is summer time
    ],
)
def test_mail_outside_the_window_waits_for_the_next_opening(
    moment: datetime, expected: datetime
) -> None:
    assert next_send_time(moment, BERLIN, OFFICE) == expected
    assert in_send_window(expected, BERLIN, OFFICE)


def test_the_same_instant_is_night_in_tokyo_and_day_in_berlin() -> None:
    moment = utc(2026, 3, 4, 18, 0)  # 19:00 Berlin, 03:00 Thursday in Tokyo
    assert next_send_time(moment, BERLIN, OFFICE) == moment
    assert next_send_time(moment, TOKYO, OFFICE) == utc(2026, 3, 4, 23, 0)


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    night = SendWindow(start=time(22), end=time(6), days=("fri",))
    assert in_send_window(utc(2026, 3, 6, 22, 0), BERLIN, night)  # Fri 23:00
    assert in_send_window(utc(2026, 3, 7, 3, 0), BERLIN, night)  # Sat 04:00, Friday's night
    assert not in_send_window(utc(2026, 3, 6, 3, 0), BERLIN, night)  # Fri 04:00: Thursday's
    assert next_send_time(utc(2026, 3, 6, 3, 0), BERLIN, night) == utc(2026, 3, 6, 21, 0)


def test_no_window_means_any_time() -> None:
    moment = utc(2026, 3, 7, 2, 0)
    assert next_send_time(moment, BERLIN, None) == moment


def test_daily_digests_close_at_local_midnight_weekly_ones_on_monday() -> None:
    assert digest_due(utc(2026, 3, 4, 10, 0), BERLIN, timedelta(days=1)) == utc(2026, 3, 4, 23, 0)
    assert digest_due(utc(2026, 3, 4, 10, 0), TOKYO, timedelta(days=1)) == utc(2026, 3, 4, 15, 0)
    weekly = digest_due(utc(2026, 3, 4, 10, 0), BERLIN, timedelta(weeks=1))
    assert weekly == utc(2026, 3, 8, 23, 0)  # Monday 00:00 Berlin
    assert weekly.astimezone(BERLIN).weekday() == 0
    # Every moment of one window gives the same due time: one digest.
    assert digest_due(utc(2026, 3, 2, 0, 5), BERLIN, timedelta(weeks=1)) == weekly


def test_send_window_times_read_from_yaml() -> None:
    config = MentorpulseConfig.model_validate(
        {"notify": {"send_window": {"start": 480, "end": "18:30", "days": ["mon"]}}}
    )
    assert config.notify.send_window == SendWindow(start=time(8), end=time(18, 30), days=("mon",))

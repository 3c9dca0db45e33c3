"""The one status → typed error decision, the in-process retry policy, and the persisted
backoff of sources and outbox rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mentorpulse.backoff import OUTBOX_BACKOFF, SOURCE_BACKOFF, Backoff
from mentorpulse.connectors.base import (
    AuthError,
    BadItem,
    CursorExpired,
    RetryPolicy,
    TransientError,
    TryAgain,
    status_error,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "flags", "expected"),
    [
        (200, {}, None),
        (204, {}, None),
        (304, {}, None),
        (410, {}, CursorExpired),
        (400, {"cursor_gone": True}, CursorExpired),
        (429, {}, TryAgain),
        (503, {}, TryAgain),
        (504, {}, TryAgain),
        (403, {"throttled": True}, TryAgain),
        (500, {}, TransientError),
        (502, {}, TransientError),
        (401, {}, AuthError),
        (403, {}, AuthError),
        (401, {"item": True}, AuthError),
        (403, {"item": True}, BadItem),
        (404, {"item": True}, BadItem),
        (400, {"item": True}, BadItem),
        (404, {}, TransientError),
        (400, {}, TransientError),
    ],
)
def test_one_function_decides_what_a_status_means(
    status: int, flags: dict[str, bool], expected: type[Exception] | None
) -> None:
    error = status_error("src", status, "said", **flags)
    assert type(error) is expected if expected is not None else error is None


def test_status_error_words_and_retry_after() -> None:
    throttled = status_error("src", 429, "slow down", retry_after=7.0)
    assert isinstance(throttled, TransientError)
    assert throttled.retry_after == 7.0
    assert throttled.message == "slow down"
    refused = status_error("src", 401, "said", refused="sign in again")
    assert isinstance(refused, AuthError)
    assert refused.message == "sign in again"
    expired = status_error("src", 410, "said", expired="full resync")
    assert isinstance(expired, CursorExpired)
    assert expired.message == "full resync"


class Flaky:
    """Fails ``times`` times with ``error``, then answers."""

    def __init__(self, times: int, error: Exception) -> None:
        self.times = times
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "answer"


def test_retries_double_with_the_jitter_drawn() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, jitter=lambda: 0.25)
    flaky = Flaky(3, TryAgain("src", "busy"))
    assert policy.run(flaky, sleep=sleeps.append, event="test") == "answer"
    assert sleeps == [0.75, 1.5, 3.0]


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, jitter=lambda: 0.5)
    flaky = Flaky(1, TryAgain("src", "busy", retry_after=9.0))
    policy.run(flaky, sleep=sleeps.append, event="test")
    assert sleeps == [9.0]


def test_only_the_listed_errors_are_retried() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, retry_on=(TryAgain,))
    flaky = Flaky(1, TransientError("src", "HTTP 500"))
    with pytest.raises(TransientError, match="HTTP 500"):
        policy.run(flaky, sleep=sleeps.append, event="test")
    assert flaky.calls == 1
    assert sleeps == []


def test_giving_up_after_the_attempts_says_how_long_to_stay_away() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, jitter=lambda: 0.5)
    flaky = Flaky(10, TryAgain("src", "busy"))
    with pytest.raises(TransientError, match="busy") as raised:
        policy.run(flaky, sleep=sleeps.append, event="test")
    assert flaky.calls == 3
    assert sleeps == [1.0, 2.0]
    assert raised.value.retry_after == 4.0  # the wait the next try would have needed


def test_a_wait_longer_than_allowed_is_left_to_the_scheduler() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, longest=30.0)
    flaky = Flaky(10, TryAgain("src", "busy", retry_after=120.0))
    with pytest.raises(TransientError) as raised:
        policy.run(flaky, sleep=sleeps.append, event="test")
    assert sleeps == []
    assert raised.value.retry_after == 120.0


def test_the_total_wait_is_bounded() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=100, longest=60.0, budget=100.0)
    flaky = Flaky(100, TryAgain("src", "busy", retry_after=30.0))
    with pytest.raises(TransientError):
        policy.run(flaky, sleep=sleeps.append, event="test")
    assert sleeps == [30.0, 30.0, 30.0]
    assert sum(sleeps) <= policy.budget


def test_source_backoff_doubles_within_its_jitter_and_is_capped() -> None:
    for failures, minutes in [(1, 1), (2, 2), (3, 4), (7, 60), (500, 60)]:
        wait = SOURCE_BACKOFF.delay(failures)
        assert timedelta(minutes=minutes) * 0.5 <= wait <= timedelta(minutes=minutes)


def test_outbox_backoff_doubles_and_is_capped_at_an_hour() -> None:
    for attempts, minutes in [(1, 2), (3, 8), (30, 60)]:
        wait = OUTBOX_BACKOFF.delay(attempts)
        assert timedelta(minutes=minutes) <= wait <= timedelta(minutes=minutes) * 1.1


def test_backoff_never_comes_back_sooner_than_the_provider_asked() -> None:
    assert SOURCE_BACKOFF.next_attempt(NOW, 1, retry_after=3600) == NOW + timedelta(hours=1)


def test_backoff_draws_spread_the_waits() -> None:
    policy = Backoff(first=timedelta(minutes=1), cap=timedelta(hours=1), rng=random.Random(7))
    waits = {policy.delay(4) for _ in range(20)}
    assert len(waits) > 1
    assert all(timedelta(minutes=4) <= w <= timedelta(minutes=8) for w in waits)

"""When to try again after a failure that is stored: a source's next sync, an outbox row's
next send. One formula for both, so that a reader finds the backoff in one place.

In-process retries (a request retried while a sync waits) are tenacity's, in
:mod:`mentorpulse.connectors.base`; this module holds the waits that outlive the process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Backoff:
    """Doubling waits: ``first`` after the first failure, twice as long after each further
    one, at most ``cap``; each multiplied by a draw from ``spread`` so that workers failing
    together do not come back together; never sooner than the provider asked."""

    first: timedelta
    cap: timedelta
    spread: tuple[float, float] = (0.5, 1.0)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failures: int, retry_after: float | None = None) -> timedelta:
        """The wait after ``failures`` failures in a row (the first failure is 1)."""
        doublings = min(max(failures - 1, 0), 40)  # 2**40 minutes outlasts any cap
        ceiling = min(self.cap, self.first * 2**doublings)
        wait: timedelta = ceiling * self.rng.uniform(*self.spread)
        if retry_after is not None:
            wait = max(wait, timedelta(seconds=retry_after))
        return wait

    def next_attempt(
        self, now: datetime, failures: int, retry_after: float | None = None
    ) -> datetime:
        """When to try again: ``now`` plus :meth:`delay`."""
        return now + self.delay(failures, retry_after)


# A source that failed to sync: 1 minute, 2, 4 … at most an hour, with full jitter below.
SOURCE_BACKOFF = Backoff(first=timedelta(minutes=1), cap=timedelta(hours=1))
# A message the mail server did not take: 2 minutes, 4, 8 … at most an hour, up to 10%
# later, so that the rows failing together spread out.
OUTBOX_BACKOFF = Backoff(first=timedelta(minutes=2), cap=timedelta(hours=1), spread=(1.0, 1.1))

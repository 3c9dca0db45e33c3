"""Client-side token buckets that keep the poller under its share of a Google project's
quotas (per project and per user, per minute), shared by every connector of the process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from mentorpulse.config.schema import GoogleSource

log = structlog.get_logger(__name__)


@dataclass
class _Bucket:
    per_minute: float
    tokens: float
    at: float


@dataclass
class QuotaGate:
    """Keeps calls under a share of the project and per-user quotas (per minute)."""

    project_per_minute: float
    user_per_minute: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, key: str, per_minute: float, count: int) -> float:
        now = self.clock()
        bucket = self._buckets.setdefault(key, _Bucket(per_minute, per_minute, now))
        bucket.per_minute = per_minute
        bucket.tokens = min(per_minute, bucket.tokens + (now - bucket.at) * per_minute / 60)
        bucket.at = now
        bucket.tokens -= count
        return 0.0 if bucket.tokens >= 0 else -bucket.tokens * 60 / per_minute

    def acquire(self, users: list[str]) -> float:
        """Reserve one call per entry of ``users``; sleeps as long as the quotas demand."""
        with self._lock:
            wait = self._take("", self.project_per_minute, len(users))
            for user in set(users):
                wait = max(wait, self._take(user, self.user_per_minute, users.count(user)))
        if wait > 0:
            log.info("google_quota_wait", seconds=round(wait, 2), calls=len(users))
            self.sleep(wait)
        return wait


_GATES: dict[str, QuotaGate] = {}
_GATES_LOCK = threading.Lock()


def gate_for(key: str, source: GoogleSource, sleep: Callable[[float], None]) -> QuotaGate:
    """The one gate of a project (``key`` names its credentials), made on first use."""
    with _GATES_LOCK:
        return _GATES.setdefault(
            key,
            QuotaGate(
                source.project_quota_per_minute * source.quota_share,
                source.user_quota_per_minute * source.quota_share,
                sleep=sleep,
            ),
        )

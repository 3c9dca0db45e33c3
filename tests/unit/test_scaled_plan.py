"""The scaled organisation plants only sessions the sessions stage can tell apart."""

from __future__ import annotations

from collections import Counter

from mentorpulse.sample import SCALES
from mentorpulse.sample.manifest import manifest
from mentorpulse.sample.scaled import plan


def test_no_pair_has_two_planted_sessions_at_one_start() -> None:
    # At medium scale a catch-up once landed on the slot of its pair's weekly 1:1 (same
    # start, same 30 minutes): the sessions stage folds the two into one session, so the
    # bench found 34,212 sessions where the manifest expected 34,213.
    planted = manifest(plan(SCALES["medium"])).sessions
    counts = Counter((s.pairing_key, s.start) for s in planted)
    assert [slot for slot, n in counts.items() if n > 1] == []

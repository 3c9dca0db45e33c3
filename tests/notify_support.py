"""The findings the notifier tests queue, built in one place.

Each test names only what its assertions read (a fact, a timezone, a recipient) as an
override; everything else is one ordinary reminder: mentor ``n`` has not met mentee ``n``
in the Engineering program since 10 Feb 2026.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from mentorpulse.notify.route import Alert

FIRED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def alert(n: int = 0, **changes: Any) -> Alert:
    """Finding ``n`` of a lapsed pairing (its own fingerprint, mentor, mentee, pairing)."""
    base = Alert(
        fingerprint=f"{n:016x}",
        rule_id="lapsed",
        severity="warning",
        state="firing",
        firing_since=FIRED,
        facts={"last_attended": "2026-02-10"},
        program="eng",
        program_name="Engineering mentoring",
        mentor_email=f"mentor{n}@example.org",
        mentor_name=f"Mentor {n}",
        mentee_email=f"mentee{n}@example.org",
        mentee_name=f"Mentee {n}",
        mentor_timezone="Europe/Berlin",
        pairing_key=f"eng:mentor{n}@example.org:mentee{n}@example.org",
        rule_kind="cadence_gap",
    )
    return replace(base, **changes)

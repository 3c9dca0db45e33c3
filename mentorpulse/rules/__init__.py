"""Rules: rule kinds judge a pairing's session timeline; the engine tracks findings."""

from __future__ import annotations

from mentorpulse.rules.engine import advance, evaluate, fingerprint
from mentorpulse.rules.kinds import (
    CadenceGap,
    Condition,
    RuleKind,
    SessionFact,
    Timeline,
    kind_for,
    register,
)

__all__ = [
    "CadenceGap",
    "Condition",
    "RuleKind",
    "SessionFact",
    "Timeline",
    "advance",
    "evaluate",
    "fingerprint",
    "kind_for",
    "register",
]

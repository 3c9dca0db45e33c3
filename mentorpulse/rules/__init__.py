"""Rules: rule kinds judge a pairing's session timeline; the engine tracks findings.

Each name below is imported from its module on first use, so loading
:mod:`mentorpulse.rules.check` (every command checks the config's selectors) does not load
the kinds and the engine, which only the evaluating stages use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

_HOMES = {
    "CadenceGap": "kinds",
    "Condition": "kinds",
    "RuleKind": "kinds",
    "SessionFact": "kinds",
    "Timeline": "kinds",
    "kind_for": "kinds",
    "register": "kinds",
    "advance": "engine",
    "evaluate": "engine",
    "fingerprint": "engine",
}

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


def __getattr__(name: str) -> object:
    """``rules.evaluate`` and the like: the module that holds it loads when first asked."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # asked once: later lookups skip this function
    return value

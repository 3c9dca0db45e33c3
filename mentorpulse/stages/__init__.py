"""The stages of the flow, each one idempotent and runnable alone.

sync (connectors → events) → sessions (events → sessions with verdicts) → evaluate
(sessions → findings) → notify (findings → outbox → transport) → report. The CLI runs one
stage; the daemon runs them on a timer. What has been done lives in the database, so
running a stage twice changes nothing the second time.

Each name below is imported from its stage's module on first use, so a command that runs
one stage does not pay for the others (``sync --once`` never loads notify's templates).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mentorpulse.stages.context import Clock, Context, utcnow
    from mentorpulse.stages.evaluate import EvaluationStats, evaluate_rules
    from mentorpulse.stages.notify import NotifyStats, send_notifications
    from mentorpulse.stages.sessions import SessionStats, rebuild_sessions
    from mentorpulse.stages.sync import Shard, SourceResult, sync_plan, sync_shard, sync_sources

_HOMES = {
    "Clock": "context",
    "Context": "context",
    "utcnow": "context",
    "EvaluationStats": "evaluate",
    "evaluate_rules": "evaluate",
    "NotifyStats": "notify",
    "send_notifications": "notify",
    "SessionStats": "sessions",
    "rebuild_sessions": "sessions",
    "Shard": "sync",
    "SourceResult": "sync",
    "sync_plan": "sync",
    "sync_shard": "sync",
    "sync_sources": "sync",
}

__all__ = [
    "Clock",
    "Context",
    "EvaluationStats",
    "NotifyStats",
    "SessionStats",
    "Shard",
    "SourceResult",
    "evaluate_rules",
    "rebuild_sessions",
    "send_notifications",
    "sync_plan",
    "sync_shard",
    "sync_sources",
    "utcnow",
]


def __getattr__(name: str) -> object:
    """``stages.sync_sources`` and the like: the stage's module loads when first asked."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # asked once: later lookups skip this function
    return value

"""The stages of the flow, each one idempotent and runnable alone.

sync (connectors → events) → sessions (events → sessions with verdicts) → evaluate
(sessions → findings) → notify (findings → outbox → transport) → report. The CLI runs one
stage; the daemon runs them on a timer. What has been done lives in the database, so
running a stage twice changes nothing the second time.
"""

from mentorpulse.stages.context import Clock, Context, utcnow
from mentorpulse.stages.evaluate import EvaluationStats, evaluate_rules
from mentorpulse.stages.notify import NotifyStats, send_notifications
from mentorpulse.stages.sessions import SessionStats, rebuild_sessions
from mentorpulse.stages.sync import SourceResult, sync_sources

__all__ = [
    "Clock",
    "Context",
    "EvaluationStats",
    "NotifyStats",
    "SessionStats",
    "SourceResult",
    "evaluate_rules",
    "rebuild_sessions",
    "send_notifications",
    "sync_sources",
    "utcnow",
]

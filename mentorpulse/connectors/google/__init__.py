"""The Google Workspace connector (``kind: google``): Calendar v3, and Meet v2 for attendance.

Split by concern: :mod:`.auth` (service account or signed-in user, tokens cached per
user), :mod:`.quota` (token buckets under the project and per-user quotas), :mod:`.calls`
(batched calls, retries, the typed errors of answers), :mod:`.sync` (the sync-token
state machine and the mapping of events), :mod:`.meet` (conference logs as attendance).

Calls for many calendars go out together as Google batch requests (up to 50 calls per
HTTP request), each call with its own user's token, so a poll of N unchanged calendars
costs N API calls in N/50 HTTP requests. Client-side token buckets keep the poller under
its share of the project and per-user quotas; rate limits, 5xx and dropped connections are
retried with exponential backoff and jitter (honouring Retry-After) before they become a
:class:`TransientError`. A 410 is :class:`CursorExpired`; refused credentials are an
:class:`AuthError` naming the user; a user without a calendar (suspended, deleted) is an
:class:`ItemError` and the other calendars go on.
"""

from mentorpulse.connectors.google.auth import (
    SCOPE_CALENDAR,
    SCOPE_MEET,
    TOKEN_NAME,
    oauth_client_info,
    scopes_for,
)
from mentorpulse.connectors.google.quota import QuotaGate
from mentorpulse.connectors.google.sync import GoogleConnector, occurrence_key

__all__ = [
    "SCOPE_CALENDAR",
    "SCOPE_MEET",
    "TOKEN_NAME",
    "GoogleConnector",
    "QuotaGate",
    "oauth_client_info",
    "occurrence_key",
    "scopes_for",
]

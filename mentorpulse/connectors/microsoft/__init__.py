"""The Microsoft 365 connector (``kind: microsoft``): Graph ``calendarView/delta`` per mailbox.

Split by concern: :mod:`.auth` (msal sign-in: client credentials, or the refresh token
that ``mentorpulse auth microsoft`` stored encrypted; the interactive device-code flow is
the CLI's), :mod:`.graph` (plain HTTP with httpx, ``$batch``, throttling, typed errors),
:mod:`.sync` (the delta cursor per mailbox and the mapping of events), :mod:`.teams`
(online-meeting attendance reports).

Mailboxes are read together in JSON ``$batch`` requests of up to 20, one sub-request per
mailbox, so a quiet organisation costs one request per 20 mailboxes. A 410 Gone or
``syncStateNotFound`` raises :class:`CursorExpired`; 429/503 with ``Retry-After`` are
waited out (briefly) and retried, per request and per sub-response of a batch. At most
one request per mailbox is in flight (4 when thin occurrences are completed in a batch),
within Graph's limit of 4 concurrent requests per mailbox.
"""

from mentorpulse.connectors.microsoft.auth import delegated_scopes, token_name
from mentorpulse.connectors.microsoft.sync import MicrosoftConnector

__all__ = ["MicrosoftConnector", "delegated_scopes", "token_name"]

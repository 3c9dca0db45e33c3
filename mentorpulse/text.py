"""How text from outside is made safe, and how moments are written: one home for both.

Calendars, rosters and configs carry text nobody checked; a control character breaks a
mail header, a log line or a PostgreSQL text column (NUL), a lone surrogate breaks
psycopg. Every layer asks here, so a character refused in one place is refused in all.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

# C0 and C1 control characters, DEL, Unicode's line and paragraph separators, and lone
# surrogates: nothing a name, title or header may carry.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The ones among them that separate words: they become one space where text is kept.
_CONTROL_RUN = re.compile(f"{_CONTROL.pattern}+")
_BREAK = re.compile("[\t\n\x0b\x0c\r\x85\u2028\u2029]+")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character (a NUL, tab, line break …)."""
    return _CONTROL.search(text) is not None


def clean_text(text: str) -> str:
    """``text`` without control characters; tabs and line breaks become spaces."""
    return _CONTROL.sub("", _BREAK.sub(" ", text))


def one_line(value: object) -> str:
    """One line of text (a mail header): every run of control characters is one space."""
    return _CONTROL_RUN.sub(" ", str(value)).strip()


def rfc3339_utc(moment: datetime) -> str:
    """``2026-11-23T10:00:00Z``: how providers, exports and idempotency keys want a time."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_time(moment: datetime | None, zone: tzinfo) -> str:
    """``2026-11-23 11:00 CET``: ``moment`` as a reader in ``zone`` sees it (``—`` if none)."""
    if moment is None:
        return "\u2014"
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M %Z}"

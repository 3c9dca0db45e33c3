"""When mail may go out: send windows (quiet hours) and digest windows, in local time.

Both are computed on the recipient's own wall clock, so "08:00" means eight in the
morning where they are, across DST changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog

from mentorpulse.config.schema import SendWindow
from mentorpulse.model import known_zone

log = structlog.get_logger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Digest windows are aligned to local midnight of a Monday, so "7d" digests go out weekly
# on the same weekday and "1d" ones daily, whenever the first item came in.
_ANCHOR = datetime(1970, 1, 5)  # noqa: DTZ001 - a wall-clock anchor, made aware below


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The recipient's zone; an unknown name falls back (and says so) rather than fail."""
    for candidate in (name, fallback):
        if candidate:
            if (found := known_zone(candidate)) is not None:
                return found
            log.warning("unknown_timezone", timezone=candidate)
    return ZoneInfo("UTC")


def in_send_window(moment: datetime, tz: ZoneInfo, window: SendWindow) -> bool:
    """Whether ``moment`` falls inside the send window on the recipient's clock."""
    local = moment.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if window.start < window.end:
        inside = window.start <= clock < window.end
        day = local.date()
    else:  # overnight (e.g. 22:00-06:00): the part after midnight belongs to the day before
        inside = clock >= window.start or clock < window.end
        day = local.date() - timedelta(days=1) if clock < window.end else local.date()
    return inside and WEEKDAYS[day.weekday()] in window.days


def next_send_time(moment: datetime, tz: ZoneInfo, window: SendWindow | None) -> datetime:
    """``moment`` if mail may go out then, else the next opening of the window (UTC)."""
    if window is None or in_send_window(moment, tz, window):
        return moment.astimezone(UTC)
    local_day = moment.astimezone(tz).date()
    for offset in range(-1, 9):
        day = local_day + timedelta(days=offset)
        opening = datetime.combine(day, window.start, tzinfo=tz)
        if opening > moment and in_send_window(opening, tz, window):
            return opening.astimezone(UTC)
    log.warning("send_window_never_open", days=window.days)  # e.g. days: [] - send anyway
    return moment.astimezone(UTC)


def digest_due(moment: datetime, tz: ZoneInfo, every: timedelta) -> datetime:
    """The end of the digest window ``moment`` falls in, on the recipient's wall clock."""
    wall = moment.astimezone(tz).replace(tzinfo=None)
    windows = (wall - _ANCHOR) // every + 1
    return (_ANCHOR + windows * every).replace(tzinfo=tz).astimezone(UTC)

"""Windows time zone names, as Graph, Outlook and EWS send them, mapped to IANA zones."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from tzlocal.windows_tz import win_tz

from mentorpulse.connectors.windows_zones import _DISPLAY_LABELS, to_iana

CORPUS = sorted(
    {*win_tz, *(f"(UTC+00:00) {label}" for label in _DISPLAY_LABELS)}
    | {
        "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
        "(GMT+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",  # older Outlook
        "(UTC-08:00) Pacific Time (US & Canada)",
        "(UTC-05:00) Eastern Time (US & Canada)",
        "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi",
        "(UTC) Coordinated Universal Time",
        "(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius",
        "tzone://Microsoft/Utc",
        "UTC",
        "Europe/Paris",
        "w. europe standard time",
    }
)


def test_every_windows_zone_name_maps_to_an_iana_zone() -> None:
    """Every CLDR Windows id and every registry display name, in any casing."""
    failures = []
    for name in CORPUS:
        mapping = to_iana(name, fallback="Asia/Tokyo")
        if mapping.warning is not None:
            failures.append(mapping.warning)
        ZoneInfo(mapping.zone)
    assert len(CORPUS) > 250
    assert failures == []


def test_display_names_map_to_the_zone_of_their_windows_id() -> None:
    assert to_iana("(UTC+01:00) Brussels, Copenhagen, Madrid, Paris", fallback="UTC").zone == (
        "Europe/Paris"
    )
    # A display name missing from the table still maps when a city and the offset agree.
    assert to_iana("(UTC+01:00) Oslo", fallback="UTC").zone == "Europe/Oslo"
    # ... but not when the offset contradicts the city.
    assert to_iana("(UTC+05:00) Oslo", fallback="Asia/Tokyo").warning is not None


@pytest.mark.parametrize("name", ["tzone://Microsoft/Custom", "Customized Time Zone", "", None])
def test_unknown_zones_fall_back_to_the_mailbox_zone_with_a_warning(name: str | None) -> None:
    mapping = to_iana(name, fallback="Asia/Tokyo")
    assert mapping.zone == "Asia/Tokyo"
    assert mapping.warning

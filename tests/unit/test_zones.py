"""Windows time zone names, as Graph, Outlook and EWS send them, mapped to IANA zones."""

from __future__ import annotations

import pytest
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
from tzlocal.windows_tz import win_tz

from mentorpulse.connectors.zones import lookup, to_iana

# Windows time zone ids as Outlook, Graph (``originalStartTimeZone``, mailbox settings) and
# EWS send them, written out here, and the IANA zone a user in that place expects. Where
# tzdata renamed a zone, both spellings are the same zone and either is right.
WINDOWS_IDS: dict[str, tuple[str, ...]] = {
    "Dateline Standard Time": ("Etc/GMT+12",),
    "UTC-11": ("Etc/GMT+11",),
    "Hawaiian Standard Time": ("Pacific/Honolulu",),
    "Alaskan Standard Time": ("America/Anchorage",),
    "Pacific Standard Time": ("America/Los_Angeles",),
    "US Mountain Standard Time": ("America/Phoenix",),
    "Mountain Standard Time": ("America/Denver",),
    "Central Standard Time": ("America/Chicago",),
    "Central Standard Time (Mexico)": ("America/Mexico_City",),
    "Canada Central Standard Time": ("America/Regina",),
    "Central America Standard Time": ("America/Guatemala",),
    "Eastern Standard Time": ("America/New_York",),
    "SA Pacific Standard Time": ("America/Bogota",),
    "Venezuela Standard Time": ("America/Caracas",),
    "Atlantic Standard Time": ("America/Halifax",),
    "Pacific SA Standard Time": ("America/Santiago",),
    "Newfoundland Standard Time": ("America/St_Johns",),
    "E. South America Standard Time": ("America/Sao_Paulo",),
    "Argentina Standard Time": ("America/Argentina/Buenos_Aires", "America/Buenos_Aires"),
    "Azores Standard Time": ("Atlantic/Azores",),
    "Cape Verde Standard Time": ("Atlantic/Cape_Verde",),
    "UTC": ("Etc/UTC",),
    "GMT Standard Time": ("Europe/London",),
    "Greenwich Standard Time": ("Atlantic/Reykjavik",),
    "Morocco Standard Time": ("Africa/Casablanca",),
    "W. Europe Standard Time": ("Europe/Berlin",),
    "Central Europe Standard Time": ("Europe/Budapest",),
    "Romance Standard Time": ("Europe/Paris",),
    "Central European Standard Time": ("Europe/Warsaw",),
    "W. Central Africa Standard Time": ("Africa/Lagos",),
    "GTB Standard Time": ("Europe/Bucharest",),
    "FLE Standard Time": ("Europe/Kyiv", "Europe/Kiev"),
    "E. Europe Standard Time": ("Europe/Chisinau",),
    "Israel Standard Time": ("Asia/Jerusalem",),
    "Egypt Standard Time": ("Africa/Cairo",),
    "South Africa Standard Time": ("Africa/Johannesburg",),
    "Jordan Standard Time": ("Asia/Amman",),
    "Turkey Standard Time": ("Europe/Istanbul",),
    "Arab Standard Time": ("Asia/Riyadh",),
    "Arabic Standard Time": ("Asia/Baghdad",),
    "E. Africa Standard Time": ("Africa/Nairobi",),
    "Russian Standard Time": ("Europe/Moscow",),
    "Iran Standard Time": ("Asia/Tehran",),
    "Arabian Standard Time": ("Asia/Dubai",),
    "Georgian Standard Time": ("Asia/Tbilisi",),
    "Afghanistan Standard Time": ("Asia/Kabul",),
    "Pakistan Standard Time": ("Asia/Karachi",),
    "West Asia Standard Time": ("Asia/Tashkent",),
    "Ekaterinburg Standard Time": ("Asia/Yekaterinburg",),
    "India Standard Time": ("Asia/Kolkata", "Asia/Calcutta"),
    "Sri Lanka Standard Time": ("Asia/Colombo",),
    "Nepal Standard Time": ("Asia/Kathmandu", "Asia/Katmandu"),
    "Bangladesh Standard Time": ("Asia/Dhaka",),
    "Myanmar Standard Time": ("Asia/Yangon", "Asia/Rangoon"),
    "SE Asia Standard Time": ("Asia/Bangkok",),
    "North Asia Standard Time": ("Asia/Krasnoyarsk",),
    "China Standard Time": ("Asia/Shanghai",),
    "Singapore Standard Time": ("Asia/Singapore",),
    "Taipei Standard Time": ("Asia/Taipei",),
    "W. Australia Standard Time": ("Australia/Perth",),
    "Tokyo Standard Time": ("Asia/Tokyo",),
    "Korea Standard Time": ("Asia/Seoul",),
    "Yakutsk Standard Time": ("Asia/Yakutsk",),
    "Cen. Australia Standard Time": ("Australia/Adelaide",),
    "AUS Central Standard Time": ("Australia/Darwin",),
    "E. Australia Standard Time": ("Australia/Brisbane",),
    "AUS Eastern Standard Time": ("Australia/Sydney",),
    "Tasmania Standard Time": ("Australia/Hobart",),
    "Vladivostok Standard Time": ("Asia/Vladivostok",),
    "New Zealand Standard Time": ("Pacific/Auckland",),
    "Fiji Standard Time": ("Pacific/Fiji",),
    "Tonga Standard Time": ("Pacific/Tongatapu",),
    "Samoa Standard Time": ("Pacific/Apia",),
    "Line Islands Standard Time": ("Pacific/Kiritimati",),
}

# Display names as Outlook writes them (the Windows registry's "Display" of a zone), with
# the IANA zone of the Windows id they stand for.
DISPLAY_NAMES: dict[str, tuple[str, ...]] = {
    "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna": ("Europe/Berlin",),
    "(GMT+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna": ("Europe/Berlin",),
    "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris": ("Europe/Paris",),
    "(UTC+01:00) Sarajevo, Skopje, Warsaw, Zagreb": ("Europe/Warsaw",),
    "(UTC+00:00) Dublin, Edinburgh, Lisbon, London": ("Europe/London",),
    "(UTC-08:00) Pacific Time (US & Canada)": ("America/Los_Angeles",),
    "(UTC-05:00) Eastern Time (US & Canada)": ("America/New_York",),
    "(UTC-06:00) Central Time (US & Canada)": ("America/Chicago",),
    "(UTC-03:00) Brasilia": ("America/Sao_Paulo",),
    "(UTC+03:00) Moscow, St. Petersburg": ("Europe/Moscow",),
    "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi": ("Asia/Kolkata", "Asia/Calcutta"),
    "(UTC+08:00) Beijing, Chongqing, Hong Kong, Urumqi": ("Asia/Shanghai",),
    "(UTC+09:00) Osaka, Sapporo, Tokyo": ("Asia/Tokyo",),
    "(UTC+10:00) Canberra, Melbourne, Sydney": ("Australia/Sydney",),
    "(UTC+12:00) Auckland, Wellington": ("Pacific/Auckland",),
    "(UTC+02:00) Helsinki, Kyiv, Riga, Sofia, Tallinn, Vilnius": ("Europe/Kyiv", "Europe/Kiev"),
    "(UTC) Coordinated Universal Time": ("Etc/UTC",),
}

# Exchange's markers and spellings that are already IANA, or differ only in case.
OTHER_SPELLINGS: dict[str, tuple[str, ...]] = {
    "tzone://Microsoft/Utc": ("Etc/UTC",),
    "Europe/Paris": ("Europe/Paris",),
    "w. europe standard time": ("Europe/Berlin",),
    "PACIFIC STANDARD TIME": ("America/Los_Angeles",),
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [*WINDOWS_IDS.items(), *DISPLAY_NAMES.items(), *OTHER_SPELLINGS.items()],
)
def test_a_windows_zone_maps_to_the_iana_zone_a_user_expects(
    name: str, expected: tuple[str, ...]
) -> None:
    mapping = to_iana(name, fallback="Etc/GMT-14")  # no zone expected here: a fallback fails
    assert mapping.warning is None
    assert mapping.zone in expected


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


# Every name whose mapping changed when ics (icalendar's WINDOWS_TO_OLSON) and Graph (the
# CLDR table tzlocal ships) moved to the one mapper: (old table, name) → (what that table
# said, what the mapper says, why). Reviewed by hand; a library upgrade that changes either
# table fails the test below until this list is reviewed again.
CHANGED: dict[tuple[str, str], tuple[str | None, str, str]] = {
    ("icalendar", "Alberta Standard Time"): (
        None,
        "America/Edmonton",
        "a Windows id newer than the CLDR snapshot icalendar's table was generated from",
    ),
    ("icalendar", "British Columbia Standard Time"): (
        None,
        "America/Vancouver",
        "a Windows id newer than the CLDR snapshot icalendar's table was generated from",
    ),
    ("icalendar", "Manitoba Standard Time"): (
        None,
        "America/Winnipeg",
        "a Windows id newer than the CLDR snapshot icalendar's table was generated from",
    ),
}


def test_the_union_of_both_old_tables_maps_as_they_did_except_the_listed_names() -> None:
    old_tables = {"icalendar": WINDOWS_TO_OLSON, "cldr": win_tz}
    names = set(WINDOWS_TO_OLSON) | set(win_tz)
    changed = {
        (table, name): (said.get(name), lookup(name))
        for name in names
        for table, said in old_tables.items()
        if said.get(name) != lookup(name)
    }
    assert changed == {key: (old, new) for key, (old, new, _why) in CHANGED.items()}
    assert all(lookup(name) is not None for name in names)  # nothing falls to a fallback

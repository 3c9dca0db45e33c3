"""The one Windows → IANA zone mapper, for every connector that meets Windows names.

Three spellings reach us: Windows ids ("W. Europe Standard Time"), mapped through the
CLDR windowsZones table that ``tzlocal`` ships generated from CLDR; the display names of
the Windows registry ("(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"),
which Outlook writes into ``originalStartTimeZone`` and into the TZID of the iCalendar
files it exports; and Exchange's own markers ("tzone://Microsoft/Utc",
"tzone://Microsoft/Custom"). Graph (and EWS) call :func:`to_iana`, where anything unknown
falls back to the mailbox's zone *with a warning the caller records*: never a crash, never
silent UTC. The iCalendar connector calls :func:`lookup`, which says None instead, because
a VTIMEZONE of its own then still gives the offsets.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import available_timezones

from tzlocal.windows_tz import win_tz

from mentorpulse.model import known_zone

# Display names of the Windows registry's time zones ("Display" of each key under
# HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Time Zones, as listed by
# `Get-TimeZone -ListAvailable` and Graph's `outlook/supportedTimeZones`), keyed on the
# label after the "(UTC±hh:mm)" prefix: the prefix changes when a country moves its
# offset (Amman, Astana), the label and the Windows id do not.
_DISPLAY_LABELS: dict[str, str] = {
    "international date line west": "Dateline Standard Time",
    "coordinated universal time-11": "UTC-11",
    "aleutian islands": "Aleutian Standard Time",
    "hawaii": "Hawaiian Standard Time",
    "marquesas islands": "Marquesas Standard Time",
    "alaska": "Alaskan Standard Time",
    "coordinated universal time-09": "UTC-09",
    "baja california": "Pacific Standard Time (Mexico)",
    "coordinated universal time-08": "UTC-08",
    "pacific time (us and canada)": "Pacific Standard Time",
    "arizona": "US Mountain Standard Time",
    "chihuahua, la paz, mazatlan": "Mountain Standard Time (Mexico)",
    "la paz, mazatlan": "Mountain Standard Time (Mexico)",
    "mountain time (us and canada)": "Mountain Standard Time",
    "yukon": "Yukon Standard Time",
    "central america": "Central America Standard Time",
    "central time (us and canada)": "Central Standard Time",
    "easter island": "Easter Island Standard Time",
    "guadalajara, mexico city, monterrey": "Central Standard Time (Mexico)",
    "saskatchewan": "Canada Central Standard Time",
    "bogota, lima, quito, rio branco": "SA Pacific Standard Time",
    "bogota, lima, quito": "SA Pacific Standard Time",
    "chetumal": "Eastern Standard Time (Mexico)",
    "eastern time (us and canada)": "Eastern Standard Time",
    "haiti": "Haiti Standard Time",
    "havana": "Cuba Standard Time",
    "indiana (east)": "US Eastern Standard Time",
    "turks and caicos": "Turks And Caicos Standard Time",
    "asuncion": "Paraguay Standard Time",
    "atlantic time (canada)": "Atlantic Standard Time",
    "caracas": "Venezuela Standard Time",
    "cuiaba": "Central Brazilian Standard Time",
    "georgetown, la paz, manaus, san juan": "SA Western Standard Time",
    "santiago": "Pacific SA Standard Time",
    "newfoundland": "Newfoundland Standard Time",
    "araguaina": "Tocantins Standard Time",
    "brasilia": "E. South America Standard Time",
    "cayenne, fortaleza": "SA Eastern Standard Time",
    "city of buenos aires": "Argentina Standard Time",
    "buenos aires": "Argentina Standard Time",
    "greenland": "Greenland Standard Time",
    "montevideo": "Montevideo Standard Time",
    "punta arenas": "Magallanes Standard Time",
    "saint pierre and miquelon": "Saint Pierre Standard Time",
    "salvador": "Bahia Standard Time",
    "coordinated universal time-02": "UTC-02",
    "mid-atlantic - old": "UTC-02",
    "azores": "Azores Standard Time",
    "cabo verde is.": "Cape Verde Standard Time",
    "cape verde is.": "Cape Verde Standard Time",
    "coordinated universal time": "UTC",
    "dublin, edinburgh, lisbon, london": "GMT Standard Time",
    "greenwich mean time : dublin, edinburgh, lisbon, london": "GMT Standard Time",
    "monrovia, reykjavik": "Greenwich Standard Time",
    "sao tome": "Sao Tome Standard Time",
    "casablanca": "Morocco Standard Time",
    "amsterdam, berlin, bern, rome, stockholm, vienna": "W. Europe Standard Time",
    "belgrade, bratislava, budapest, ljubljana, prague": "Central Europe Standard Time",
    "brussels, copenhagen, madrid, paris": "Romance Standard Time",
    "sarajevo, skopje, warsaw, zagreb": "Central European Standard Time",
    "west central africa": "W. Central Africa Standard Time",
    "amman": "Jordan Standard Time",
    "athens, bucharest": "GTB Standard Time",
    "athens, bucharest, istanbul": "GTB Standard Time",
    "beirut": "Middle East Standard Time",
    "cairo": "Egypt Standard Time",
    "chisinau": "E. Europe Standard Time",
    "damascus": "Syria Standard Time",
    "gaza, hebron": "West Bank Standard Time",
    "harare, pretoria": "South Africa Standard Time",
    "helsinki, kyiv, riga, sofia, tallinn, vilnius": "FLE Standard Time",
    "helsinki, kiev, riga, sofia, tallinn, vilnius": "FLE Standard Time",
    "jerusalem": "Israel Standard Time",
    "juba": "South Sudan Standard Time",
    "kaliningrad": "Kaliningrad Standard Time",
    "khartoum": "Sudan Standard Time",
    "tripoli": "Libya Standard Time",
    "windhoek": "Namibia Standard Time",
    "baghdad": "Arabic Standard Time",
    "istanbul": "Turkey Standard Time",
    "kuwait, riyadh": "Arab Standard Time",
    "minsk": "Belarus Standard Time",
    "moscow, st. petersburg": "Russian Standard Time",
    "moscow, st. petersburg, volgograd": "Russian Standard Time",
    "nairobi": "E. Africa Standard Time",
    "volgograd": "Volgograd Standard Time",
    "tehran": "Iran Standard Time",
    "abu dhabi, muscat": "Arabian Standard Time",
    "astrakhan, ulyanovsk": "Astrakhan Standard Time",
    "baku": "Azerbaijan Standard Time",
    "izhevsk, samara": "Russia Time Zone 3",
    "port louis": "Mauritius Standard Time",
    "saratov": "Saratov Standard Time",
    "tbilisi": "Georgian Standard Time",
    "yerevan": "Caucasus Standard Time",
    "kabul": "Afghanistan Standard Time",
    "ashgabat, tashkent": "West Asia Standard Time",
    "astana": "Central Asia Standard Time",
    "ekaterinburg": "Ekaterinburg Standard Time",
    "islamabad, karachi": "Pakistan Standard Time",
    "qyzylorda": "Qyzylorda Standard Time",
    "chennai, kolkata, mumbai, new delhi": "India Standard Time",
    "sri jayawardenepura": "Sri Lanka Standard Time",
    "kathmandu": "Nepal Standard Time",
    "dhaka": "Bangladesh Standard Time",
    "omsk": "Omsk Standard Time",
    "yangon (rangoon)": "Myanmar Standard Time",
    "bangkok, hanoi, jakarta": "SE Asia Standard Time",
    "barnaul, gorno-altaysk": "Altai Standard Time",
    "hovd": "W. Mongolia Standard Time",
    "krasnoyarsk": "North Asia Standard Time",
    "novosibirsk": "N. Central Asia Standard Time",
    "tomsk": "Tomsk Standard Time",
    "beijing, chongqing, hong kong, urumqi": "China Standard Time",
    "irkutsk": "North Asia East Standard Time",
    "kuala lumpur, singapore": "Singapore Standard Time",
    "perth": "W. Australia Standard Time",
    "taipei": "Taipei Standard Time",
    "ulaanbaatar": "Ulaanbaatar Standard Time",
    "eucla": "Aus Central W. Standard Time",
    "chita": "Transbaikal Standard Time",
    "osaka, sapporo, tokyo": "Tokyo Standard Time",
    "pyongyang": "North Korea Standard Time",
    "seoul": "Korea Standard Time",
    "yakutsk": "Yakutsk Standard Time",
    "adelaide": "Cen. Australia Standard Time",
    "darwin": "AUS Central Standard Time",
    "brisbane": "E. Australia Standard Time",
    "canberra, melbourne, sydney": "AUS Eastern Standard Time",
    "guam, port moresby": "West Pacific Standard Time",
    "hobart": "Tasmania Standard Time",
    "vladivostok": "Vladivostok Standard Time",
    "lord howe island": "Lord Howe Standard Time",
    "bougainville island": "Bougainville Standard Time",
    "chokurdakh": "Russia Time Zone 10",
    "magadan": "Magadan Standard Time",
    "norfolk island": "Norfolk Standard Time",
    "sakhalin": "Sakhalin Standard Time",
    "solomon is., new caledonia": "Central Pacific Standard Time",
    "anadyr, petropavlovsk-kamchatsky": "Russia Time Zone 11",
    "auckland, wellington": "New Zealand Standard Time",
    "coordinated universal time+12": "UTC+12",
    "fiji": "Fiji Standard Time",
    "chatham islands": "Chatham Islands Standard Time",
    "coordinated universal time+13": "UTC+13",
    "nuku'alofa": "Tonga Standard Time",
    "samoa": "Samoa Standard Time",
    "kiritimati island": "Line Islands Standard Time",
}

# Exchange's markers: a zone without a name means "whatever the organiser's client had".
_EXCHANGE_UTC = {"tzone://microsoft/utc", "utc", "gmt", "etc/utc", "z"}
_DISPLAY = re.compile(
    r"^\(\s*(?:utc|gmt)\s*(?:(?P<sign>[+-])\s*(?P<h>\d{1,2})(?::?(?P<m>\d{2}))?)?\s*\)\s*(?P<label>.*)$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ZoneMapping:
    """The IANA zone for one name; ``warning`` says when it is only a fallback."""

    zone: str
    warning: str | None = None


def _normalise(text: str) -> str:
    text = text.replace("&", " and ").replace("\u2019", "'")
    return re.sub(r"\s+", " ", text).strip().lower()


@functools.cache
def _windows_ids() -> dict[str, str]:
    """CLDR windowsZones (territory 001), case-insensitive, plus the UTC aliases."""
    table = {_normalise(k): v for k, v in win_tz.items()}
    table.setdefault("utc", "Etc/UTC")
    return table


@functools.cache
def _iana_names() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}


@functools.cache
def _by_city() -> dict[str, list[str]]:
    """IANA zones by their city component, for display names missing from the table."""
    cities: dict[str, list[str]] = {}
    for name in available_timezones():
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/")):
            city = name.rsplit("/", 1)[1].replace("_", " ").lower()
            cities.setdefault(city, []).append(name)
    return cities


def _standard_offset(zone: str) -> timedelta | None:
    """The zone's offset in January and July, whichever is smaller (its standard time)."""
    info = known_zone(zone)
    if info is None:
        return None
    offsets = [
        datetime(2025, month, 1, tzinfo=info).utcoffset() or timedelta(0) for month in (1, 7)
    ]
    return min(offsets)


def _from_display(name: str) -> str | None:
    found = _DISPLAY.match(name.strip())
    if found is None:
        return None
    label = _normalise(found.group("label"))
    windows = _DISPLAY_LABELS.get(label)
    if windows is not None:
        return _windows_ids().get(_normalise(windows)) or ("Etc/UTC" if windows == "UTC" else None)
    # A label the table does not know (a newer Windows, a localised name): try each
    # city in it against tzdata, accepting only a zone whose offset matches the prefix.
    offset = timedelta(0)
    if found.group("h"):
        offset = timedelta(hours=int(found.group("h")), minutes=int(found.group("m") or 0))
        if found.group("sign") == "-":
            offset = -offset
    for city in (part.strip() for part in label.split(",")):
        for zone in _by_city().get(city, []):
            if _standard_offset(zone) == offset:
                return zone
    return None


def lookup(name: str) -> str | None:
    """The IANA zone for a Windows id, display name, IANA name or Exchange UTC marker;
    None for a name none of them knows (the caller decides what stands in for it)."""
    text = name.strip()
    key = _normalise(text)
    if not key:
        return None
    if key in _EXCHANGE_UTC:
        return "Etc/UTC"
    return _windows_ids().get(key) or _iana_names().get(key) or _from_display(text)


def to_iana(name: str | None, *, fallback: str) -> ZoneMapping:
    """The IANA zone for a Windows id, display name, IANA name or Exchange marker.

    ``fallback`` (the mailbox's zone) is used, with a warning, for anything unknown.
    """
    if name is None or not name.strip():
        return ZoneMapping(fallback, "no time zone given; used the mailbox's zone")
    if (zone := lookup(name)) is not None:
        return ZoneMapping(zone)
    text = name.strip()
    key = _normalise(text)
    if key.startswith("tzone://microsoft/custom"):
        reason = "a custom time zone defined by the organiser's client"
    else:
        reason = "an unknown time zone"
    return ZoneMapping(fallback, f"{text!r} is {reason}; used the mailbox's zone {fallback}")

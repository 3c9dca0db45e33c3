"""Kind name → connector class, imported lazily so a provider's SDK loads only when used."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mentorpulse.config.schema import (
    CaldavSource,
    ExchangeSource,
    GoogleSource,
    IcsSource,
    MicrosoftSource,
)
from mentorpulse.connectors.base import Connector

SourceConfig = IcsSource | CaldavSource | GoogleSource | MicrosoftSource | ExchangeSource


def build_connector(
    source: SourceConfig, *, base_dir: Path, now: datetime, default_zone: str
) -> Connector:
    """The connector for one configured source; ``default_zone`` reads floating times."""
    if source.kind == "ics":
        from mentorpulse.connectors.ics import IcsConnector

        return IcsConnector(source, base_dir=base_dir, now=now, default_zone=default_zone)
    if source.kind == "microsoft":
        from mentorpulse.connectors.microsoft import MicrosoftConnector

        return MicrosoftConnector(source, base_dir=base_dir, now=now, default_zone=default_zone)
    if source.kind == "google":
        from mentorpulse.connectors.google import GoogleConnector

        return GoogleConnector(source, base_dir=base_dir, now=now, default_zone=default_zone)
    if source.kind == "caldav":
        from mentorpulse.connectors.caldav import CaldavConnector

        return CaldavConnector(source, now=now, default_zone=default_zone)
    if source.kind == "exchange":
        from mentorpulse.connectors.exchange import ExchangeConnector

        return ExchangeConnector(source, base_dir=base_dir, now=now, default_zone=default_zone)
    raise AssertionError(f"unknown source kind {source.kind!r}")  # the schema rejects it

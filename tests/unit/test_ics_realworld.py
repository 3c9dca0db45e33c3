"""Every real-world .ics file we have is ingested or rejected by name; none crashes a sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mentorpulse.config.schema import IcsSource
from mentorpulse.connectors.ics import IcsConnector
from mentorpulse.model import EventRecord, ItemError, SyncPage
from tests.conftest import SHARED_TESTDATA

REALWORLD = SHARED_TESTDATA / "ics-realworld"
NOW = datetime(2020, 1, 1, tzinfo=UTC)


def test_the_corpus_is_there(realworld_ics: Path) -> None:
    """Fails (not skips) without ../shared/testdata, so a missing corpus is never silent."""
    assert any(realworld_ics.glob("*.ics"))


def _source() -> IcsSource:
    # Wide enough to hold the corpus's events (1990s to 2030s).
    return IcsSource(
        id="realworld",
        kind="ics",
        path=str(REALWORLD),
        window_past=timedelta(days=365 * 40),
        window_future=timedelta(days=365 * 15),
    )


@pytest.fixture(scope="module")
def pages() -> list[SyncPage]:
    return list(IcsConnector(_source(), base_dir=REALWORLD, now=NOW).sync(None))


def _files() -> list[str]:
    return sorted(p.name for p in REALWORLD.glob("*.ics")) if REALWORLD.is_dir() else []


def _by_file(pages: list[SyncPage]) -> dict[str, tuple[list[EventRecord], list[ItemError]]]:
    found: dict[str, tuple[list[EventRecord], list[ItemError]]] = {}
    for page in pages:
        for scope in page.replaces_scopes:
            of_file = [
                r for r, s in zip(page.records, page.record_scopes(), strict=True) if s == scope
            ]
            errors = [e for e in page.errors if e.item.split(": UID ")[0] == scope]
            found[scope] = (of_file, errors)
        for error in page.errors:  # an unparseable file: one error naming it, nothing replaced
            if error.item not in found and error.item.split(": UID ")[0] not in found:
                found[error.item] = ([], [error])
    return found


def test_corpus_is_there() -> None:
    assert len(_files()) >= 100


def test_every_file_is_ingested_or_rejected_by_name(pages: list[SyncPage]) -> None:
    found = _by_file(pages)
    assert sorted(found) == _files()
    for name, (records, errors) in found.items():
        assert all(e.item == name or e.item.startswith(f"{name}: UID ") for e in errors), name
        assert all(e.message for e in errors), name
        if not records and not errors:
            text = (REALWORLD / name).read_text(errors="replace").upper()
            assert "BEGIN:VEVENT" not in text, f"{name} has events but gave nothing"


def test_records_are_well_formed(pages: list[SyncPage]) -> None:
    every = [r for p in pages for r in p.records]
    assert len(every) > 1000
    assert len({r.provider_id for r in every}) == len(every)
    for record in every:
        assert record.start.utcoffset() == timedelta(0), record.provider_id
        assert record.end >= record.start, record.provider_id
        assert record.source_id == "realworld"
        if record.series_id is not None:
            assert record.original_start is not None


def test_known_files(pages: list[SyncPage]) -> None:
    found = _by_file(pages)

    (ny,) = found["calendars__america_new_york.ics"][0]
    assert ny.zone == "America/New_York"  # TZID custom_America/New_York
    assert ny.start == datetime(2014, 8, 29, 12, tzinfo=UTC)

    (pacific,) = found["calendars__timezone_same_start.ics"][0]
    assert pacific.zone == "America/Los_Angeles"  # a Windows zone name

    assert [e.item for e in found["calendars__broken_dtstart.ics"][1]] == [
        "calendars__broken_dtstart.ics: UID test-123"
    ]
    assert [e.item for e in found["calendars__issue_104_broken_calendar.ics"][1]] == [
        "calendars__issue_104_broken_calendar.ics"
    ]

    recurring = found["events__event_with_recurrence.ics"][0]
    assert len(recurring) > 10
    assert {r.series_id for r in recurring} == {recurring[0].ical_uid}

    (commas,) = found["calendars__issue_127_categories_with_commas.ics"][0]
    assert "Project" in commas.categories


def test_broken_files_neither_wipe_nor_advance(pages: list[SyncPage]) -> None:
    replaced = {s for p in pages for s in p.replaces_scopes}
    unparseable = [e for p in pages for e in p.errors if e.item not in replaced]
    unparseable = [e for e in unparseable if e.item.split(": UID ")[0] not in replaced]
    assert unparseable, "the corpus holds files that cannot be parsed"
    cursor = pages[-1].cursor
    assert cursor is not None
    again = list(IcsConnector(_source(), base_dir=REALWORLD, now=NOW).sync(cursor))
    # Only the unparseable files are retried; everything else is unchanged.
    assert [e for p in again for e in p.errors] == unparseable
    assert all(p.replaces_scopes == () for p in again)

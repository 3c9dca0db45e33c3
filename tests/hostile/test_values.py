"""Values at the connector boundary: whatever a calendar holds fits its column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import String

from mentorpulse.connectors import base
from mentorpulse.connectors.base import sanitise_page, sanitise_record, stable_id
from mentorpulse.model import Attendee, EventRecord, ItemError, SyncPage
from mentorpulse.storage.models import Event

START = datetime(2026, 3, 2, 10, tzinfo=UTC)


def record(**values: object) -> EventRecord:
    fields: dict[str, object] = {
        "source_id": "cal",
        "provider_id": "p1",
        "ical_uid": "u1",
        "start": START,
        "end": START + timedelta(hours=1),
        **values,
    }
    return EventRecord(**fields)  # type: ignore[arg-type]


def test_the_limits_are_the_columns() -> None:
    columns = Event.__table__.columns
    width = {column.name: getattr(column.type, "length", None) for column in columns}
    assert width["provider_id"] == width["scope"] == width["conference_id"] == base.ID_MAX
    assert width["ical_uid"] >= base.UID_MAX
    assert width["series_id"] >= base.UID_MAX
    assert width["organizer"] == width["calendar_owner"] == base.EMAIL_MAX
    assert width["zone"] == base.ZONE_MAX
    assert width["etag"] == base.ETAG_MAX
    assert not isinstance(columns["title"].type, String) or columns["title"].type.length is None


def test_control_characters_are_stripped_everywhere() -> None:
    dirty = record(
        provider_id="p\x001",
        ical_uid="u\x00\x1b[31m1",
        title="Mentor\x00ing\n\tsession\x7f\x9b",
        categories=("Ment\x00oring", "\x01", "Ment\x00oring"),
        organizer="Alice\x00@Example.org",
        attendees=(Attendee("bob\x07@example.org"), Attendee("bob@example.org")),
        zone="Europe/Berlin\x00",
        conference_id="meet\x00id",
        etag='"e\x00"',
    )
    clean = sanitise_record(dirty)
    assert clean.provider_id == "p1"
    assert clean.ical_uid == "u[31m1"
    assert clean.title == "Mentoring session"  # a run of breaks is one space
    assert clean.categories == ("Mentoring",)
    assert clean.organizer == "alice@example.org"
    assert [a.email for a in clean.attendees] == ["bob@example.org"]
    assert clean.zone == "Europe/Berlin"
    assert clean.conference_id == "meetid"
    assert clean.etag == '"e"'


def test_long_ids_are_hashed_stably_and_texts_cut() -> None:
    uid = "u" * 5000
    clean = sanitise_record(
        record(
            provider_id=f"file.ics#{uid}#",
            ical_uid=uid,
            series_id=uid,
            title="t" * 10_000,
            categories=tuple(f"c{n}" * 100 for n in range(500)),
            organizer="o" * 400 + "@example.org",
            sequence=99_999_999_999,
        )
    )
    assert len(clean.ical_uid) <= base.UID_MAX
    assert clean.ical_uid == clean.series_id
    assert clean.ical_uid == stable_id(uid, base.UID_MAX)  # the same UID, the same id
    assert stable_id("v" + uid[1:], base.UID_MAX) != clean.ical_uid
    assert len(clean.provider_id) <= base.ID_MAX
    assert clean.title is not None
    assert len(clean.title) == base.TITLE_MAX
    assert len(clean.categories) == base.CATEGORIES_MAX
    assert all(len(c) <= base.CATEGORY_MAX for c in clean.categories)
    assert clean.organizer is None  # no address is 400 characters long
    assert clean.sequence == base.SEQUENCE_MAX


def test_a_uid_of_nothing_but_controls_still_gets_an_id() -> None:
    assert stable_id("\x01\x02", base.UID_MAX) not in ("", stable_id("\x01\x03", base.UID_MAX))


def test_a_clean_record_is_returned_as_is() -> None:
    clean = record(attendees=(Attendee("alice@example.org"),), title="Mentoring")
    assert sanitise_record(clean) is clean


def test_a_page_keeps_its_deletions_and_scope_matching_its_records() -> None:
    long_id = "x" * 2000
    page = sanitise_page(
        SyncPage(
            records=(record(provider_id=long_id),),
            deleted=(long_id, "gone\x00"),
            replaces_scopes=("dir/" + "f" * 2000,),
            errors=(ItemError(item="f.ics: UID \x00" + "u" * 900, message="bad\x1b[2J" * 200),),
        )
    )
    assert page.deleted == (page.records[0].provider_id, "gone")
    (scope,) = page.replaces_scopes
    assert len(scope) <= base.ID_MAX
    (error,) = page.errors
    assert len(error.item) <= base.ITEM_MAX
    assert "\x00" not in error.item
    assert len(error.message) <= base.MESSAGE_MAX
    assert "\x1b" not in error.message

"""Storage on both backends: migrations, pages with cursors, the daemon lease."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.model import Attendee, EventRecord, ItemError, Response, SyncPage
from mentorpulse.service import lease
from mentorpulse.storage import events, roster, sources
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.migrate import ours, revision_state, upgrade
from mentorpulse.storage.models import Base, Event, Pairing, Person, Program, Source

T0 = datetime(2026, 11, 2, 10, tzinfo=UTC)
CONFIG = MentorpulseConfig.model_validate(
    {"programs": [{"id": "eng", "cadence": {"every": "14d"}}]}
)
ROSTER = [
    RosterPairing("eng", "ana@x.org", "ben@x.org", date(2026, 9, 1), line=2),
    RosterPairing("eng", "cy@x.org", "dee@x.org", date(2026, 9, 1), line=3),
]


@pytest.fixture
def db(database_url: str) -> sessionmaker[Db]:
    engine = make_engine(database_url)
    upgrade(engine)
    return session_factory(engine)


def meeting(provider_id: str, mentor: str, mentee: str, start: datetime = T0) -> EventRecord:
    return EventRecord(
        source_id="cal",
        provider_id=provider_id,
        ical_uid=provider_id,
        start=start,
        end=start + timedelta(hours=1),
        organizer=mentor,
        attendees=(Attendee(mentor, Response.ACCEPTED), Attendee(mentee, Response.ACCEPTED)),
        title="1:1",
    )


def match(record: EventRecord) -> list[str]:
    people = record.participants()
    return [p.key for p in ROSTER if {p.mentor_email, p.mentee_email} <= people]


def store(db: sessionmaker[Db], page: SyncPage) -> events.PageStats:
    with db.begin() as session:
        roster.apply_roster(session, CONFIG, ROSTER)
        sources.ensure_source(session, "cal", "ics")
        state = sources.sync_state(session, "cal")
        ids = roster.pairing_ids(session)
        return events.store_page(
            session, state, page, match=match, pairing_ids=ids, store_titles=False
        )


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # a second upgrade is a no-op
    current, head = revision_state(engine)
    assert current == head
    with engine.connect() as connection:
        migration = MigrationContext.configure(connection, opts={"include_object": ours})
        diff = compare_metadata(migration, Base.metadata)
    assert diff == []
    assert "outbox" in inspect(engine).get_table_names()


def test_page_is_stored_with_its_cursor_and_unrostered_events_are_dropped(
    db: sessionmaker[Db],
) -> None:
    page = SyncPage(
        records=(
            meeting("m1", "ana@x.org", "ben@x.org"),
            meeting("noise", "ana@x.org", "zed@x.org"),
        ),
        cursor={"token": "abc"},
        replaces_scopes=("ana.ics",),
        errors=(ItemError("ana.ics: UID broken", "no DTSTART"),),
    )
    stats = store(db, page)
    assert (stats.stored, stats.dropped) == (1, 1)
    with db() as session:
        source = session.get_one(Source, "cal")
        assert source.cursor == {"token": "abc"}
        assert source.events_dropped == 1
        assert source.item_errors == [{"item": "ana.ics: UID broken", "message": "no DTSTART"}]
        event = session.scalars(select(Event)).one()
        assert event.title is None, "titles are not stored unless privacy.store_titles is on"
        assert event.start == T0


def test_same_page_twice_writes_nothing(db: sessionmaker[Db]) -> None:
    page = SyncPage(records=(meeting("m1", "ana@x.org", "ben@x.org"),), replaces_scopes=("a",))
    store(db, page)
    with db.begin() as session:
        session.execute(Pairing.__table__.update().values(events_changed=False))
    again = store(db, page)
    assert (again.stored, again.unchanged, again.deleted) == (0, 1, 0)
    with db() as session:
        assert not any(session.scalars(select(Pairing.events_changed)))


def test_replacing_a_scope_deletes_what_is_gone_and_flags_the_pairing(
    db: sessionmaker[Db],
) -> None:
    store(
        db,
        SyncPage(
            records=(
                meeting("m1", "ana@x.org", "ben@x.org"),
                meeting("m2", "cy@x.org", "dee@x.org"),
            ),
            replaces_scopes=("a",),
        ),
    )
    store(
        db, SyncPage(records=(meeting("other", "ana@x.org", "ben@x.org"),), replaces_scopes=("b",))
    )
    with db.begin() as session:
        session.execute(Pairing.__table__.update().values(events_changed=False))
    stats = store(
        db, SyncPage(records=(meeting("m1", "ana@x.org", "ben@x.org"),), replaces_scopes=("a",))
    )
    assert stats.deleted == 1
    with db() as session:
        ids = set(session.scalars(select(Event.provider_id)))
        assert ids == {"m1", "other"}, "scope b is untouched"
        flagged = set(session.scalars(select(Pairing.key).where(Pairing.events_changed)))
        assert flagged == {"eng:cy@x.org:dee@x.org"}


def test_incremental_deletions(db: sessionmaker[Db]) -> None:
    store(db, SyncPage(records=(meeting("m1", "ana@x.org", "ben@x.org"),)))
    stats = store(db, SyncPage(deleted=("m1", "never-seen")))
    assert stats.deleted == 1
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_leaving_the_roster_keeps_the_pairing_inactive(db: sessionmaker[Db]) -> None:
    store(db, SyncPage(records=(meeting("m1", "ana@x.org", "ben@x.org"),)))
    with db.begin() as session:
        roster.apply_roster(session, CONFIG, ROSTER[:1])
    with db() as session:
        active = dict(session.execute(select(Pairing.key, Pairing.active)).all())
    assert active == {"eng:ana@x.org:ben@x.org": True, "eng:cy@x.org:dee@x.org": False}


def _stored_roster(db: sessionmaker[Db]) -> tuple[object, ...]:
    with db() as session:
        return tuple(
            sorted(tuple(row) for row in session.execute(select(*table.__table__.columns)))
            for table in (Program, Person, Pairing)
        )


def test_a_roster_applied_again_changes_nothing_and_every_change_is_written(
    db: sessionmaker[Db],
) -> None:
    """Applying an unchanged roster is a read (every command does it); each kind of change
    after it still reaches the database, exactly as on a first apply."""
    with db.begin() as session:
        roster.apply_roster(session, CONFIG, ROSTER)
    first = _stored_roster(db)
    with db.begin() as session:
        roster.apply_roster(session, CONFIG, ROSTER)
    assert _stored_roster(db) == first
    named = MentorpulseConfig.model_validate(
        {"programs": [{"id": "eng", "name": "Engineering", "cadence": {"every": "14d"}}]}
    )
    changes: list[tuple[MentorpulseConfig, list[RosterPairing]]] = [
        (named, ROSTER),  # a program's name
        (CONFIG, [replace(ROSTER[0], mentor_name="Ana"), ROSTER[1]]),  # a person's name
        (CONFIG, [replace(ROSTER[0], mentee_timezone="Asia/Tokyo"), ROSTER[1]]),  # a zone
        (CONFIG, [replace(ROSTER[0], ended_on=date(2026, 12, 1)), ROSTER[1]]),  # an end
        (CONFIG, ROSTER[:1]),  # a pairing left
        (CONFIG, ROSTER),  # ... and came back
        (CONFIG, [*ROSTER, RosterPairing("eng", "ana@x.org", "eve@x.org", date(2026, 10, 1))]),
    ]
    for config, pairings in changes:
        with db.begin() as session:
            roster.apply_roster(session, config, pairings)
        written = _stored_roster(db)
        assert written != first, (config, pairings)
        first = written
    _programs, people, stored_pairings = written  # the name went back with CONFIG
    assert ("ana@x.org", "Ana") in {(p[1], p[2]) for p in people}
    assert ("ben@x.org", "Asia/Tokyo") in {(p[1], p[3]) for p in people}
    assert {p[1]: p[7] for p in stored_pairings} == {
        "eng:ana@x.org:ben@x.org": True,
        "eng:cy@x.org:dee@x.org": True,
        "eng:ana@x.org:eve@x.org": True,
    }


def test_second_holder_cannot_take_a_live_lease(db: sessionmaker[Db]) -> None:
    ttl = timedelta(seconds=90)
    assert lease.acquire(db, "daemon", "host:1", ttl=ttl, now=T0).acquired
    refused = lease.acquire(db, "daemon", "host:2", ttl=ttl, now=T0)
    assert (refused.acquired, refused.holder, refused.expires_at) == (False, "host:1", T0 + ttl)
    renewed = lease.acquire(db, "daemon", "host:1", ttl=ttl, now=T0 + ttl / 2)
    assert (renewed.acquired, renewed.expires_at) == (True, T0 + ttl / 2 + ttl), "renewal"
    expired = T0 + ttl / 2 + ttl + timedelta(seconds=1)
    assert lease.acquire(db, "daemon", "host:2", ttl=ttl, now=expired).acquired
    lease.release(db, "daemon", "host:2")
    assert lease.acquire(db, "daemon", "host:3", ttl=ttl, now=expired).acquired


def test_a_lease_reads_true_only_when_held(db: sessionmaker[Db]) -> None:
    """``if lease.acquire(...)`` means "we hold it": a refusal is falsy, whoever holds it."""
    ttl = timedelta(seconds=90)
    held = lease.acquire(db, "daemon", "host:1", ttl=ttl, now=T0)
    refused = lease.acquire(db, "daemon", "host:2", ttl=ttl, now=T0)
    assert held
    assert not refused
    assert refused.holder == "host:1"
    lease.release(db, "daemon", "host:2")  # not its holder: nothing released
    assert not lease.acquire(db, "daemon", "host:2", ttl=ttl, now=T0)


def test_a_grouped_page_replaces_each_of_its_scopes_by_its_own_records(
    db: sessionmaker[Db],
) -> None:
    """Objects grouped in one page: each scope keeps exactly its records; one emptied
    by the page loses what it held, and a scope the page does not name keeps its own."""
    store(db, SyncPage(records=(meeting("a1", "ana@x.org", "ben@x.org"),), replaces_scopes=("a",)))
    store(db, SyncPage(records=(meeting("c1", "ana@x.org", "ben@x.org"),), replaces_scopes=("c",)))
    grouped = SyncPage(
        records=(
            meeting("a2", "ana@x.org", "ben@x.org"),
            meeting("b1", "ana@x.org", "ben@x.org"),
            meeting("b2", "ana@x.org", "ben@x.org"),
        ),
        replaces_scopes=("a", "b", "gone"),
        scope_sizes=(1, 2, 0),
        errors=(ItemError("b: UID x", "no DTSTART"),),
        cursor={"token": "t2"},
    )
    stats = store(db, grouped)
    assert (stats.stored, stats.deleted) == (3, 1)
    with db() as session:
        rows = session.execute(select(Event.provider_id, Event.scope)).all()
        source = session.get_one(Source, "cal")
        assert source.cursor == {"token": "t2"}
        assert source.item_errors == [{"item": "b: UID x", "message": "no DTSTART"}]
    assert sorted(rows) == [("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]
    with pytest.raises(ValueError, match="scope_sizes"):
        SyncPage(records=grouped.records, replaces_scopes=("a", "b"))


def test_a_page_larger_than_one_batch_is_stored_updated_and_trimmed(
    db: sessionmaker[Db],
) -> None:
    """A calendar's first page can hold more rows than one IN list or batch takes."""
    many = [
        meeting(f"m{i}", "ana@x.org", "ben@x.org", T0 + timedelta(hours=i)) for i in range(6000)
    ]
    assert store(db, SyncPage(records=tuple(many), replaces_scopes=("a",))).stored == 6000
    again = store(db, SyncPage(records=tuple(many), replaces_scopes=("a",)))
    assert (again.stored, again.unchanged) == (0, 6000)

    moved = [replace(r, end=r.end + timedelta(minutes=15)) for r in many[:10]]
    trimmed = store(db, SyncPage(records=tuple(moved + many[10:3000]), replaces_scopes=("a",)))
    assert (trimmed.stored, trimmed.unchanged, trimmed.deleted) == (10, 2990, 3000)
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3000
        assert session.scalar(select(Event.end).where(Event.provider_id == "m0")) == (
            T0 + timedelta(hours=1, minutes=15)
        )

"""SQLAlchemy 2 typed models: the one schema, migrated by Alembic.

Times are stored as timezone-aware UTC (``UtcDateTime`` puts the zone back on SQLite,
which forgets it). Meeting titles are stored only when ``privacy.store_titles`` is on;
descriptions and bodies never are.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Program(Base):
    __tablename__ = "programs"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))


class Pairing(Base):
    __tablename__ = "pairings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(800), unique=True)  # program:mentor:mentee
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"))
    mentor_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    mentee_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    started_on: Mapped[date] = mapped_column(Date)
    ended_on: Mapped[date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # still in the roster
    # Set when one of its events changed: its sessions are rebuilt, then this is cleared.
    events_changed: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when one of its sessions changed: rules re-evaluate it, then this is cleared.
    sessions_changed: Mapped[bool] = mapped_column(Boolean, default=True)
    # When the rules' verdict on it could next change with no new data.
    next_deadline: Mapped[datetime | None]


class Source(Base):
    """A configured calendar source and its health: the aggregate of its shards'
    (:class:`SyncShard`) and calendars' (:class:`SyncCursor`), which hold its cursor."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    # Unused since the sync_shards migration moved it into SyncCursor and SyncShard rows.
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    roster_fingerprint: Mapped[str | None] = mapped_column(String(64))
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    events_dropped: Mapped[int] = mapped_column(Integer, default=0)  # not about a pair
    item_errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Consecutive failed syncs, and when to try again (backoff, or the provider's
    # Retry-After); both reset by a successful sync.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    # Set while a full resync (after an expired cursor) is under way: its half-read state
    # is not judged, and events it has not seen are removed only when it completes.
    resync_started_at: Mapped[datetime | None]
    # Deletions of most of this source's events, held back until a second sync confirms.
    held_deletions: Mapped[int | None] = mapped_column(Integer)
    # Credentials refused: not retried on a timer until the operator acts (`auth ...` or a
    # change of the source's config, whose digest at the refusal is kept to tell).
    needs_reauth_at: Mapped[datetime | None]
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))


class ResyncSeen(Base):
    """The staging area of a full resync: which events it has seen so far.

    Written with each page, so a resync interrupted by a crash resumes instead of
    starting again, and reconciliation knows what vanished while the cursor was stale.
    Per calendar (see :class:`SyncCursor`): one calendar's resync leaves the others be.
    """

    __tablename__ = "resync_seen"

    source_id: Mapped[str] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    provider_id: Mapped[str] = mapped_column(String(1000), primary_key=True)
    calendar: Mapped[str] = mapped_column(String(1000), default="", server_default="")


class SyncCursor(Base):
    """One calendar's sync state: its entry of the connector's cursor, its resync and its
    held deletions.

    ``calendar`` is the key of the connector's per-calendar entries (a Google user, a
    mailbox); ``""`` stands for the whole source where the connector has no such entries
    (ICS, CalDAV), whose cursor then lives whole in its one :class:`SyncShard`. A row per
    calendar, not per shard: shards of one source never write the same row, and a change
    of ``shard_size`` or of the calendars listed loses no entry.
    """

    __tablename__ = "sync_cursors"

    source_id: Mapped[str] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    calendar: Mapped[str] = mapped_column(String(1000), primary_key=True)
    entry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Set while a full resync of this calendar is under way (see Source.resync_started_at).
    resync_started_at: Mapped[datetime | None]
    # Deletions of most of this calendar's events, held until a second listing confirms.
    held_deletions: Mapped[int | None] = mapped_column(Integer)


class SyncShard(Base):
    """One shard of a source's sync (see stages/sync.py ``Shard``): its health, and the
    parts of the connector's cursor that are not per calendar (version, window stamps).

    The source's row carries the aggregate the rest of the program reads (``status``,
    staleness): unhealthy while any shard is."""

    __tablename__ = "sync_shards"

    source_id: Mapped[str] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[str] = mapped_column(String(120), primary_key=True)  # Shard.key
    # Unused since the sync_shards migration moved it into SyncCursor and SyncShard rows.
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    roster_fingerprint: Mapped[str | None] = mapped_column(String(64))
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]


class Event(Base):
    """One occurrence of a calendar event that involves a rostered pair."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source_id", "provider_id"),
        Index("ix_events_source_scope", "source_id", "scope"),
        Index("ix_events_source_calendar_owner", "source_id", "calendar_owner"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id"))
    provider_id: Mapped[str] = mapped_column(String(1000))
    scope: Mapped[str | None] = mapped_column(String(1000))
    ical_uid: Mapped[str] = mapped_column(String(1000))
    series_id: Mapped[str | None] = mapped_column(String(1000))
    original_start: Mapped[datetime | None]
    start: Mapped[datetime]
    end: Mapped[datetime]
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    zone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    organizer: Mapped[str | None] = mapped_column(String(320))
    attendees: Mapped[list[Any]] = mapped_column(JSON)  # [{email, response, optional}]
    calendar_owner: Mapped[str | None] = mapped_column(String(320))
    categories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    conference_id: Mapped[str | None] = mapped_column(String(1000))
    title: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime | None]
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    etag: Mapped[str | None] = mapped_column(String(200))
    # When the conference system was last asked who joined (attendance evidence).
    attendance_checked_at: Mapped[datetime | None]


class ConferenceAttendance(Base):
    """What a conference log (Meet, Teams) says about one person in one occurrence."""

    __tablename__ = "conference_attendance"
    __table_args__ = (UniqueConstraint("event_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    seconds_present: Mapped[int] = mapped_column(Integer)
    joined_at: Mapped[datetime | None]
    left_at: Mapped[datetime | None]
    system: Mapped[str] = mapped_column(String(40))


class EventPairing(Base):
    """Which pairings an event is a session of (decided at ingest by tracking.match)."""

    __tablename__ = "event_pairings"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    pairing_id: Mapped[int] = mapped_column(ForeignKey("pairings.id"), primary_key=True, index=True)


class MentoringSession(Base):
    """One meeting of a pairing: the mentor's and mentee's copies folded into one."""

    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("pairing_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pairing_id: Mapped[int] = mapped_column(ForeignKey("pairings.id"), index=True)
    key: Mapped[str] = mapped_column(String(1100))  # iCal UID + original start
    start: Mapped[datetime]
    end: Mapped[datetime]
    zone: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))
    confidence: Mapped[float] = mapped_column(Float)
    cancelled_by: Mapped[str | None] = mapped_column(String(320))
    cancelled_hours_before: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime]


class Evidence(Base):
    """Why a session has its outcome, strongest first (``rank`` 0 decided it)."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    party: Mapped[str | None] = mapped_column(String(320))
    detail: Mapped[str] = mapped_column(Text)


class AttendanceAnswer(Base):
    """A party's answer to an attendance check (the latest one; answering again replaces
    it until the question closes)."""

    __tablename__ = "attendance_answers"
    __table_args__ = (UniqueConstraint("session_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    happened: Mapped[bool] = mapped_column(Boolean)
    answered_at: Mapped[datetime]
    first_answered_at: Mapped[datetime]


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    rule_id: Mapped[str] = mapped_column(String(200))
    pairing_id: Mapped[int | None] = mapped_column(ForeignKey("pairings.id"), index=True)
    severity: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))  # pending, firing, resolved, suppressed
    since: Mapped[datetime]  # when the condition started to hold
    firing_since: Mapped[datetime | None]
    until: Mapped[datetime | None]  # when it resolved
    last_evaluated_at: Mapped[datetime]
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    # The silence covering it at the last evaluation: it keeps its state, nobody is told.
    silence_id: Mapped[int | None] = mapped_column(ForeignKey("silences.id"), index=True)


class OutboxMessage(Base):
    """A notification to send, written with the decision to send it (exactly one row)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(400), unique=True)
    recipient: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending, sending, sent, failed, unknown (an at-most-once claim that expired), digest
    # (waiting to be folded into one email per recipient), digested (folded: see digest_key),
    # cancelled (its finding stopped notifying before it went out)
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    message_id: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # The finding episode it is about (fingerprint:firing_since): who was told, for
    # "resolved" notices.
    finding_key: Mapped[str | None] = mapped_column(String(300), index=True)
    # For a digested row, the idempotency key of the digest email that carried it.
    digest_key: Mapped[str | None] = mapped_column(String(400), index=True)
    # Never sent twice, at the price of maybe never (reports to HR): an expired claim
    # becomes "unknown" instead of being sent again.
    at_most_once: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Lease(Base):
    """A named lease held by one worker until ``expires_at`` (the daemon lock, later jobs)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class JobRun(Base):
    """When each stage last ran (so a restart neither repeats nor skips), whether that run
    failed, and its last success and last error (so ``status`` shows a failing stage)."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_run_at: Mapped[datetime]
    last_success_at: Mapped[datetime | None]
    # The last run raised: set with last_error, cleared by the next success.
    failing: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_error: Mapped[str | None] = mapped_column(Text)  # kept after a success, for history
    last_error_at: Mapped[datetime | None]


class Silence(Base):
    """An admin's "do not notify" for a pairing or a whole program, for a while."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_id: Mapped[str | None] = mapped_column(String(100))  # every pairing of it
    mentor_email: Mapped[str | None] = mapped_column(String(320))  # with mentee: one pair
    mentee_email: Mapped[str | None] = mapped_column(String(320))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]


class SigningKey(Base):
    """A key the house signs links and sessions with (:mod:`mentorpulse.storage.keys`)."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class SignInLink(Base):
    """A dashboard sign-in link that was sent: its nonce, for whom, and when it was used
    (a link signs in once; a second use is refused)."""

    __tablename__ = "sign_in_links"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class DashboardSession(Base):
    """A dashboard session signed in by magic link: the signed cookie names it, and it
    counts only while its row is here, so signing out ends it for every copy of the
    cookie. The session id is kept as its SHA-256 (a database reader cannot replay it)."""

    __tablename__ = "dashboard_sessions"

    sid_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)

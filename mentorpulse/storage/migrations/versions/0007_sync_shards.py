"""sync shards: cursor entries, resyncs and held deletions per calendar; health per shard

Revision ID: sync_shards
Revises: source_reauth

Existing cursors move into the new tables: a Google cursor's ``calendars`` and a Graph or
EWS cursor's ``mailboxes`` become one ``sync_cursors`` row each, the rest of the cursor
(version, window stamps) the source's first shard's; the cursor of any other kind stays
whole in that shard. A resync or held deletion under way on a source with calendars
starts over per calendar (nothing was deleted yet, so nothing is lost).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import mentorpulse.storage.models

revision = "sync_shards"
down_revision = "source_reauth"
branch_labels = None
depends_on = None

# The key of the per-calendar entries in each kind's cursor (as stages/sync.py reads it).
_ENTRIES = {"google": "calendars", "microsoft": "mailboxes", "exchange": "mailboxes"}


def upgrade() -> None:
    op.create_table(
        "sync_cursors",
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("calendar", sa.String(length=1000), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=True),
        sa.Column(
            "resync_started_at",
            mentorpulse.storage.models.UtcDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("held_deletions", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_sync_cursors_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", "calendar", name=op.f("pk_sync_cursors")),
    )
    op.create_table(
        "sync_shards",
        sa.Column("source_id", sa.String(length=100), nullable=False),
        sa.Column("shard", sa.String(length=120), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=True),
        sa.Column("roster_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_attempt_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_success_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_sync_shards_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", "shard", name=op.f("pk_sync_shards")),
    )
    with op.batch_alter_table("resync_seen") as batch:
        batch.add_column(
            sa.Column("calendar", sa.String(length=1000), server_default="", nullable=False)
        )
    with op.batch_alter_table("events") as batch:
        batch.create_index(
            "ix_events_source_calendar_owner", ["source_id", "calendar_owner"], unique=False
        )
    _move_cursors()


def _move_cursors() -> None:
    """Today's ``sources.cursor`` into the per-calendar rows and the first shard's row."""
    bind = op.get_bind()
    meta = sa.MetaData()
    sources = sa.Table("sources", meta, autoload_with=bind)
    cursors = sa.Table("sync_cursors", meta, autoload_with=bind)
    shards = sa.Table("sync_shards", meta, autoload_with=bind)
    seen = sa.Table("resync_seen", meta, autoload_with=bind)
    for row in bind.execute(sa.select(sources)).mappings().all():
        cursor: dict[str, Any] = dict(row["cursor"] or {})
        resyncing, held = row["resync_started_at"], row["held_deletions"]
        key = _ENTRIES.get(row["kind"])
        entries = cursor.pop(key, None) if key else None
        rows: list[dict[str, Any]] = []
        if key is None:
            rows.append({"calendar": "", "entry": None, "resync_started_at": resyncing})
            rows[0]["held_deletions"] = held
        elif isinstance(entries, dict):
            for calendar, entry in entries.items():
                rows.append(
                    {
                        "calendar": str(calendar),
                        # a resync under way starts over for each calendar
                        "entry": None if resyncing else entry,
                        "resync_started_at": resyncing,
                        "held_deletions": 0 if held is not None else None,
                    }
                )
            if resyncing is not None:
                bind.execute(sa.delete(seen).where(seen.c.source_id == row["id"]))
        if rows:
            bind.execute(sa.insert(cursors), [{"source_id": row["id"], **r} for r in rows])
        bind.execute(
            sa.insert(shards).values(
                source_id=row["id"],
                shard=f"{row['id']}#0",
                cursor=(cursor or None) if not (key and resyncing) else None,
                roster_fingerprint=row["roster_fingerprint"],
                healthy=bool(row["healthy"]),
                last_error=row["last_error"],
                failures=row["failures"] or 0,
                next_attempt_at=row["next_attempt_at"],
                last_attempt_at=row["last_attempt_at"],
                last_success_at=row["last_success_at"],
            )
        )
    bind.execute(sa.update(sources).values(cursor=None))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_source_calendar_owner")
    with op.batch_alter_table("resync_seen") as batch:
        batch.drop_column("calendar")
    op.drop_table("sync_shards")
    op.drop_table("sync_cursors")

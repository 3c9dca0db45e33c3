"""rules: silences, and the silence covering each finding

Revision ID: rules
Revises: notify
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mentorpulse.storage.models

revision = "rules"
down_revision = "notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.String(length=100), nullable=True),
        sa.Column("mentor_email", sa.String(length=320), nullable=True),
        sa.Column("mentee_email", sa.String(length=320), nullable=True),
        sa.Column(
            "starts_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("ends_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=True),
        sa.Column(
            "created_at", mentorpulse.storage.models.UtcDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_silences")),
    )
    # batch mode: SQLite cannot add a foreign key with ALTER TABLE.
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("silence_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_findings_silence_id"), ["silence_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_findings_silence_id_silences"), "silences", ["silence_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_constraint(batch.f("fk_findings_silence_id_silences"), type_="foreignkey")
        batch.drop_index(batch.f("ix_findings_silence_id"))
        batch.drop_column("silence_id")
    op.drop_table("silences")

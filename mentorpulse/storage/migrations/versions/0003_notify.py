"""notify: outbox rows know their finding episode, their digest, at-most-once delivery

Revision ID: notify
Revises: sync
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "notify"
down_revision = "sync"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("finding_key", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("digest_key", sa.String(length=400), nullable=True))
        batch.add_column(
            sa.Column("at_most_once", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index(batch.f("ix_outbox_digest_key"), ["digest_key"], unique=False)
        batch.create_index(batch.f("ix_outbox_finding_key"), ["finding_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index(batch.f("ix_outbox_finding_key"))
        batch.drop_index(batch.f("ix_outbox_digest_key"))
        batch.drop_column("at_most_once")
        batch.drop_column("digest_key")
        batch.drop_column("finding_key")

"""sources: refused credentials stop a source until the operator acts

Revision ID: source_reauth
Revises: job_run_errors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mentorpulse.storage.models

revision = "source_reauth"
down_revision = "job_run_errors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(
            sa.Column(
                "needs_reauth_at",
                mentorpulse.storage.models.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("config_fingerprint", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.drop_column("config_fingerprint")
        batch.drop_column("needs_reauth_at")

"""job runs: last success, last error and whether the last run failed

Revision ID: job_run_errors
Revises: rules
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mentorpulse.storage.models

revision = "job_run_errors"
down_revision = "rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(
            sa.Column(
                "last_success_at",
                mentorpulse.storage.models.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
        batch.add_column(
            sa.Column("failing", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "last_error_at",
                mentorpulse.storage.models.UtcDateTime(timezone=True),
                nullable=True,
            )
        )
    # Until now a row was written only when its job completed.
    op.execute("UPDATE job_runs SET last_success_at = last_run_at")


def downgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("last_error_at")
        batch.drop_column("last_error")
        batch.drop_column("failing")
        batch.drop_column("last_success_at")

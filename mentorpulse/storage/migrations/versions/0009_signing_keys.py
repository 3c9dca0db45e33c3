"""signing keys: the house's key material for signed links and dashboard sessions

Revision ID: signing_keys
Revises: procrastinate
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mentorpulse.storage.models import UtcDateTime

revision = "signing_keys"
down_revision = "procrastinate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")

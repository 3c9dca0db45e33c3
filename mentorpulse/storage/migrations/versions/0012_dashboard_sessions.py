"""dashboard sessions: each signed-in dashboard session, so signing out ends it

Revision ID: dashboard_sessions
Revises: attendance_answers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mentorpulse.storage.models import UtcDateTime

revision = "dashboard_sessions"
down_revision = "attendance_answers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("sid_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid_hash", name=op.f("pk_dashboard_sessions")),
    )
    op.create_index(op.f("ix_dashboard_sessions_email"), "dashboard_sessions", ["email"])
    op.create_index(op.f("ix_dashboard_sessions_expires_at"), "dashboard_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dashboard_sessions")

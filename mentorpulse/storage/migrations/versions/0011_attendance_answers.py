"""attendance answers: each party's own yes/no to "did this session take place?"

Revision ID: attendance_answers
Revises: sign_in_links
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mentorpulse.storage.models import UtcDateTime

revision = "attendance_answers"
down_revision = "sign_in_links"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attendance_answers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "session_id",
            sa.Integer(),
            sa.ForeignKey(
                "sessions.id",
                ondelete="CASCADE",
                name="fk_attendance_answers_session_id_sessions",
            ),
            nullable=False,
        ),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("happened", sa.Boolean(), nullable=False),
        sa.Column("answered_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("first_answered_at", UtcDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("session_id", "email", name="uq_attendance_answers_session_id"),
    )
    op.create_index("ix_attendance_answers_session_id", "attendance_answers", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_attendance_answers_session_id", table_name="attendance_answers")
    op.drop_table("attendance_answers")

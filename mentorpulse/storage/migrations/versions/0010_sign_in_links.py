"""sign-in links: the nonce of each dashboard sign-in link sent, and when it was used

Revision ID: sign_in_links
Revises: signing_keys
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mentorpulse.storage.models import UtcDateTime

revision = "sign_in_links"
down_revision = "signing_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_links",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_sign_in_links")),
    )
    op.create_index(op.f("ix_sign_in_links_email"), "sign_in_links", ["email"])
    op.create_index(op.f("ix_sign_in_links_created_at"), "sign_in_links", ["created_at"])


def downgrade() -> None:
    op.drop_table("sign_in_links")

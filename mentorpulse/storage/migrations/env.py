"""Alembic environment: runs on the connection handed over by ``storage.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mentorpulse.storage.migrate import ours
from mentorpulse.storage.models import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI during development
    raise RuntimeError("run migrations through `mentorpulse db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=ours,
)
with context.begin_transaction():
    context.run_migrations()

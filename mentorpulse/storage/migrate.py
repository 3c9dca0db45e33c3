"""Schema migrations with Alembic, run from inside the package (no alembic.ini to ship)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine

from mentorpulse.errors import UserError
from mentorpulse.storage.locks import exclusive

MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``; a no-op when it is already there.

    Processes starting together migrate one after the other: the second finds the
    schema already at ``revision`` instead of creating it a second time. A database
    already at the newest revision is only read (no lock, no wait behind a writer).
    """
    if revision == "head":
        current, head = revision_state(engine)
        if current == head:
            return
    config = _config()
    with engine.begin() as connection:
        exclusive(connection, "migrate")
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        except CommandError as error:
            if "Can't locate revision" not in str(error):
                raise
            current = MigrationContext.configure(connection).get_current_revision()
            raise UserError(
                f"database {engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current}, which this mentorpulse does not know: a newer version "
                "migrated it; run that version (or a newer one), or point `database` "
                "elsewhere",
                code=2,
            ) from None


def revision_state(engine: Engine) -> tuple[str | None, str | None]:
    """(current revision of the database, newest revision we ship)."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head


def autogenerate(engine: Engine, message: str) -> None:
    """Write a new migration from the models (developers only)."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)

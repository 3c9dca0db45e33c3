"""The schema revision is read without Alembic, so both sides of that shortcut are checked
against Alembic itself: the head we ship and the revision a database is at."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.migrate import (
    HEAD_REVISION,
    _config,
    current_revision,
    revision_state,
    upgrade,
)


def test_head_revision_is_the_newest_migration() -> None:
    """A new migration in migrations/versions must update HEAD_REVISION with it, or every
    command would think the database behind (or, worse, up to date)."""
    assert ScriptDirectory.from_config(_config()).get_current_head() == HEAD_REVISION


def test_revision_is_read_as_alembic_reads_it(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert revision_state(engine) == (None, HEAD_REVISION)  # no schema yet
        upgrade(engine, "sync")  # an older revision: behind, so Alembic runs
        with engine.connect() as connection:
            assert current_revision(connection) == "sync"
            assert MigrationContext.configure(connection).get_current_revision() == "sync"
        upgrade(engine)
        with engine.connect() as connection:
            alembic_says = MigrationContext.configure(connection).get_current_revision()
        assert revision_state(engine) == (alembic_says, HEAD_REVISION)
    finally:
        engine.dispose()

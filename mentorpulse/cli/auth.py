"""`mentorpulse auth`: sign-ins for small setups whose tokens are kept encrypted at rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import typer

from mentorpulse.cli.common import err, out
from mentorpulse.credentials import KEY_ENV, generate_key

if TYPE_CHECKING:
    from mentorpulse.config.schema import MentorpulseConfig

log = structlog.get_logger(__name__)

auth_app = typer.Typer(
    help="Sign in to calendar providers without a service account (tokens stored encrypted).",
    no_args_is_help=True,
)


@auth_app.command("key")
def key() -> None:
    """Print a new random key for $MENTORPULSE_SECRET_KEY (on stdout alone, for scripts)."""
    out.print(generate_key(), highlight=False)
    err.print(
        f"export {KEY_ENV}=<the key above>; keep it outside the config and the database",
        highlight=False,
        soft_wrap=True,
    )


def signed_in(loaded: MentorpulseConfig, source_id: str) -> str:
    """A sign-in that succeeded answers refused credentials: the source stops waiting as
    needs_reauth and the daemon's next poll tries it. Returns a line for the operator."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session as Db

    from mentorpulse.config.schema import sqlite_path
    from mentorpulse.errors import DatabaseUnavailable
    from mentorpulse.storage import sources
    from mentorpulse.storage.engine import make_engine
    from mentorpulse.storage.migrate import revision_state

    file = sqlite_path(loaded.database, loaded.base_dir)
    if file is not None and not file.is_file():
        return ""  # no database yet: nothing waits, and a sign-in creates none
    engine = make_engine(loaded.database, loaded.base_dir)
    try:
        current, head = revision_state(engine)
        if current is None or current != head:
            return ""  # an older schema cannot hold the mark; `db upgrade` comes first
        with Db(engine) as db, db.begin():
            cleared = sources.clear_needs_reauth(db, source_id)
    except (SQLAlchemyError, DatabaseUnavailable) as exc:  # the token is stored all the same
        log.warning("source_reauth_not_cleared", source=source_id, error=type(exc).__name__)
        return (
            f"the database could not be reached to clear source {source_id}'s needs_reauth; "
            f"run `mentorpulse sync --once --source {source_id}`"
        )
    finally:
        engine.dispose()
    if not cleared:
        return ""
    log.info("source_reauth_cleared", source=source_id, reason="signed_in")
    return f"source {source_id} no longer needs_reauth: the daemon syncs it at its next poll"

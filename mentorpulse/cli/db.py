"""`mentorpulse db`: the database schema."""

from __future__ import annotations

import typer

from mentorpulse.cli.common import (
    ConfigOption,
    out,
    user_errors,
)

db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the database schema to this version of mentorpulse."""
    from mentorpulse.config.loader import config_path, load_config
    from mentorpulse.storage.engine import make_engine, safe_url
    from mentorpulse.storage.migrate import revision_state, upgrade

    with user_errors():
        loaded = load_config(config_path(config))
        engine = make_engine(loaded.database, loaded.state_dir)
        upgrade(engine)
        current, _head = revision_state(engine)
    out.print(f"{safe_url(str(engine.url))}: schema at revision {current}", highlight=False)

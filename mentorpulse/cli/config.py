"""`mentorpulse config`: check the configuration, export its JSON Schema."""

from __future__ import annotations

import json
import sys

import typer

from mentorpulse.cli.common import (
    ConfigOption,
    out,
    user_errors,
)

config_app = typer.Typer(help="Check and describe the configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate mentorpulse.yaml and the roster, and open the database; print every
    problem with file:line."""
    from mentorpulse.config.loader import check_source_paths, config_path, load_config
    from mentorpulse.config.roster import load_roster
    from mentorpulse.config.schema import sqlite_path
    from mentorpulse.rules.check import check_selectors
    from mentorpulse.storage.engine import check_connection
    from mentorpulse.storage.migrate import open_read_only

    with user_errors():
        path = config_path(config)
        loaded = load_config(path)
        roster = load_roster(loaded.resolve(loaded.roster.path), loaded)
        check_selectors(loaded, roster, path)
        check_source_paths(loaded, path)
    out.print(
        f"{path}: ok — {len(loaded.programs)} programs, {len(loaded.sources)} sources, "
        f"{len(roster)} pairings",
        highlight=False,
    )
    with user_errors():
        database = check_connection(loaded.database, loaded.state_dir)
        existing = sqlite_path(loaded.database, loaded.state_dir)
        if existing is None or existing.exists():  # its schema: not behind, not migrated
            open_read_only(loaded.database, loaded.state_dir, empty_ok=True).dispose()
    out.print(f"database: {database}", highlight=False, markup=False, soft_wrap=True)


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of mentorpulse.yaml (for editor autocompletion)."""
    from mentorpulse.config.loader import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")

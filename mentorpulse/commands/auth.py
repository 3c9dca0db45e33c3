"""`mentorpulse auth`: sign-ins for small setups whose tokens are kept encrypted at rest."""

from __future__ import annotations

import typer

from mentorpulse.commands.common import err, out
from mentorpulse.credentials import KEY_ENV, generate_key

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

"""`mentorpulse auth microsoft`: a device-code sign-in for a `kind: microsoft` source."""

from __future__ import annotations

from typing import Annotated

import typer

from mentorpulse.cli.common import ConfigOption, err, out, user_errors
from mentorpulse.errors import UserError


def auth_microsoft(
    source: Annotated[
        str, typer.Option("--source", "-s", help="Id of the microsoft source to sign in for.")
    ],
    config: ConfigOption = None,
) -> None:
    """Sign in to Microsoft 365 with a device code; the refresh token is stored encrypted.

    For small setups without an app-only registration (`auth: device_code`). Needs
    $MENTORPULSE_SECRET_KEY (see `mentorpulse auth key`).
    """
    from mentorpulse.cli.auth import signed_in
    from mentorpulse.config.loader import config_path, load_config
    from mentorpulse.config.schema import MicrosoftSource
    from mentorpulse.connectors.microsoft import device_code_sign_in

    with user_errors():
        loaded = load_config(config_path(config))
        found = next((s for s in loaded.sources if s.id == source), None)
        if not isinstance(found, MicrosoftSource):
            known = ", ".join(s.id for s in loaded.sources if isinstance(s, MicrosoftSource))
            raise UserError(
                f"no microsoft source {source!r} in the config (microsoft sources: "
                f"{known or 'none'})"
            )
        if found.auth != "device_code":
            raise UserError(
                f"source {source!r} uses auth: {found.auth}; a device-code sign-in is for "
                "auth: device_code"
            )
        path = device_code_sign_in(
            found,
            base_dir=loaded.base_dir,
            show=lambda message: err.print(message, markup=False, highlight=False),
        )
        cleared = signed_in(loaded, source)
    out.print(f"signed in; the refresh token is stored encrypted in {path}", highlight=False)
    if cleared:
        out.print(cleared, highlight=False, markup=False)

"""`mentorpulse auth google`: the installed-app sign-in for setups without a service account.

The person signing in consents to the read-only scopes of the source in their browser; the
refresh token Google returns is stored encrypted (see :mod:`mentorpulse.credentials`) and
the google connector reads it from there. Nothing secret is printed or logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from mentorpulse.cli.common import ConfigOption, out, user_errors
from mentorpulse.errors import UserError

if TYPE_CHECKING:
    from mentorpulse.config.schema import GoogleSource, MentorpulseConfig

log = structlog.get_logger(__name__)


def google(
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="The id of the google source (default: the only one)."),
    ] = None,
    config: ConfigOption = None,
    port: Annotated[
        int, typer.Option(help="Loopback port Google redirects back to (0: any free port).")
    ] = 0,
    open_browser: Annotated[
        bool,
        typer.Option(
            "--open-browser/--no-browser",
            help="Open the consent page in a browser (else print its address to open).",
        ),
    ] = True,
    browser: Annotated[
        str | None,
        typer.Option(help="Which browser to open, as Python's webbrowser module names it."),
    ] = None,
) -> None:
    """Sign in to Google once; the refresh token is kept encrypted for the google source."""
    from mentorpulse.cli.auth import signed_in
    from mentorpulse.config.loader import config_path, load_config

    with user_errors():
        store_path, source_id = sign_in(
            config, source, port=port, open_browser=open_browser, browser=browser
        )
        cleared = signed_in(load_config(config_path(config)), source_id)
    out.print(f"signed in; the token is stored encrypted in {store_path}", highlight=False)
    if cleared:
        out.print(cleared, highlight=False, markup=False)


def sign_in(
    config: Path | None,
    source_id: str | None,
    *,
    port: int = 0,
    open_browser: bool = True,
    browser: str | None = None,
) -> tuple[Path, str]:
    """Run the consent flow for one google source; returns where the token was stored and
    the source's id."""
    from mentorpulse.config.loader import config_path, load_config
    from mentorpulse.connectors.google import TOKEN_NAME, oauth_client_info
    from mentorpulse.credentials import TokenStore, require_key

    path = config_path(config)
    loaded = load_config(path)
    chosen = _chosen(loaded, path, source_id)
    client_file = loaded.resolve(chosen.oauth_client or "")
    oauth_client_info(client_file)  # a clear error for a wrong file before the browser opens
    require_key()  # before the browser opens, not after the person consented
    store = TokenStore(loaded.resolve(chosen.token_store))
    store.load(TOKEN_NAME.format(source_id=chosen.id))  # the key fits the store
    refresh = _consent(chosen, client_file, port=port, open_browser=open_browser, browser=browser)
    store.save(TOKEN_NAME.format(source_id=chosen.id), refresh)
    log.info("google_signed_in", source=chosen.id, store=str(store.path))
    return store.path, chosen.id


def _chosen(loaded: MentorpulseConfig, path: Path, source_id: str | None) -> GoogleSource:
    """The google source to sign in for: the one named, or the only one."""
    from mentorpulse.config.schema import GoogleSource

    candidates = [
        s
        for s in loaded.sources
        if isinstance(s, GoogleSource) and (source_id is None or s.id == source_id)
    ]
    if not candidates:
        raise UserError(f"{path}: no google source {source_id or ''}".rstrip())
    if len(candidates) > 1:
        names = ", ".join(s.id for s in candidates)
        raise UserError(f"{path}: several google sources ({names}); choose one with --source")
    chosen = candidates[0]
    if chosen.oauth_client is None:
        raise UserError(
            f"source {chosen.id}: uses a service account; only sources with oauth_client "
            "sign in interactively"
        )
    return chosen


def _consent(
    chosen: GoogleSource, client_file: Path, *, port: int, open_browser: bool, browser: str | None
) -> str:
    """The refresh token of a consent given in the browser."""
    from google_auth_oauthlib.flow import InstalledAppFlow

    from mentorpulse.connectors.google import scopes_for

    flow = InstalledAppFlow.from_client_secrets_file(str(client_file), scopes=scopes_for(chosen))
    try:
        credentials = flow.run_local_server(
            host="localhost",
            port=port,
            open_browser=open_browser,
            browser=browser,
            authorization_prompt_message="Open this address to sign in to Google: {url}",
            success_message="mentorpulse is signed in; you may close this window.",
            access_type="offline",
            prompt="consent",
        )
    except Exception as exc:  # the flow's errors quote the request: name only their kind
        raise UserError(f"source {chosen.id}: the sign-in failed ({type(exc).__name__})") from None
    refresh = getattr(credentials, "refresh_token", None)
    if not refresh:
        raise UserError(
            f"source {chosen.id}: Google returned no refresh token; remove mentorpulse's "
            "access in your Google account's third-party connections and sign in again"
        )
    return str(refresh)

"""`mentorpulse auth`: sign-ins for small setups, whose tokens are kept encrypted at rest.

`auth google` is the installed-app sign-in for setups without a service account: the
person consents to the source's read-only scopes in their browser. `auth microsoft` is a
device-code sign-in for a `kind: microsoft` source; the connectors only read the refresh
tokens stored here (see :mod:`mentorpulse.credentials`). Nothing secret is printed or logged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from mentorpulse.cli.common import ConfigOption, err, out, user_errors
from mentorpulse.credentials import KEY_ENV, generate_key
from mentorpulse.errors import UserError

if TYPE_CHECKING:
    from mentorpulse.config.schema import GoogleSource, MentorpulseConfig, MicrosoftSource

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

    file = sqlite_path(loaded.database, loaded.state_dir)
    if file is not None and not file.is_file():
        return ""  # no database yet: nothing waits, and a sign-in creates none
    engine = make_engine(loaded.database, loaded.state_dir)
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


# ---------------------------------------------------------------- google


@auth_app.command("google")
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
    chosen = _google_source(loaded, path, source_id)
    client_file = loaded.resolve(chosen.oauth_client or "")
    oauth_client_info(client_file)  # a clear error for a wrong file before the browser opens
    require_key()  # before the browser opens, not after the person consented
    store = TokenStore(loaded.resolve_state(chosen.token_store))
    store.load(TOKEN_NAME.format(source_id=chosen.id))  # the key fits the store
    refresh = _consent(chosen, client_file, port=port, open_browser=open_browser, browser=browser)
    store.save(TOKEN_NAME.format(source_id=chosen.id), refresh)
    log.info("google_signed_in", source=chosen.id, store=str(store.path))
    return store.path, chosen.id


def _google_source(loaded: MentorpulseConfig, path: Path, source_id: str | None) -> GoogleSource:
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


# ---------------------------------------------------------------- microsoft


@auth_app.command("microsoft")
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
    from mentorpulse.config.loader import config_path, load_config

    with user_errors():
        loaded = load_config(config_path(config))
        found = _device_code_source(loaded, source)
        path = device_code_sign_in(
            loaded.with_state_paths(found),
            base_dir=loaded.base_dir,
            show=lambda message: err.print(message, markup=False, highlight=False),
        )
        cleared = signed_in(loaded, source)
    out.print(f"signed in; the refresh token is stored encrypted in {path}", highlight=False)
    if cleared:
        out.print(cleared, highlight=False, markup=False)


def _device_code_source(loaded: MentorpulseConfig, source_id: str) -> MicrosoftSource:
    from mentorpulse.config.schema import MicrosoftSource

    found = next((s for s in loaded.sources if s.id == source_id), None)
    if not isinstance(found, MicrosoftSource):
        known = ", ".join(s.id for s in loaded.sources if isinstance(s, MicrosoftSource))
        raise UserError(
            f"no microsoft source {source_id!r} in the config (microsoft sources: "
            f"{known or 'none'})"
        )
    if found.auth != "device_code":
        raise UserError(
            f"source {source_id!r} uses auth: {found.auth}; a device-code sign-in is for "
            "auth: device_code"
        )
    return found


def device_code_sign_in(
    source: MicrosoftSource, *, base_dir: Path, show: Callable[[str], None]
) -> str:
    """Sign a user in with a device code and store their refresh token, encrypted.

    ``show`` gets the instruction to open the verification page and enter the code.
    Returns the path of the token store. Failures are :class:`UserError` (one line).
    """
    from mentorpulse.config.schema import resolve_path
    from mentorpulse.connectors.microsoft.auth import token_name
    from mentorpulse.credentials import TokenStore, require_key

    require_key()
    refresh = _device_flow(source, base_dir, show)
    store = TokenStore(resolve_path(base_dir, source.token_store))
    store.save(token_name(source), refresh)
    log.info("graph_signed_in", source=source.id, token_store=str(store.path))
    return str(store.path)


def _device_flow(source: MicrosoftSource, base_dir: Path, show: Callable[[str], None]) -> str:
    """The refresh token of a completed device-code flow."""
    import msal
    import requests

    from mentorpulse.connectors.microsoft.auth import authority, delegated_scopes, verify_for

    verify = verify_for(source, base_dir)
    try:
        app = msal.PublicClientApplication(
            source.client_id,
            authority=authority(source),
            instance_discovery=False,
            verify=verify,
            http_client=_pinned_session(verify) if isinstance(verify, str) else None,
        )
        flow = app.initiate_device_flow(scopes=delegated_scopes(source))
        if "user_code" not in flow:
            raise UserError(
                f"source {source.id}: Microsoft refused the device-code sign-in: "
                f"{flow.get('error', 'unknown error')} (is 'Allow public client flows' on "
                "for the app registration?)"
            )
        show(str(flow["message"]))
        result = app.acquire_token_by_device_flow(flow)
    except requests.RequestException as error:
        raise UserError(
            f"source {source.id}: cannot reach {source.authority_host} ({type(error).__name__})"
        ) from None
    except ValueError as error:
        raise UserError(f"source {source.id}: sign-in failed ({type(error).__name__})") from None
    refresh = result.get("refresh_token") if isinstance(result, dict) else None
    if not refresh:
        raise UserError(
            f"source {source.id}: sign-in did not complete: {result.get('error', 'no token')}"
        )
    return str(refresh)


def _pinned_session(ca_bundle: str) -> Any:
    """A requests session that keeps ``ca_bundle`` even when $REQUESTS_CA_BUNDLE is set.

    requests lets the environment override a session's ``verify`` (psf/requests#3829),
    which would silently ignore the configured ``ca_bundle`` for sign-in.
    """
    import requests

    class PinnedSession(requests.Session):
        def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
            settings["verify"] = self.verify
            return settings

    session = PinnedSession()
    session.verify = ca_bundle
    return session

"""`mentorpulse auth microsoft`: a device-code sign-in for a `kind: microsoft` source.

The interactive flow lives here, with the other sign-ins a person runs; the connector
(mentorpulse/connectors/microsoft/auth.py) only reads the refresh token it stores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from mentorpulse.cli.common import ConfigOption, err, out, user_errors
from mentorpulse.errors import UserError

if TYPE_CHECKING:
    from mentorpulse.config.schema import MentorpulseConfig, MicrosoftSource

log = structlog.get_logger(__name__)


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

    with user_errors():
        loaded = load_config(config_path(config))
        found = _device_code_source(loaded, source)
        path = device_code_sign_in(
            found,
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

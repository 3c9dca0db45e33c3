"""Microsoft sign-in with msal: client credentials (a secret or a certificate) for app-only
access, or the refresh token that `mentorpulse auth microsoft` stored encrypted. The
interactive device-code flow itself is the CLI's (mentorpulse/cli/auth_microsoft.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import structlog

from mentorpulse.config.schema import MicrosoftSource, resolve_path
from mentorpulse.connectors.base import AuthError, TransientError, signed_in_token
from mentorpulse.connectors.http import BoundedClient, FetchError, FetchTimeout

log = structlog.get_logger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def delegated_scopes(source: MicrosoftSource) -> list[str]:
    """Least privilege for a signed-in user: their calendar (and shared ones they can read)."""
    scopes = ["Calendars.Read", "Calendars.Read.Shared"]
    if source.attendance:
        scopes += ["OnlineMeetings.Read", "OnlineMeetingArtifact.Read.All"]
    return scopes


def token_name(source: MicrosoftSource) -> str:
    """The name the device-code sign-in's refresh token is stored under."""
    return f"microsoft:{source.id}:{source.tenant_id}:{source.client_id}"


def verify_for(source: MicrosoftSource, base_dir: Path) -> str | bool:
    """What TLS verification trusts: the configured CA bundle, else the system's."""
    return str(resolve_path(base_dir, source.ca_bundle)) if source.ca_bundle is not None else True


def authority(source: MicrosoftSource) -> str:
    return f"{source.authority_host.rstrip('/')}/{source.tenant_id}"


class GraphSignIn:
    """Access tokens for Graph, renewed five minutes before they expire."""

    def __init__(self, source: MicrosoftSource, *, base_dir: Path, timeout: float) -> None:
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.verify = verify_for(source, base_dir)
        self._timeout = timeout
        self._token: str | None = None
        self._token_expires = 0.0
        self._app: Any = None

    def _path(self, value: str) -> Path:
        return resolve_path(self.base_dir, value)

    def _msal_app(self) -> Any:
        import msal

        common: dict[str, Any] = {
            "authority": authority(self.source),
            "instance_discovery": False,
            "verify": self.verify,
            "timeout": self._timeout,
            # Sign-in requests get the bounds Graph requests get (msal's timeout is per read).
            "http_client": _BoundedSignIn(
                BoundedClient(self.source.authority_host, timeout=self._timeout, verify=self.verify)
            ),
        }
        if self.source.auth == "device_code":
            return msal.PublicClientApplication(self.source.client_id, **common)
        return msal.ConfidentialClientApplication(
            self.source.client_id, client_credential=self._credential(), **common
        )

    def _credential(self) -> Any:
        if self.source.client_secret is not None:
            return self.source.client_secret.get_secret_value()
        assert self.source.certificate_path is not None  # the schema demands one
        try:
            key = self._path(self.source.certificate_path).read_text(encoding="utf-8")
        except OSError as error:
            raise AuthError(
                self.source_id,
                f"cannot read certificate_path {self.source.certificate_path} ({error.strerror})",
            ) from None
        return {"private_key": key, "thumbprint": self.source.certificate_thumbprint}

    def access_token(self) -> str:
        """A valid access token; refused credentials are an :class:`AuthError`."""
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        import requests

        try:
            if self._app is None:
                self._app = self._msal_app()
            if self.source.auth == "device_code":
                result = self._delegated_token()
            else:
                result = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except requests.RequestException as error:
            raise TransientError(
                self.source_id,
                f"cannot reach the Microsoft sign-in service {self.source.authority_host} "
                f"({type(error).__name__})",
            ) from None
        except ValueError as error:  # msal: bad authority / OIDC metadata, bad key
            raise AuthError(
                self.source_id, f"Microsoft sign-in failed ({type(error).__name__})"
            ) from None
        token = result.get("access_token") if isinstance(result, dict) else None
        if not token:
            raise self._refused(result)
        self._token = str(token)
        self._token_expires = time.monotonic() + max(60, int(result.get("expires_in", 3600)) - 300)
        return self._token

    def _refused(self, result: object) -> AuthError:
        code = result.get("error", "unknown") if isinstance(result, dict) else "unknown"
        description = str(result.get("error_description", "")) if isinstance(result, dict) else ""
        first = description.split("\r\n")[0].split("\n")[0][:200]
        return AuthError(
            self.source_id,
            f"Microsoft sign-in refused for client {self.source.client_id} in tenant "
            f"{self.source.tenant_id}: {code} {first}".rstrip(),
        )

    def _delegated_token(self) -> dict[str, Any]:
        from mentorpulse.credentials import TokenStore
        from mentorpulse.errors import UserError

        store = TokenStore(self._path(self.source.token_store))
        refresh = signed_in_token(store, token_name(self.source), self.source_id, "microsoft")
        result: dict[str, Any] = self._app.acquire_token_by_refresh_token(
            refresh, scopes=delegated_scopes(self.source)
        )
        if result.get("refresh_token") and result["refresh_token"] != refresh:
            try:
                store.save(token_name(self.source), str(result["refresh_token"]))
            except UserError as error:
                log.warning("graph_token_not_saved", source=self.source_id, error=error.message)
        return result


@dataclass(frozen=True, slots=True)
class _SignInAnswer:
    """msal's minimal response: status, text, headers."""

    status_code: int
    text: str
    headers: httpx.Headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests

            raise requests.HTTPError(f"HTTP {self.status_code}")


class _BoundedSignIn:
    """msal's ``HttpClient`` interface over :class:`BoundedClient`. Failures are raised
    as the requests exceptions msal's default client raises, which sign-in maps."""

    def __init__(self, client: BoundedClient) -> None:
        self._client = client

    def get(
        self, url: str, params: Mapping[str, str] | None = None, headers: Any = None, **_: Any
    ) -> _SignInAnswer:
        return self._send("GET", url, params, dict(headers or {}), None)

    def post(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Any = None,
        **_: Any,
    ) -> _SignInAnswer:
        sent = dict(headers or {})
        if isinstance(data, Mapping):
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
            data = urlencode(data)
        body = data.encode() if isinstance(data, str) else data
        return self._send("POST", url, params, sent, body)

    def close(self) -> None:
        self._client.close()

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        body: bytes | None,
    ) -> _SignInAnswer:
        import requests

        if params:
            url = f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"
        try:
            answer = self._client.request(method, url, headers=headers, body=body)
        except FetchTimeout as exc:
            raise requests.Timeout(str(exc)) from None
        except FetchError as exc:
            raise requests.ConnectionError(str(exc)) from None
        text = answer.content.decode("utf-8", "replace")
        return _SignInAnswer(answer.status, text, answer.headers)

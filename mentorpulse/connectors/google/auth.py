"""Google credentials: a service account acting for each user (domain-wide delegation),
or the refresh token `mentorpulse auth google` stored encrypted; tokens cached across polls
and the connectors of the process, delegated ones fetched concurrently on a first sync."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import google.auth.exceptions
import google_auth_httplib2
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from mentorpulse.config.schema import GoogleSource, resolve_path
from mentorpulse.connectors.base import AuthError, ConnectorError, TransientError, signed_in_token
from mentorpulse.connectors.google.http import BoundedHttp
from mentorpulse.connectors.http import BoundedClient

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar.readonly"
SCOPE_MEET = "https://www.googleapis.com/auth/meetings.space.readonly"
TOKEN_WORKERS = 16
TOKEN_NAME = "google:{source_id}"  # noqa: S105 - a key name, not a secret
_OAUTH_ERROR = re.compile(r"\b(invalid_grant|unauthorized_client|invalid_client|access_denied)\b")

_CREDENTIALS: dict[tuple[str, str, tuple[str, ...]], Any] = {}
_SHARED_LOCK = threading.Lock()


def scopes_for(source: GoogleSource) -> list[str]:
    """The read-only scopes this source needs, and nothing more."""
    return [SCOPE_CALENDAR, SCOPE_MEET] if source.attendance else [SCOPE_CALENDAR]


class NoCalendar(Exception):
    """A user Google cannot act as (suspended, deleted): their calendar is skipped."""

    def __init__(self, user: str, reason: str) -> None:
        super().__init__(reason)
        self.user = user
        self.reason = reason


class GoogleAuth:
    """Valid credentials per user of one source, cached across polls."""

    def __init__(
        self, source: GoogleSource, *, base_dir: Path, api_root: str, token_key: str | None
    ) -> None:
        self.source = source
        self.source_id = source.id
        self.base_dir = base_dir
        self.scopes = scopes_for(source)
        self.delegated = source.service_account_key is not None
        self._api_root = api_root
        self._token_key = token_key
        self._base: Any = None
        self._authed: dict[str, google_auth_httplib2.AuthorizedHttp] = {}
        self.gone: dict[str, NoCalendar] = {}  # users found missing while warming up
        self.key_id = self._credential_key()

    def _path(self, value: str) -> Path:
        return resolve_path(self.base_dir, value)

    def _credential_key(self) -> str:
        if self.source.service_account_key is not None:
            return f"sa:{self._path(self.source.service_account_key)}"
        return f"oauth:{self.source_id}"

    def _base_credentials(self) -> Any:
        """The service account or the signed-in user's credentials, as configured."""
        if self.source.service_account_key is not None:
            return self._service_account(self._path(self.source.service_account_key))
        from mentorpulse.credentials import TokenStore
        from mentorpulse.errors import UserError

        assert self.source.oauth_client is not None  # the schema demands one of the two
        try:
            client = oauth_client_info(self._path(self.source.oauth_client))
        except UserError as exc:
            raise AuthError(self.source_id, exc.message) from None
        store = TokenStore(self._path(self.source.token_store), self._token_key)
        name = TOKEN_NAME.format(source_id=self.source_id)
        refresh = signed_in_token(store, name, self.source_id, "google")
        return user_credentials.Credentials(  # type: ignore[no-untyped-call]
            None,
            refresh_token=refresh,
            client_id=client["client_id"],
            client_secret=client["client_secret"],
            token_uri=client["token_uri"],
            scopes=self.scopes,
        )

    def _service_account(self, path: Path) -> Any:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=self.scopes
            )
        except (OSError, ValueError, KeyError) as exc:
            # Never quote the file: it holds the private key.
            raise AuthError(
                self.source_id,
                f"cannot read the service account key {path} ({type(exc).__name__})",
            ) from None

    def _cache_key(self, user: str) -> tuple[str, str, tuple[str, ...]]:
        return (self.key_id, user if self.delegated else "", tuple(self.scopes))

    def credentials_for(self, user: str) -> Any:
        """Valid credentials for reading ``user``'s data, cached across polls."""
        key = self._cache_key(user)
        with _SHARED_LOCK:
            creds = _CREDENTIALS.get(key)
        if creds is None:
            if self._base is None:
                self._base = self._base_credentials()  # parsing the key is slow: once
            creds = self._base.with_subject(user) if self.delegated else self._base
            with _SHARED_LOCK:
                _CREDENTIALS[key] = creds
        if not creds.valid:
            try:
                self._refresh(creds, user)
            except Exception:
                with _SHARED_LOCK:  # refused credentials are read again next time
                    _CREDENTIALS.pop(key, None)
                raise
        return creds

    def warm(self, users: list[str]) -> None:
        """Fetch missing delegated tokens concurrently.

        Domain-wide delegation needs one token request per user (an hour's worth);
        waiting for 2,000 of them one after the other would dominate a first sync.
        """
        if not self.delegated or len(users) < 2:
            return
        if self._base is None:
            self._base = self._base_credentials()

        def attempt(user: str) -> Exception | None:
            try:
                self.credentials_for(user)
            except (NoCalendar, ConnectorError) as failure:
                return failure
            return None

        with ThreadPoolExecutor(max_workers=TOKEN_WORKERS) as pool:
            failures = list(pool.map(attempt, users))
        for failure in failures:
            if isinstance(failure, NoCalendar):
                self.gone[failure.user] = failure
            elif failure is not None:
                raise failure

    def _refresh(self, creds: Any, user: str) -> None:
        # A bounded client of its own: token requests run on several threads at once.
        http = BoundedHttp(
            BoundedClient(self._api_root, timeout=self.source.timeout.total_seconds())
        )
        try:
            creds.refresh(google_auth_httplib2.Request(http))
        except google.auth.exceptions.RefreshError as exc:
            raise self._refused(_oauth_code(exc), user) from None
        except (google.auth.exceptions.TransportError, OSError) as exc:
            raise TransientError(
                self.source_id, f"cannot reach the Google token endpoint ({type(exc).__name__})"
            ) from None
        finally:
            http.close()

    def _refused(self, code: str | None, user: str) -> Exception:
        """What a refused token request means: a user who is gone, or credentials to mend."""
        if self.delegated and code == "invalid_grant":
            return NoCalendar(user, "no such user, or the user is suspended")
        if self.delegated:
            return AuthError(
                self.source_id,
                f"Google refused to act as {user} ({code or 'refused'}): grant the "
                f"service account domain-wide delegation of {', '.join(self.scopes)} "
                "in the Admin console",
            )
        return AuthError(
            self.source_id,
            f"Google refused the sign-in used to read {user} ({code or 'refused'}): "
            f"run `mentorpulse auth google --source {self.source_id}` again",
        )

    def forget(self, user: str) -> None:
        """Drop ``user``'s cached token, so that the next call asks Google afresh."""
        with _SHARED_LOCK:
            _CREDENTIALS.pop(self._cache_key(user), None)
        self._authed.pop(user, None)

    def http_for(self, user: str, http: BoundedHttp) -> google_auth_httplib2.AuthorizedHttp:
        """``http`` signing its requests as ``user``."""
        creds = self.credentials_for(user)
        authed = self._authed.get(user)
        if authed is None or authed.credentials is not creds:
            authed = google_auth_httplib2.AuthorizedHttp(creds, http=http)
            self._authed[user] = authed
        return authed


def oauth_client_info(path: Path) -> dict[str, str]:
    """client_id, client_secret and token_uri of an installed-app client JSON file."""
    from mentorpulse.errors import UserError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        section = data.get("installed") or data.get("web")
        return {
            "client_id": str(section["client_id"]),
            "client_secret": str(section["client_secret"]),
            "token_uri": str(section.get("token_uri", "https://oauth2.googleapis.com/token")),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(
            f"{path}: not an OAuth client file of an installed app ({type(exc).__name__})"
        ) from None


def _oauth_code(exc: google.auth.exceptions.RefreshError) -> str | None:
    """The OAuth error code of a refusal (the response never carries a secret here)."""
    for arg in exc.args:
        if isinstance(arg, Mapping) and isinstance(arg.get("error"), str):
            return str(arg["error"])
        found = _OAUTH_ERROR.search(str(arg)) if isinstance(arg, str) else None
        if found:
            return found.group(1)
    return None

"""Graph over plain HTTP (httpx through the bounded client): single GETs and JSON
``$batch`` requests, throttled answers retried with the connectors' :class:`RetryPolicy`,
every status typed by :func:`status_error`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from mentorpulse.connectors.base import (
    ConnectorError,
    RetryPolicy,
    TransientError,
    TryAgain,
    retry_after_seconds,
    status_error,
)
from mentorpulse.connectors.http import BoundedClient, BoundedTransport, BoundedTransportError
from mentorpulse.connectors.microsoft.auth import GraphSignIn

BATCH_LIMIT = 20  # Graph's limit of requests per JSON batch
MAX_WAIT = 30.0  # longer Retry-After: give up this run, let the scheduler come back
MAX_ATTEMPTS = 4
_EXPIRED_CODES = {"syncstatenotfound", "syncstateinvalid", "resyncrequired"}
_REFUSED_HINT = (
    "check the app's permissions and its Exchange RBAC / application access policy scope"
)


@dataclass
class Answer:
    """One Graph response (a top-level one or a sub-response of a batch)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def code(self) -> str:
        error = self.body.get("error") if isinstance(self.body, Mapping) else None
        return str(error.get("code") or "") if isinstance(error, Mapping) else ""


class GraphClient:
    """Requests to one Graph root, signed by :class:`GraphSignIn`; counts what it sends."""

    def __init__(
        self,
        source_id: str,
        *,
        graph_url: str,
        sign_in: GraphSignIn,
        timeout: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source_id = source_id
        self.graph_url = graph_url
        self._sign_in = sign_in
        self._timeout = timeout
        self._sleep = sleep
        self._client: httpx.Client | None = None
        # Graph's own backoff guidance: Retry-After when given, else 1, 2, 4 s.
        self.policy = RetryPolicy(
            attempts=MAX_ATTEMPTS,
            cap=MAX_WAIT,
            longest=MAX_WAIT,
            budget=3 * MAX_WAIT,
            retry_on=(TryAgain,),
            jitter=lambda: 0.5,
        )
        self.requests = 0  # HTTP requests sent to Graph (for the bench and the logs)

    def _http(self) -> httpx.Client:
        if self._client is None:
            # One total deadline per request, a size cap, checked addresses (httpx's
            # timeouts apply per read).
            bounded = BoundedClient(
                self.graph_url, timeout=self._timeout, verify=self._sign_in.verify
            )
            self._client = httpx.Client(
                transport=BoundedTransport(bounded), timeout=self._timeout, trust_env=False
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _url(self, link: str) -> str:
        return link if link.startswith("https://") else f"{self.graph_url}{link}"

    def relative(self, link: str) -> str:
        """A Graph link as a batch sub-request URL (relative to the version root)."""
        if link.startswith(self.graph_url):
            return link[len(self.graph_url) :]
        parts = urlsplit(link)
        path = parts.path
        version = urlsplit(self.graph_url).path
        if path.startswith(version):
            path = path[len(version) :]
        return f"{path}?{parts.query}" if parts.query else path

    def _send(
        self, method: str, link: str, *, headers: Mapping[str, str], json_body: Any = None
    ) -> Answer:
        try:
            response = self._http().request(
                method,
                self._url(link),
                headers={"Authorization": f"Bearer {self._sign_in.access_token()}", **headers},
                json=json_body,
            )
        except httpx.TimeoutException:
            raise TransientError(self.source_id, "timed out talking to Microsoft Graph") from None
        except BoundedTransportError as error:  # too large, or an address refused
            raise TransientError(self.source_id, f"Microsoft Graph: {error}") from None
        except httpx.HTTPError as error:
            raise TransientError(
                self.source_id, f"cannot reach Microsoft Graph ({type(error).__name__})"
            ) from None
        self.requests += 1
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return Answer(response.status_code, response.headers, body)

    def check(self, answer: Answer, what: str) -> None:
        """Raise the typed error of the contract for a failed answer."""
        error = self.error_of(answer, what)
        if error is not None:
            raise error

    def error_of(self, answer: Answer, what: str) -> ConnectorError | None:
        """The typed error of an answer (:func:`status_error`), None for a good one."""
        code = answer.code
        said = f"Graph answered HTTP {answer.status} {code}".rstrip()
        return status_error(
            self.source_id,
            answer.status,
            f"{said} for {what}",
            retry_after=retry_after_seconds(answer.headers.get("Retry-After"), datetime.now(UTC)),
            refused=f"Graph refused access to {what} (HTTP {answer.status} {code}); "
            + _REFUSED_HINT,
            expired=f"Graph no longer knows the sync state of {what} ({answer.status} {code})",
            cursor_gone=code.lower() in _EXPIRED_CODES,
        )

    def get(
        self,
        link: str,
        what: str,
        headers: Mapping[str, str] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """GET with throttling retries; with ``missing_ok`` a 404 is None, not an error."""

        def once() -> Any:
            answer = self._send("GET", link, headers=headers or {})
            if missing_ok and answer.status == 404:
                return None
            self.check(answer, what)
            return answer.body

        return self.policy.run(once, sleep=self._sleep, event="graph_throttled")

    def batch(
        self, requests: Sequence[tuple[str, str, str]], headers: Mapping[str, str]
    ) -> dict[str, Answer]:
        """GET ``(key, link, what)`` requests in JSON batches, retrying throttled ones.

        Returns each key's final answer; errors other than throttling are for the caller.
        """
        pending = {key: (link, what) for key, link, what in requests}
        answers: dict[str, Answer] = {}

        def round_trip() -> dict[str, Answer]:
            waits: list[float | None] = []
            keys = list(pending)
            for start in range(0, len(keys), BATCH_LIMIT):
                waits += self._chunk(keys[start : start + BATCH_LIMIT], pending, answers, headers)
            if pending:
                known = [w for w in waits if w is not None]
                raise TryAgain(
                    self.source_id,
                    f"Graph is throttling requests for {len(pending)} mailboxes",
                    retry_after=max(known) if known else None,
                )
            return answers

        return self.policy.run(round_trip, sleep=self._sleep, event="graph_throttled")

    def _chunk(
        self,
        chunk: list[str],
        pending: dict[str, tuple[str, str]],
        answers: dict[str, Answer],
        headers: Mapping[str, str],
    ) -> list[float | None]:
        """One ``$batch`` of ``chunk``: final answers move from ``pending`` to ``answers``;
        returns the Retry-After of each throttled sub-response."""
        payload = {
            "requests": [
                {
                    "id": str(n),
                    "method": "GET",
                    "url": self.relative(pending[key][0]),
                    "headers": headers,
                }
                for n, key in enumerate(chunk)
            ]
        }

        def post() -> Any:
            outer = self._send("POST", "/$batch", headers={}, json_body=payload)
            self.check(outer, "a $batch request")
            return outer.body

        body = self.policy.run(post, sleep=self._sleep, event="graph_throttled")
        throttled: list[float | None] = []
        for item in body.get("responses", []) if isinstance(body, dict) else []:
            if not str(item.get("id", "")).isdigit() or int(item["id"]) >= len(chunk):
                continue  # not one of ours: the key is then missing for the caller
            key = chunk[int(item["id"])]
            sub_headers = httpx.Headers(  # case-insensitive, as HTTP headers are
                {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
            )
            answer = Answer(int(item["status"]), sub_headers, item.get("body"))
            error = self.error_of(answer, pending[key][1])
            if isinstance(error, TryAgain):
                throttled.append(error.retry_after)
                continue
            answers[key] = answer
            del pending[key]
        return throttled

"""Calls to Google: batched (up to 50 calls per HTTP request, each with its own user's
token) or single, under the quota gate, retried in-process with the connectors'
:class:`RetryPolicy`, each final answer typed by :func:`status_error`."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any

import google.auth.exceptions
import httplib2
import structlog
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from mentorpulse.connectors.base import (
    ConnectorError,
    RetryPolicy,
    TransientError,
    TryAgain,
    retry_after_seconds,
    status_error,
)
from mentorpulse.connectors.google.auth import GoogleAuth, NoCalendar
from mentorpulse.connectors.google.http import BoundedHttp
from mentorpulse.connectors.google.quota import QuotaGate

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5
MAX_BACKOFF = 60.0
RETRY_BUDGET = 300.0  # seconds of waiting in all before the scheduler takes over
_RETRIABLE_403 = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_TRANSPORT = (OSError, HTTPException, httplib2.HttpLib2Error)


@dataclass
class Call:
    user: str
    request: HttpRequest
    phase: str


@dataclass
class Outcome:
    """One call's final answer: a response, or the typed error (or :class:`NoCalendar`)."""

    user: str
    phase: str
    response: dict[str, Any] | None
    error: ConnectorError | NoCalendar | None
    status: int | None = None


@dataclass(frozen=True)
class _Garbled:
    kind: str


class GoogleCalls:
    """Sends calls for one connector; counts the HTTP requests it sends."""

    def __init__(
        self,
        source_id: str,
        *,
        auth: GoogleAuth,
        gate: QuotaGate,
        http: BoundedHttp,
        batch_uri: str,
        sleep: Callable[[float], None],
        jitter: Callable[[], float],
    ) -> None:
        self.source_id = source_id
        self.auth = auth
        self.gate = gate
        self.http = http
        self._batch_uri = batch_uri
        self._sleep = sleep
        self.policy = RetryPolicy(
            attempts=MAX_ATTEMPTS,
            cap=MAX_BACKOFF,
            longest=RETRY_BUDGET,
            budget=RETRY_BUDGET,
            retry_on=(TryAgain,),
            jitter=jitter,
        )
        self.http_requests = 0  # batch and single requests sent

    def authorise(self, user: str, request: HttpRequest) -> None:
        """Let ``request`` go out with ``user``'s token (raises :class:`NoCalendar`)."""
        request.http = self.auth.http_for(user, self.http)

    # -- batches ----------------------------------------------------------------------

    def execute(self, calls: list[Call]) -> list[Outcome]:
        """Send ``calls`` in batch requests until each has an answer worth acting on."""
        outcomes: list[Outcome] = []
        pending = list(calls)

        def round_trip() -> list[Outcome]:
            nonlocal pending
            self.gate.acquire([c.user for c in pending])
            answers = self._send(pending)
            again: list[tuple[Call, TryAgain]] = []
            for call in pending:
                response, raw = answers.get(id(call), (None, None))
                error, status = self.typed(raw, f"the calendar of {call.user}", item=True)
                if isinstance(error, TryAgain):
                    again.append((call, error))
                else:
                    outcomes.append(Outcome(call.user, call.phase, response, error, status))
            pending = [call for call, _ in again]
            if again:
                raise _worst(again)
            return outcomes

        return self.policy.run(round_trip, sleep=self._sleep, event="google_backoff")

    def _send(self, calls: list[Call]) -> dict[int, tuple[dict[str, Any] | None, Any]]:
        """One HTTP request; a transport failure answers every call with the exception."""
        answers: dict[int, tuple[dict[str, Any] | None, Any]] = {}
        by_id = {str(n): call for n, call in enumerate(calls)}

        def collect(request_id: str, response: Any, exception: Any) -> None:
            answers[id(by_id[request_id])] = (response, exception)

        batch = BatchHttpRequest(callback=collect, batch_uri=self._batch_uri)
        for request_id, call in by_id.items():
            batch.add(call.request, request_id=request_id)
        self.http_requests += 1
        try:
            batch.execute(http=self.http)
        except google.auth.exceptions.RefreshError:
            # A 401 made the library refresh a token, and Google refused: find whose, and
            # turn it into the typed error of that user; the others are sent again.
            answers = {id(call): (None, self._reauthorised(call)) for call in calls}
        except (HttpError, *_TRANSPORT) as exc:
            log.info("google_batch_failed", source=self.source_id, error=type(exc).__name__)
            answers = {id(call): (None, exc) for call in calls}
        except Exception as exc:  # a malformed batch answer (BatchError, parse failures)
            log.info("google_batch_failed", source=self.source_id, error=type(exc).__name__)
            answers = {id(call): (None, _Garbled(type(exc).__name__)) for call in calls}
        return answers

    def _reauthorised(self, call: Call) -> object:
        self.auth.forget(call.user)
        try:
            self.authorise(call.user, call.request)
        except NoCalendar as gone:
            return gone
        return _Garbled("expired token")

    # -- single calls -----------------------------------------------------------------

    def single(
        self, user: str, request: HttpRequest, *, reading: str, scope: str
    ) -> dict[str, Any]:
        """One call on its own, with the same retries and error mapping as a batch; a
        refusal names what was being read and the scope that allows it; a 404 is empty."""
        try:
            self.authorise(user, request)
        except NoCalendar as gone:
            raise TransientError(self.source_id, f"cannot act as {user}: {gone.reason}") from None

        def once() -> dict[str, Any]:
            self.gate.acquire([user])
            self.http_requests += 1
            try:
                response: dict[str, Any] = request.execute()
                return response
            except (HttpError, *_TRANSPORT) as exc:
                if isinstance(exc, HttpError) and exc.resp.status == 404:
                    return {}
                refused = f"Google refused to read {reading} for {user} ({_describe(exc)}); "
                error, _ = self.typed(exc, reading, refused=f"{refused}grant {scope}")
                raise error or TransientError(self.source_id, _describe(exc)) from None

        return self.policy.run(once, sleep=self._sleep, event="google_backoff")

    # -- errors -------------------------------------------------------------------------

    def typed(
        self, raw: object, what: str, *, item: bool = False, refused: str | None = None
    ) -> tuple[ConnectorError | NoCalendar | None, int | None]:
        """A call's raw failure as the contract's typed error, and its HTTP status.

        Statuses go through :func:`status_error`; Google documents its 5xx and dropped
        connections as worth an immediate retry with backoff, so they are :class:`TryAgain`.
        """
        if raw is None or isinstance(raw, NoCalendar):
            return raw, None
        if not isinstance(raw, HttpError):
            return TryAgain(self.source_id, _describe(raw)), None
        status, reason = raw.resp.status, _reason(raw)
        header = raw.resp.get("retry-after")
        error = status_error(
            self.source_id,
            status,
            _describe(raw) if item else f"Google failed for {what}: {_describe(raw)}",
            retry_after=retry_after_seconds(str(header) if header else None, datetime.now(UTC)),
            refused=refused
            or f"Google refused the credentials for {what} (HTTP {status}); check the "
            f"scopes granted: {', '.join(self.auth.scopes)}",
            expired=f"Google expired the sync token of {what}: full resync",
            throttled=status == 403 and reason in _RETRIABLE_403,
            item=item and reason != "insufficientPermissions",
        )
        if type(error) is TransientError and status >= 500:
            error = TryAgain(self.source_id, error.message, retry_after=error.retry_after)
        return error, status


def _worst(again: list[tuple[Call, TryAgain]]) -> TryAgain:
    """The error a round of retries stands for: the first call's, with the longest
    Retry-After any of them was given."""
    call, first = again[0]
    waits = [e.retry_after for _, e in again if e.retry_after is not None]
    return TryAgain(
        first.source_id,
        f"Google kept failing for {call.user}: {first.message}",
        retry_after=max(waits) if waits else None,
    )


def _reason(error: HttpError) -> str | None:
    try:
        payload = json.loads(error.content)
        return str(payload["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _describe(error: object) -> str:
    if isinstance(error, HttpError):
        return f"HTTP {error.resp.status} {_reason(error) or ''}".strip()
    if isinstance(error, _Garbled):
        return f"malformed answer ({error.kind})"
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return f"connection failed ({type(error).__name__})" if error else "no answer"

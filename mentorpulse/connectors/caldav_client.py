"""The caldav library's client for a :class:`CaldavSource`, every request through
:class:`BoundedClient`.

Kept apart from connectors/caldav.py so that a sync which finds every calendar unchanged
(one sync-collection REPORT each, through our own client) never imports the library and
niquests (~0.25 s CPU of imports per run).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from caldav.davclient import DAVClient
from caldav.elements.base import ValuedBaseElement
from caldav.lib.http_sync import requests as http

from mentorpulse.config.schema import CaldavSource
from mentorpulse.connectors.http import BoundedClient


class GetCtag(ValuedBaseElement):
    """CalendarServer's ``getctag``: changes whenever anything in the calendar changes."""

    tag: ClassVar[str] = "{http://calendarserver.org/ns/}getctag"


class _RawDone:
    """Stands in for niquests' raw response: the body was read, bounded, already."""

    _original_response = None  # no Set-Cookie to take: cookies are not kept
    trailers: ClassVar[dict[str, str]] = {}
    version = 11

    def read(self, *args: object, **kwargs: object) -> bytes:
        return b""

    def close(self) -> None:
        """Nothing left open."""

    def release_conn(self) -> None:
        """Nothing held."""


class _BoundedAdapter(http.adapters.BaseAdapter):
    """Every request of the CalDAV client through :class:`BoundedClient`: one total
    deadline per request, ``max_bytes`` per answer, addresses checked against the
    configured URL's host (niquests' own timeouts apply per read; redirects and auth
    retries stay niquests', each a request of its own here)."""

    def __init__(self, client: BoundedClient) -> None:
        super().__init__()
        self._client = client

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        if body is not None and not isinstance(body, bytes):
            body = b"".join(body)  # an iterable body; the caldav library sends bytes
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("accept-encoding",)
        }
        answer = self._client.request(
            str(request.method), str(request.url), headers=headers, body=body
        )
        response = http.Response()
        response.status_code = answer.status
        response.headers = http.structures.CaseInsensitiveDict(answer.headers.multi_items())
        response._content = answer.content
        response._content_consumed = True
        response.raw = cast(Any, _RawDone())
        response.url = str(request.url)
        response.reason = answer.reason
        response.encoding = http.utils.get_encoding_from_headers(response.headers)
        response.request = request
        response.connection = self  # type: ignore[attr-defined]  # as niquests sets it, for digest auth
        return response

    def close(self) -> None:
        self._client.close()


def dav_client(source: CaldavSource) -> DAVClient:
    """The library's client for ``source``, its requests bounded by ``BoundedClient``."""
    client = DAVClient(
        url=source.url,
        username=source.username,
        password=source.password.get_secret_value(),
        auth_type=source.auth,
        timeout=max(1, int(source.timeout.total_seconds())),
        ssl_verify_cert=source.verify_tls,
        enable_rfc6764=False,  # the url is given: no discovery beside our checks
    )
    bounded = BoundedClient(
        source.url,
        timeout=source.timeout.total_seconds(),
        max_bytes=source.max_bytes,
        verify=source.verify_tls,
    )
    session = client.session
    adapter = _BoundedAdapter(bounded)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.max_redirects = 5
    session.trust_env = False  # HTTP(S)_PROXY is the bounded client's to apply
    return client

"""``httplib2.Http`` as the Google client libraries use it, over the bounded client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httplib2

from mentorpulse.connectors.http import BoundedClient, FetchError, FetchTimeout


class BoundedHttp:
    """``httplib2.Http``'s interface, as the Google client libraries use it, over
    :class:`BoundedClient`: one total deadline per request, a size cap, checked
    addresses. A timeout is raised as ``socket.timeout``, any other failure as a
    ``ConnectionError`` (both retried by googleapiclient where it retries)."""

    redirect_codes = frozenset({300, 301, 302, 303, 307})
    follow_redirects = True

    def __init__(self, client: BoundedClient) -> None:
        self._client = client
        self.timeout = client.timeout
        self.connections: dict[str, Any] = {}

    def request(  # noqa: PLR0917 - httplib2's signature, positional as callers use it
        self,
        uri: str,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[httplib2.Response, bytes]:
        data = body.encode() if isinstance(body, str) else body
        try:
            if method == "GET":
                answer = self._client.get(uri, headers=headers)
            else:
                answer = self._client.request(method, uri, headers=headers, body=data)
        except FetchTimeout as exc:
            raise TimeoutError(str(exc)) from None
        except FetchError as exc:
            raise ConnectionError(str(exc)) from None
        info = {key.lower(): value for key, value in answer.headers.items()}
        info["status"] = str(answer.status)
        response = httplib2.Response(info)
        response.reason = answer.reason
        return response, answer.content

    def close(self) -> None:
        self._client.close()

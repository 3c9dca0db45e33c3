"""The people-facing pages' one home: the Jinja2 environment, the base template and the
headers every page carries.

Pages are rendered on the server and need no JavaScript; the CSS is inline in the base
template and nothing is loaded from outside the process. Every value is escaped by the
template engine. Templates live in ``templates/`` of each package in
:data:`TEMPLATE_PACKAGES` (the base template in ``mentorpulse/service/templates``).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from mentorpulse.text import local_time

TEMPLATE_PACKAGES = ("mentorpulse.service", "mentorpulse.service.dashboard")

# No script, no outside asset, no framing, no referrer (a sign-in link's token is in its
# path); forms post to this service only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; frame-src 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.PackageLoader(package, "templates") for package in TEMPLATE_PACKAGES]
        ),
        autoescape=True,  # names, emails and reasons come from people we do not control
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def secured(response: Response) -> Response:
    """``response`` with the headers every page carries."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(template: str, *, status: int = 200, zone: str = "UTC", **context: Any) -> Response:
    """A page: ``template`` rendered with ``context`` (times shown in ``zone``)."""
    tz = ZoneInfo(zone)

    def local(moment: datetime | None) -> str:
        return local_time(moment, tz)

    body = environment().get_template(template).render(local=local, zone=zone, **context)
    return secured(HTMLResponse(body, status_code=status))


MAX_FORM_FIELDS = 50  # the pages' forms are a few fields


class FormRefused(Exception):
    """A form body no page of ours sends: too large (413) or too many fields (400)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_form(request: Request, *, max_bytes: int) -> dict[str, str]:
    """An urlencoded form body of at most ``max_bytes`` and :data:`MAX_FORM_FIELDS`
    fields: each field's first value (raises :class:`FormRefused`). The one form reader
    of the dashboard and the answer pages."""
    body = b""
    async for chunk in request.stream():  # stop reading a flood early
        body += chunk
        if len(body) > max_bytes:
            raise FormRefused(413, "form too large")
    try:
        fields = parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise FormRefused(400, "too many form fields") from None
    return {name: values[0] for name, values in fields.items()}

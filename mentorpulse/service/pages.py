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
from zoneinfo import ZoneInfo

import jinja2
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

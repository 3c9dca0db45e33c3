"""Real CalDAV servers for tests and the bench: Radicale and Xandikos on loopback ports.

Radicale runs as a subprocess with htpasswd authentication. Xandikos has no
authentication of its own (it expects a reverse proxy in front), so it runs in a thread
as its WSGI app behind a small Basic-auth gate, the way it is deployed. Both keep their
data in a temporary folder and are stopped when the context exits.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from caldav import Calendar, DAVClient

from tests.servers.ports import free_port

USER = "svc"
PASSWORD = "correct horse battery staple"
SERVERS = ("radicale", "xandikos")
# People with their own accounts on Radicale; USER may read their calendars (delegation).
PEOPLE = ("ana@example.org", "ben@example.org")
# Radicale's rights: everyone owns their home; USER also reads every calendar.
RADICALE_RIGHTS = f"""
[root]
user: .+
collection:
permissions: R

[own]
user: .+
collection: {{user}}(/.*)?
permissions: RrWw

[delegate]
user: {USER}
collection: .*
permissions: Rr
"""


@dataclass(frozen=True)
class CaldavServer:
    """A running server: where its calendars live and how to log in."""

    kind: str
    url: str  # the server root, the URL a user would configure
    home: str  # the user's calendar home, where tests create calendars
    username: str = USER
    password: str = PASSWORD
    people: tuple[str, ...] = ()  # other accounts, whose calendars USER may read


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout}s")


@contextlib.contextmanager
def radicale(folder: Path) -> Iterator[CaldavServer]:
    """Radicale 3 with htpasswd users: USER, who may read everyone's calendars, and PEOPLE."""
    folder.mkdir(parents=True, exist_ok=True)
    users = folder / "users"
    users.write_text("".join(f"{name}:{PASSWORD}\n" for name in (USER, *PEOPLE)))
    rights = folder / "rights"
    rights.write_text(RADICALE_RIGHTS)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "radicale",
        "--server-hosts",
        f"127.0.0.1:{port}",
        "--storage-filesystem-folder",
        str(folder / "collections"),
        "--auth-type",
        "htpasswd",
        "--auth-htpasswd-filename",
        str(users),
        "--auth-htpasswd-encryption",
        "plain",
        "--rights-type",
        "from_file",
        "--rights-file",
        str(rights),
        "--logging-level",
        "warning",
    ]
    log = (folder / "radicale.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, process)
        root = f"http://127.0.0.1:{port}"
        yield CaldavServer("radicale", f"{root}/", f"{root}/{USER}/", people=PEOPLE)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_stderr(self) -> Any:
        # Xandikos crashes after storing some real-world files (a server bug, answered
        # with 500); the tests look at what it stored, not at its tracebacks.
        return io.StringIO()


Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def basic_auth(
    app: Wsgi, username: str, password: str, *, refuse_sync_collection: bool = False
) -> Wsgi:
    """Refuse every request without the right Basic credentials, as a proxy would.

    ``refuse_sync_collection`` turns the server into one without RFC 6578 (many older
    ones): such a REPORT gets 403 with the DAV:supported-report precondition (RFC 3253).
    """
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def gate(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != expected:
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="xandikos"'), ("Content-Length", "0")],
            )
            return [b""]
        # wsgiref hands over the raw socket; Xandikos reads its body to the end.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        if refuse_sync_collection and b"sync-collection" in body:
            refusal = b'<?xml version="1.0"?><error xmlns="DAV:"><supported-report/></error>'
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(refusal)))],
            )
            return [refusal]
        environ["wsgi.input"] = io.BytesIO(body)
        return app(environ, start_response)

    return gate


@contextlib.contextmanager
def xandikos(folder: Path, *, refuse_sync_collection: bool = False) -> Iterator[CaldavServer]:
    """Xandikos with one principal, ``/svc/``, and its default calendar home."""
    from xandikos.web import SingleUserFilesystemBackend, XandikosApp

    logging.getLogger("xandikos").setLevel(logging.ERROR)
    folder.mkdir(parents=True, exist_ok=True)
    principal = f"/{USER}/"
    backend = SingleUserFilesystemBackend(str(folder), autocreate=True)
    backend._mark_as_principal(principal)
    backend.create_principal(principal, create_defaults=True)
    app = basic_auth(
        XandikosApp(backend, current_user_principal=principal),
        USER,
        PASSWORD,
        refuse_sync_collection=refuse_sync_collection,
    )
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        root = f"http://127.0.0.1:{server.server_port}"
        yield CaldavServer("xandikos", f"{root}/", f"{root}{principal}calendars/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def failing(status: int) -> Iterator[str]:
    """A server that answers every request with ``status``: a broken upstream."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(f"{status} Failing", [("Content-Length", "0"), ("Retry-After", "7")])
        return [b""]

    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def silent() -> Iterator[str]:
    """A server that accepts connections and never answers: a hung upstream."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


def start(kind: str, folder: Path) -> contextlib.AbstractContextManager[CaldavServer]:
    if kind == "radicale":
        return radicale(folder)
    if kind == "xandikos":
        return xandikos(folder)
    raise ValueError(f"unknown CalDAV server {kind!r}")


if __name__ == "__main__":  # pragma: no cover - a manual aid: run a server and wait
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, start(sys.argv[1], Path(tmp)) as running:
        print(running, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait(float(os.environ.get("SERVE_SECONDS", "3600")))


# -- seeding a server as its users would: calendars made, objects PUT and DELETEd ----------


def new_calendar(
    server: CaldavServer,
    name: str | None = None,
    user: str | None = None,
) -> Calendar:
    """A new calendar in the home of ``user`` (default: the account the sources use)."""
    slug = name or f"cal-{uuid.uuid4().hex[:8]}"
    client = DAVClient(
        url=server.url,
        username=user or server.username,
        password=server.password,
        timeout=30,
        auth_type="basic",
    )
    calendar = client.principal().make_calendar(name=slug, cal_id=slug)
    assert calendar.url is not None
    return calendar


def owner_login(calendar: Calendar) -> tuple[str, str]:
    """The account whose home holds ``calendar``: only it may write there."""
    assert calendar.url is not None
    home = unquote(calendar.url.path).strip("/").split("/")[0]
    return (home if home in PEOPLE else USER, PASSWORD)


def object_url(calendar: Calendar, name: str) -> str:
    assert calendar.url is not None
    return str(calendar.url.join(name))


def put(calendar: Calendar, name: str, body: str | bytes) -> int:
    """PUT raw iCalendar as ``name``; returns the HTTP status (the server may refuse)."""
    data = body if isinstance(body, bytes) else body.replace("\n", "\r\n").encode()
    response = httpx.put(
        object_url(calendar, name),
        content=data,
        headers={"Content-Type": "text/calendar; charset=utf-8"},
        auth=owner_login(calendar),
    )
    return response.status_code


def remove(calendar: Calendar, name: str) -> None:
    response = httpx.delete(object_url(calendar, name), auth=owner_login(calendar))
    assert response.status_code < 300

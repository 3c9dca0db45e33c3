"""A hostile HTTP server for tests: what a feed or a server may do to a client that trusts it.

Threaded, on a free loopback port, and bounded itself: every behaviour stops after
``MAX_SECONDS`` or ``MAX_BYTES`` whatever the client does, and :meth:`HostileServer.close`
ends it. Every request is recorded, so a test can assert that a path was never asked for.

GET, PROPFIND and REPORT are answered alike; asked for an absolute URL, it answers as a
forward proxy would (with the same behaviours). Paths (see ``HostileHandler``):

- ``/ok.ics``: a valid one-event calendar (``OK_UID``)
- ``/huge``: 200 MB announced in Content-Length, calendar-looking lines
- ``/huge-unannounced``: the same without a length, until the connection closes
- ``/endless``: chunked, a chunk every few milliseconds, never a last one
- ``/drip``: a calendar body at one byte every ``drip_seconds``
- ``/drip-headers``: the status line and headers at one byte every ``drip_seconds``
- ``/gzip-bomb``: a small gzip body that inflates to 1 GB
- ``/redirect-loopback``: 302 to ``/secret`` on ``redirect_host`` (127.0.0.1)
- ``/redirect-metadata``: 302 to http://169.254.169.254/latest/meta-data/… (never to be reached)
- ``/redirect-loop``: 302 to ``/redirect-loop-2``, which redirects back
- ``/redirect-ftp``: 302 to an ftp:// URL
- ``/secret``: a metadata service's answer, with ``SECRET`` in its first line
- ``/secret-calendar``: a calendar whose broken line carries ``SECRET``
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRET"  # a fake, searched for in output
OK_UID = "ok-event@hostile.test"
MAX_SECONDS = 30.0  # no behaviour lasts longer, whatever the client does
MAX_BYTES = 300_000_000  # no behaviour sends more
HUGE = 200_000_000

METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/role"

# Two days from now: inside every sync window, whatever day the tests run.
_OK_START = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y%m%dT150000Z")
_OK_END = _OK_START.replace("T150000Z", "T160000Z")
OK_CALENDAR = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//test//EN\r\n"
    "BEGIN:VEVENT\r\n"
    f"UID:{OK_UID}\r\n"
    "DTSTAMP:20260301T000000Z\r\n"
    f"DTSTART:{_OK_START}\r\nDTEND:{_OK_END}\r\n"
    "SUMMARY:Mentoring\r\n"
    "ORGANIZER:mailto:alice@example.org\r\n"
    "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.org\r\n"
    "ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.org\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
).encode()

METADATA_BODY = (
    '{"Code": "Success", "SecretAccessKey": "' + SECRET + '", "Token": "x"}\n'
).encode()
SECRET_CALENDAR = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"
    f'"SecretAccessKey": "{SECRET}"\r\n'
    "BEGIN:VEVENT\r\nUID:s@hostile.test\r\nDTSTART:20260302T150000Z\r\n"
    f"SUMMARY;X={SECRET}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
).encode()

_LINE = b"X-FILLER:" + b"x" * 90 + b"\r\n"  # 101 bytes of calendar-looking filler


def _gzip_bomb() -> bytes:
    """1 GB of zeros as one gzip member of about 1 MB."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    block = b"\0" * 1_000_000
    parts = [compressor.compress(block) for _ in range(1000)]
    return b"".join([*parts, compressor.flush()])


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    drip_seconds: ClassVar[float] = 1.0

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests look at ``server.requests``."""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(MAX_SECONDS)

    def do_GET(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and int(length) <= 1_000_000:
            self.rfile.read(int(length))  # a PROPFIND's or REPORT's body, not looked at
        else:
            self.close_connection = True
        self.server.record(self.path)
        # An absolute URL: we are asked as a forward proxy, and answer as the origin.
        path = urlsplit(self.path).path if "://" in self.path else self.path.split("?")[0]
        handler = getattr(
            self, "serve_" + path.strip("/").replace("-", "_").replace(".", "_"), None
        )
        if handler is None:
            self._send(404, b"not here\n", "text/plain")
            return
        # A client hanging up is what a bounded client does.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            handler()

    do_PROPFIND = do_REPORT = do_GET  # a CalDAV client gets the same treatment

    # -- helpers ---------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.close_connection = True
        self._send(302, b"", "text/plain", Location=location)

    def _stream_lines(self, until: float) -> None:
        started = time.monotonic()
        sent = 0
        block = _LINE * 650  # ~64 KB
        while sent < min(until, MAX_BYTES) and time.monotonic() - started < MAX_SECONDS:
            self.wfile.write(block)
            sent += len(block)

    # -- behaviours ------------------------------------------------------------------

    def serve_ok_ics(self) -> None:
        self._send(200, OK_CALENDAR, "text/calendar", ETag='"ok"')

    def serve_huge(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        self.wfile.write(b"BEGIN:VCALENDAR\r\n")
        self._stream_lines(HUGE)

    def serve_huge_unannounced(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"BEGIN:VCALENDAR\r\n")
        self._stream_lines(HUGE)

    def serve_endless(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        started = time.monotonic()
        chunk = b"BEGIN:VCALENDAR\r\n" + _LINE * 600
        sent = 0
        while time.monotonic() - started < MAX_SECONDS and sent < MAX_BYTES:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            chunk = _LINE * 600

    def serve_drip(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Content-Length", str(len(OK_CALENDAR)))
        self.end_headers()
        self._drip(OK_CALENDAR)

    def serve_drip_headers(self) -> None:
        self.close_connection = True
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\n"
            b"Content-Length: %d\r\n\r\n" % len(OK_CALENDAR)
        )
        self._drip(head + OK_CALENDAR)

    def _drip(self, data: bytes) -> None:
        self.wfile.flush()
        started = time.monotonic()
        for index in range(len(data)):
            if time.monotonic() - started > MAX_SECONDS:
                return
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            time.sleep(self.drip_seconds)

    def serve_gzip_bomb(self) -> None:
        self._send(200, self.server.bomb(), "text/calendar", Content_Encoding="gzip")

    def serve_redirect_loopback(self) -> None:
        self._redirect(f"http://{self.server.redirect_host}:{self.server.port}/secret")

    def serve_redirect_metadata(self) -> None:
        self._redirect(METADATA_URL)

    def serve_redirect_loop(self) -> None:
        self._redirect("/redirect-loop-2")

    def serve_redirect_loop_2(self) -> None:
        self._redirect("/redirect-loop")

    def serve_redirect_ftp(self) -> None:
        self._redirect("ftp://127.0.0.1/cal.ics")

    def serve_secret(self) -> None:
        self._send(200, METADATA_BODY, "text/plain")

    def serve_secret_calendar(self) -> None:
        self._send(200, SECRET_CALENDAR, "text/calendar")


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, redirect_host: str = "127.0.0.1", drip_seconds: float = 1.0) -> None:
        handler = type("Handler", (HostileHandler,), {"drip_seconds": drip_seconds})
        super().__init__(("127.0.0.1", 0), handler)
        self.redirect_host = redirect_host
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._bomb: bytes | None = None
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, path: str) -> None:
        with self._lock:
            self.requests.append(path)

    def asked(self, path: str) -> int:
        with self._lock:
            return sum(1 for p in self.requests if p.split("?")[0] == path)

    def bomb(self) -> bytes:
        with self._lock:
            if self._bomb is None:
                self._bomb = _gzip_bomb()
            return self._bomb

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client hanging up on a hostile answer is the expected outcome."""

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@contextmanager
def hostile_server(**options: object) -> Iterator[HostileServer]:
    """A running server; closed (its behaviours cut off) when the block ends."""
    server = HostileServer(**options).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()

"""Hostile feeds cannot hang, bloat or leak through a sync.

Each behaviour of tests/servers/hostile_http.py is fed to the real CLI (`sync --once`) in a
subprocess with an address-space limit and a wall-clock limit, on SQLite and PostgreSQL,
beside a valid feed on the same server. The subprocess runs in a network jail: every
connection it attempts is recorded, only loopback is reached, and ``feed.example.com``
resolves to a public address that the jail routes to the test server, so a public feed
redirecting inward can be tried without DNS. What a user would check: the hostile source
reports one clear error, the valid one is stored, the run ends within the source's
deadline, memory stays bounded, and the secret the server holds appears nowhere.

Figures (time, peak memory per case) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import trustme
from sqlalchemy import MetaData, create_engine, select

from mentorpulse.config.schema import IcsSource
from mentorpulse.connectors.http import (
    AddressPolicy,
    BoundedClient,
    FetchError,
    Refused,
    address_class,
)
from mentorpulse.connectors.ics import IcsConnector
from tests.servers.hostile_http import (
    METADATA_URL,
    OK_UID,
    SECRET,
    HostileServer,
    hostile_server,
)

TIMEOUT_S = 4  # the hostile source's deadline
DRIP_S = 1.0  # one byte per second: the whole answer would take minutes
WALL_S = 90  # the subprocess is killed after this, whatever happens
ADDRESS_SPACE = 2_000_000_000  # RLIMIT_AS of the subprocess
PEAK_RSS_MB = 400  # what a sync with a 50 MB cap may reach, interpreter included
PUBLIC_IP = "93.184.216.34"  # what feed.example.com resolves to inside the jail
PUBLIC_NAME = "feed.example.com"
DAV_PASSWORD = "dav-password-not-to-leak"  # searched for in the output

# Applied in the subprocess before mentorpulse is imported: limits, then the jail.
RUNNER = r"""
import ipaddress, json, os, resource, runpy, socket, sys, time

limit = int(os.environ["HOSTILE_AS"])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
started = time.monotonic()
attempts = []
real_getaddrinfo, real_connect = socket.getaddrinfo, socket.create_connection
name, public, port = os.environ["HOSTILE_NAME"], os.environ["HOSTILE_IP"], None

def getaddrinfo(host, port, *args, **kwargs):
    if host == name:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (public, port or 0))]
    return real_getaddrinfo(host, port, *args, **kwargs)

def create_connection(address, *args, **kwargs):
    host, port = address[0], address[1]
    attempts.append(host)
    if host == public:
        return real_connect(("127.0.0.1", port), *args, **kwargs)
    if not ipaddress.ip_address(host).is_loopback:
        raise OSError(101, "the test jail has no network beyond loopback")
    return real_connect(address, *args, **kwargs)

def peak_rss_mb():
    # This process's own high-water mark: VmHWM starts again at exec, while getrusage's
    # ru_maxrss carries the parent's (pytest's, hundreds of MB late in a suite) across it.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

socket.getaddrinfo, socket.create_connection = getaddrinfo, create_connection
sys.argv = ["mentorpulse", "--log-json", "sync", "--once", "-c", os.environ["HOSTILE_CONFIG"]]
code = 0
try:
    runpy.run_module("mentorpulse", run_name="__main__")
except SystemExit as exit:
    code = exit.code if isinstance(exit.code, int) else 1
finally:
    with open(os.environ["HOSTILE_STATS"], "w") as out:
        json.dump({
            "code": code,
            "seconds": time.monotonic() - started,
            "peak_rss_mb": peak_rss_mb(),
            "attempts": attempts,
        }, out)
"""


@dataclass(frozen=True)
class Case:
    name: str
    url: str  # {base}: the server's loopback URL, {public}: the same via feed.example.com
    error: str | None  # in the source's last_error; None: the source stays ok
    item_error: str | None = None  # in the source's item errors
    never_asked: str | None = None  # a path the server must never see
    kind: str = "ics"


CASES = [
    Case("huge", "{base}/huge", "max_bytes"),
    Case("huge-unannounced", "{base}/huge-unannounced", "max_bytes"),
    Case("endless-chunked", "{base}/endless", "max_bytes"),
    Case("gzip-bomb", "{base}/gzip-bomb", "max_bytes"),
    Case("slow-drip-body", "{base}/drip", f"no complete answer within {TIMEOUT_S} s"),
    Case("slow-drip-headers", "{base}/drip-headers", f"no complete answer within {TIMEOUT_S} s"),
    Case("redirect-metadata", "{base}/redirect-metadata", "never contacted"),
    Case("redirect-loop", "{base}/redirect-loop", "redirected more than 5 times"),
    Case("redirect-ftp", "{base}/redirect-ftp", "only http and https"),
    Case(
        "public-redirect-to-loopback",
        "{public}/redirect-loopback",
        "a loopback address",
        never_asked="/secret",
    ),
    Case("metadata-body", "{base}/secret", None, item_error="did not send iCalendar data"),
    Case(
        "loopback-redirect-to-secret",
        "{base}/redirect-loopback",
        None,
        item_error="did not send iCalendar data",
    ),
    Case("secret-in-calendar", "{base}/secret-calendar", None, item_error="/secret-calendar"),
    # CalDAV: the same bounds on every request of the caldav library.
    Case("caldav-endless-chunked", "{base}/endless", "max_bytes", kind="caldav"),
    Case("caldav-slow-drip-headers", "{base}/drip-headers", "timed out", kind="caldav"),
    Case("caldav-redirect-metadata", "{base}/redirect-metadata", "never contacted", kind="caldav"),
    Case(
        "caldav-public-redirect-to-loopback",
        "{public}/redirect-loopback",
        "a loopback address",
        never_asked="/secret",
        kind="caldav",
    ),
    Case("caldav-metadata-body", "{base}/secret", "did not answer as a CalDAV", kind="caldav"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with hostile_server(drip_seconds=DRIP_S) as running:
        running.bomb()  # built before any deadline runs
        yield running


def _deployment(folder: Path, database_url: str, case_url: str, valid_url: str, kind: str) -> Path:
    (folder / "roster.csv").write_text(
        "program,mentor_email,mentee_email,started_on\n"
        "engineering,alice@example.org,bob@example.org,2025-09-01\n"
    )
    config = folder / "mentorpulse.yaml"
    config.write_text(
        f"database: {database_url}\n"
        "timezone: Europe/Berlin\n"
        "sources:\n"
        f"  - id: hostile\n    kind: {kind}\n    url: '{case_url}'\n    timeout: {TIMEOUT_S}s\n"
        + (
            "    username: mentor@example.org\n    password: ${HOSTILE_DAV_PASSWORD}\n"
            if kind == "caldav"
            else ""
        )
        + f"  - id: valid\n    kind: ics\n    url: '{valid_url}'\n"
        "roster:\n  path: roster.csv\n"
        "programs:\n  - id: engineering\n    cadence: {every: 14d, grace: 3d}\n"
        "    rules:\n      - {id: lapsed, kind: cadence_gap, severity: warning}\n"
    )
    return config


def _run_sync(config: Path, folder: Path) -> tuple[dict[str, Any], str]:
    stats = folder / "stats.json"
    env = {
        **os.environ,
        "HOSTILE_AS": str(ADDRESS_SPACE),
        "HOSTILE_CONFIG": str(config),
        "HOSTILE_STATS": str(stats),
        "HOSTILE_NAME": PUBLIC_NAME,
        "HOSTILE_IP": PUBLIC_IP,
        "COLUMNS": "400",
        "HOSTILE_DAV_PASSWORD": DAV_PASSWORD,
    }
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        env=env,
        capture_output=True,
        text=True,
        timeout=WALL_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert stats.exists(), output
    return json.loads(stats.read_text()), output


def _dump(database_url: str) -> tuple[dict[str, tuple[str | None, list[object]]], list[str], str]:
    """Every source's last error and item errors, the stored events' UIDs, and the whole
    database as text."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        meta = MetaData()
        meta.reflect(engine)
        text: list[str] = []
        with engine.connect() as connection:
            for table in meta.sorted_tables:
                text.extend(repr(tuple(row)) for row in connection.execute(select(table)))
            sources = meta.tables["sources"]
            rows = connection.execute(
                select(sources.c.id, sources.c.last_error, sources.c.item_errors)
            )
            found = {
                row.id: (row.last_error, list(row.item_errors or []))
                for row in rows  # JSON: a list of {item, message}
            }
            events = meta.tables["events"]
            uids = [str(uid) for uid in connection.scalars(select(events.c.ical_uid))]
    finally:
        engine.dispose()
    return found, uids, "\n".join(text)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_feed_costs_only_its_own_source(
    case: Case, server: HostileServer, database_url: str, tmp_path: Path
) -> None:
    base = server.base
    public = f"http://{PUBLIC_NAME}:{server.port}"
    url = case.url.format(base=base, public=public)
    config = _deployment(tmp_path, database_url, url, f"{base}/ok.ics", case.kind)
    before = len(server.requests)

    stats, output = _run_sync(config, tmp_path)
    sources, uids, database = _dump(database_url)

    print(
        f"\nFIGURES {case.name} [{database_url.split(':', maxsplit=1)[0]}]: "
        f"{stats['seconds']:.2f} s, peak RSS {stats['peak_rss_mb']:.0f} MB, exit {stats['code']}"
    )
    # Bounded: within the deadline plus the interpreter's start-up, within memory.
    assert stats["seconds"] < TIMEOUT_S + 25, output
    assert stats["peak_rss_mb"] < PEAK_RSS_MB, output
    assert "Traceback" not in output
    # The valid source beside it is stored and healthy.
    assert sources["valid"][0] is None, sources
    assert uids.count(OK_UID) == 1, uids  # stored, once
    # The hostile one: one clear error, or item errors that say what was wrong.
    last_error, item_errors = sources["hostile"]
    if case.error is None:
        assert last_error is None, last_error
        assert stats["code"] == 0, output
        assert item_errors, "the hostile feed's answer must be reported"
        assert (case.item_error or "") in json.dumps(item_errors)
    else:
        assert last_error is not None, output
        assert case.error in last_error, (last_error, output)
        assert stats["code"] == 1, output
        assert case.error in output  # the operator sees it too
    # Nothing leaks: not in the database, the logs, the CLI's output or any error.
    for secret in (SECRET, DAV_PASSWORD):
        assert secret not in database
        assert secret not in output
    # Never contacted: the metadata address is refused before any connection.
    attempts = [str(a) for a in stats["attempts"]]
    assert not [a for a in attempts if address_class(ipaddress.ip_address(a)) == "forbidden"]
    if case.never_asked:
        assert case.never_asked not in server.requests[before:]


# -- the address policy, with given addresses ---------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "forbidden"),
        ("169.254.0.1", "forbidden"),
        ("fe80::1", "forbidden"),
        ("fd00:ec2::254", "forbidden"),  # AWS metadata over IPv6, inside a private range
        ("100.100.100.200", "forbidden"),  # Alibaba metadata
        ("::ffff:169.254.169.254", "forbidden"),  # IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "forbidden"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "forbidden"),  # 6to4 of 169.254.169.254
        ("0.0.0.0", "forbidden"),
        ("0.1.2.3", "forbidden"),
        ("224.0.0.1", "forbidden"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "private"),
        ("93.184.216.34", "public"),
        ("2606:2800:220:1::1", "public"),
    ],
)
def test_address_classes(address: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(address)) == kind


def _ips(*addresses: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(a) for a in addresses]


def test_a_public_host_may_reach_only_public_addresses() -> None:
    policy = AddressPolicy.for_addresses(_ips("93.184.216.34"))
    policy.check("cdn.example.org", _ips("151.101.1.1"))
    for inward in ("127.0.0.1", "10.0.0.5", "192.168.0.10", "::1"):
        with pytest.raises(Refused):
            policy.check("inward.example.org", _ips("151.101.1.1", inward))  # every address


def test_an_internal_host_may_reach_its_own_kind_never_metadata() -> None:
    loopback = AddressPolicy.for_addresses(_ips("127.0.0.1"))
    loopback.check("localhost", _ips("127.0.0.1", "::1"))
    loopback.check("example.org", _ips("93.184.216.34"))
    with pytest.raises(Refused):
        loopback.check("intranet", _ips("10.0.0.5"))  # loopback is not a key to the LAN
    private = AddressPolicy.for_addresses(_ips("10.0.0.5"))
    private.check("calendar.corp", _ips("10.9.9.9"))
    with pytest.raises(Refused):
        private.check("localhost", _ips("127.0.0.1"))
    for policy in (loopback, private):
        with pytest.raises(Refused, match="never contacted"):
            policy.check("169.254.169.254", _ips("169.254.169.254"))
    # A name with public and private addresses is public: it cannot open the LAN.
    mixed = AddressPolicy.for_addresses(_ips("93.184.216.34", "10.0.0.5"))
    with pytest.raises(Refused):
        mixed.check("calendar.corp", _ips("10.0.0.5"))


def test_metadata_redirect_is_refused_before_any_connection(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    attempted: list[str] = []
    real = socket.create_connection

    def recording(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        attempted.append(address[0])
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", recording)
    with BoundedClient(server.base, timeout=5) as client, pytest.raises(Refused):
        client.get(f"{server.base}/redirect-metadata")
    assert attempted == ["127.0.0.1"]
    with BoundedClient(METADATA_URL, timeout=5) as client, pytest.raises(Refused):
        client.get(METADATA_URL)
    assert attempted == ["127.0.0.1"]


@contextmanager
def _tls_behind_a_redirect(folder: Path) -> Iterator[tuple[str, Path]]:
    """A plain-http URL that redirects to an https server whose certificate a throwaway
    CA signed; yields the http URL and the CA's file."""
    authority = trustme.CA()
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            """Quiet."""

    secure = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    https_url = f"https://127.0.0.1:{secure.server_address[1]}/feed.ics"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", https_url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            """Quiet."""

    plain = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for running in (secure, plain):
        threading.Thread(target=running.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{plain.server_address[1]}/feed.ics", ca_file
    finally:
        for running in (secure, plain):
            running.shutdown()
            running.server_close()


def test_a_plain_http_source_redirected_to_tls_still_verifies_the_certificate(
    tmp_path: Path,
) -> None:
    """A plain-http source needs no CA certificates until a redirect leads it to TLS:
    there the server's certificate is checked as for an https source (refused when its
    CA is unknown, accepted with the CA configured)."""
    with _tls_behind_a_redirect(tmp_path) as (url, ca_file):
        with BoundedClient(url, timeout=10) as client, pytest.raises(FetchError) as refused:
            client.get(url)
        causes: list[BaseException] = []
        cause: BaseException | None = refused.value
        while cause is not None:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__
        assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
        with BoundedClient(url, timeout=10, verify=str(ca_file)) as client:
            assert client.get(url).content == b"ok"


# -- folder sources ----------------------------------------------------------------------


def test_a_folder_reads_no_link_out_of_it_nor_a_fifo_nor_an_oversized_file(
    tmp_path: Path, server: HostileServer
) -> None:
    from tests.servers.hostile_http import OK_CALENDAR

    (tmp_path / "app.env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    folder = tmp_path / "calendars"
    (folder / "team").mkdir(parents=True)
    (folder / "alice@example.org.ics").write_bytes(OK_CALENDAR)
    (folder / "x@y.ics").symlink_to(tmp_path / "app.env")
    (folder / "inside@example.org.ics").symlink_to(folder / "alice@example.org.ics")
    (folder / "team" / "loop.ics").symlink_to(folder / "team" / "loop.ics")
    os.mkfifo(folder / "pipe@example.org.ics")
    (folder / "big@example.org.ics").write_bytes(OK_CALENDAR + b" " * 5000)
    source = IcsSource(kind="ics", id="folder", path="calendars", max_bytes=4096)

    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        pages = list(IcsConnector(source, base_dir=tmp_path, now=_now()).sync(None))
    assert time.monotonic() - started < 10  # the FIFO did not block

    errors = {e.item: e.message for p in pages for e in p.errors}
    assert "outside the folder" in errors["x@y.ics"]
    assert "not a regular file" in errors["pipe@example.org.ics"]
    assert "max_bytes" in errors["big@example.org.ics"]
    assert "cannot read" in errors["team/loop.ics"]
    stored = {
        s for p in pages for s, size in zip(p.replaces_scopes, p.scope_sizes, strict=True) if size
    }
    assert stored == {"alice@example.org.ics", "inside@example.org.ics"}
    assert SECRET not in repr(pages)
    assert SECRET not in repr(logs)


def _now() -> datetime:
    return datetime.now(UTC)


# -- the other clients: Microsoft Graph (httpx) and Google (httplib2's interface) -----------


def test_graph_and_google_clients_have_a_total_deadline_and_a_size_cap(
    server: HostileServer,
) -> None:
    import httpx

    from mentorpulse.connectors.google.http import BoundedHttp as _BoundedHttp
    from mentorpulse.connectors.http import BoundedTransport

    def graph(path: str) -> None:
        bounded = BoundedClient(server.base, timeout=2, max_bytes=1_000_000)
        with httpx.Client(transport=BoundedTransport(bounded), follow_redirects=True) as client:
            client.get(f"{server.base}{path}")

    def google(path: str) -> None:
        bounded = BoundedClient(server.base, timeout=2, max_bytes=1_000_000)
        _BoundedHttp(bounded).request(f"{server.base}{path}")

    for send in (graph, google):
        started = time.monotonic()
        with pytest.raises((httpx.TimeoutException, TimeoutError)):
            send("/drip-headers")  # would take minutes at one byte a second
        assert time.monotonic() - started < 2 + 3
        with pytest.raises((httpx.TransportError, ConnectionError), match="max_bytes"):
            send("/endless")
        with pytest.raises((httpx.TransportError, ConnectionError), match="never contacted"):
            send("/redirect-metadata")


def test_an_environment_proxy_is_used_and_destinations_are_still_checked(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base)
    feed = "http://calendar.example.org/ok.ics"  # only the proxy needs to resolve it
    before = len(server.requests)
    with BoundedClient(feed, timeout=5) as client:
        answer = client.get(feed)
        assert answer.status == 200
        assert OK_UID.encode() in answer.content
        proxied = [
            r for r in server.requests[before:] if r.startswith("http://calendar.example.org")
        ]
        assert proxied  # asked through the proxy, as an absolute URL
        for inward in ("/redirect-metadata", "/redirect-loopback"):
            with pytest.raises(Refused):
                client.get(f"http://calendar.example.org{inward}")
    asked = server.requests[before:]
    assert not [r for r in asked if "169.254" in r or r.endswith("/secret")]

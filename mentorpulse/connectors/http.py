"""Bounded HTTP for feeds and servers: one deadline, a size cap and checked addresses.

Every byte a feed or a server sends is untrusted. The timeouts of httpx, niquests and
httplib2 apply per socket operation, so a server sending one byte every few seconds keeps
a request alive for ever; here every connect, read and write gets only what is left of one
deadline per request. Bodies are read in chunks and counted, compressed and decoded,
against ``max_bytes``. Each host (the configured one and every redirect hop) is resolved,
every address it resolves to is checked against an :class:`AddressPolicy`, and the
connection goes to a checked address, so a second lookup cannot answer otherwise.

Link-local and cloud metadata addresses are never contacted; loopback and private
addresses only when the configured host is one (an intranet server may be read, but a
public feed cannot redirect inward). Error messages name the URL without its
credentials and never quote what the server sent.

``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are honoured as other clients do. Through a
proxy, the proxy connects: the destination's addresses are still checked where this host
can resolve them (and an address literal always is), the proxy itself is not.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressClass = Literal["public", "private", "loopback", "forbidden"]

DEFAULT_MAX_BYTES = 50_000_000  # the largest real calendars we have seen are a few MB
DEFAULT_MAX_REDIRECTS = 5
CHUNK = 65_536
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NO_BODY = REDIRECTS | {304}

# Cloud metadata services: never contacted, whatever the configured host. Most are
# link-local (refused anyway); these are not all.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean …
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS IPv6
        "fd00:ec2::23",  # AWS EKS pod identity, IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # connecting to 0.x reaches this host
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """A request failed; the message is fit for logs and ``last_error`` as it is.

    ``cause`` names the network failure's kind (``ConnectError``), when it was one."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


class FetchTimeout(FetchError):
    """No complete answer within the deadline."""


class TooLarge(FetchError):
    """The body is larger than ``max_bytes``."""


class Refused(FetchError):
    """The policy forbids this request: an address, a scheme or too many redirects."""


def safe_url(url: str) -> str:
    """``url`` without userinfo and query string, fit for logs, messages and scopes."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


# -- addresses ---------------------------------------------------------------------------


def _embedded_v4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where it goes."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_class(address: IPAddress) -> AddressClass:
    """Where an address leads: the public internet, a private network, this host, or
    somewhere never to be contacted (link-local, metadata, multicast, unspecified)."""
    address = _embedded_v4(address)
    if (
        address in METADATA_ADDRESSES
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK)
    ):
        return "forbidden"
    if address.is_loopback:
        return "loopback"
    if address.is_reserved:
        return "forbidden"
    if not address.is_global:
        return "private"
    return "public"


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The address classes a source's requests may connect to."""

    allowed: frozenset[AddressClass]

    @classmethod
    def for_addresses(cls, configured: Iterable[IPAddress]) -> AddressPolicy:
        """Public always; loopback and private only when the configured host's addresses
        all are such (a host that also has public addresses is treated as public)."""
        classes = {address_class(a) for a in configured}
        if classes and classes <= {"loopback", "private"}:
            return cls(frozenset({"public", *classes}))
        return cls(frozenset({"public"}))

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise :class:`Refused` unless every address of ``host`` may be contacted."""
        for address in addresses:
            kind = address_class(address)
            named = host if host.strip("[]") == str(address) else f"{host} ({address})"
            if kind == "forbidden":
                raise Refused(
                    f"refused to connect to {named}: link-local, metadata and other special "
                    "addresses are never contacted"
                )
            if kind not in self.allowed:
                raise Refused(
                    f"refused to connect to {named}, a {kind} address: only a source "
                    f"whose configured host is {kind} may reach one"
                )


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """The addresses of ``host``, within ``timeout`` (the resolver's own can be longer)."""
    bare = host.strip("[]")
    try:
        return [ipaddress.ip_address(bare)]
    except ValueError:
        pass
    answer: list[object] = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            answer.append(exc)

    # A stuck lookup is left to finish on its own; the thread holds no resource of ours.
    worker = threading.Thread(target=lookup, name="mentorpulse-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    if not answer:
        raise FetchTimeout(f"looking up {bare} took longer than the deadline")
    result = answer[0]
    if isinstance(result, BaseException):
        raise FetchError(f"cannot resolve {bare} ({type(result).__name__})")
    assert isinstance(result, list)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in result:
        found.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    if not found:
        raise FetchError(f"{bare} has no address")
    return list(found)


# -- the deadline, in the network layer ------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, timeout: float | None = None, *, error: type[Exception]) -> float:
        """What is left of the deadline (at most ``timeout``); ``error`` once it passed."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise error(f"no complete answer within {self.seconds:g} s")
        return remaining if timeout is None else min(timeout, remaining)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the current request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _Backend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        left = self._backend.deadline.left(timeout, error=httpcore.ReadTimeout)
        return self._inner.read(max_bytes, left)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        left = self._backend.deadline.left(timeout, error=httpcore.WriteTimeout)
        self._inner.write(buffer, left)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._backend.deadline.left(timeout, error=httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, left), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """Resolves, checks every address against the policy, connects to a checked one."""

    def __init__(self, policy: AddressPolicy, proxy: tuple[str, int] | None = None) -> None:
        self.policy = policy
        self.proxy = proxy  # the configured proxy: contacted whatever its address
        self.deadline = _Deadline(0)
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port, self.deadline.left(timeout, error=httpcore.ConnectTimeout))
        if (host, port) != self.proxy:
            self.policy.check(host, addresses)
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(
                    str(address),
                    port,
                    timeout=self.deadline.left(timeout, error=httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _Stream(stream, self)
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise Refused("unix sockets are not used")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.deadline.left(error=httpcore.PoolTimeout)))


# -- bodies ------------------------------------------------------------------------------


class _Body:
    """Collects a body up to ``limit`` bytes, before and after its Content-Encoding."""

    def __init__(self, encoding: str, limit: int, url: str) -> None:
        self.limit = limit
        self.url = url
        self.raw = 0
        self.parts: list[bytes] = []
        self.size = 0
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            self._inflate = None
        elif codings in (["gzip"], ["x-gzip"], ["deflate"]):
            self._inflate = zlib.decompressobj(wbits=47)  # gzip or zlib, told by the header
        else:
            raise FetchError(f"{url} sent an unsupported Content-Encoding")

    def _too_large(self) -> TooLarge:
        return TooLarge(f"{self.url} sent more than the limit of {self.limit:,} bytes (max_bytes)")

    def add(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if self.raw > self.limit:
            raise self._too_large()
        if self._inflate is not None:
            chunk = self._inflated(chunk)
        self.size += len(chunk)
        if self.size > self.limit:
            raise self._too_large()
        self.parts.append(chunk)

    def _inflated(self, chunk: bytes) -> bytes:
        """Decompressed, never more than the room left plus one byte (a 1 KB chunk of a
        gzip bomb would otherwise inflate to 1 MB at once); gzip members one by one."""
        out: list[bytes] = []
        room = self.limit - self.size
        while chunk and room >= 0:
            assert self._inflate is not None
            try:
                piece = self._inflate.decompress(chunk, room + 1)
            except zlib.error:
                raise FetchError(f"{self.url} sent a body that does not decompress") from None
            out.append(piece)
            room -= len(piece)
            if room < 0 or self._inflate.unconsumed_tail:
                raise self._too_large()
            chunk = self._inflate.unused_data
            if chunk:  # the next gzip member
                self._inflate = zlib.decompressobj(wbits=47)
        return b"".join(out)

    @property
    def decoded(self) -> bool:
        return self._inflate is not None

    def bytes(self) -> bytes:
        return b"".join(self.parts)


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete answer: its status, headers, body (empty for redirects and 304) and URL."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: str
    reason: str = ""


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpcore.default_ssl_context()


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str  # IDNA-encoded, IPv6 without brackets
    port: int
    path: str
    username: str | None
    password: str | None

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _target(url: str) -> _Target:
    """The parts of an http(s) URL; :class:`Refused` for any other scheme."""
    shown = safe_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise Refused(f"{shown} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"{shown}: only http and https URLs can be fetched, not {scheme or '?'}:")
    if not host:
        raise Refused(f"{shown} names no host")
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return _Target(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=path,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _basic_auth(target: _Target) -> str | None:
    """The Authorization header for credentials written in the URL, as browsers send it."""
    if target.username is None:
        return None
    secret = f"{target.username}:{target.password or ''}".encode()
    return "Basic " + base64.b64encode(secret).decode("ascii")


def proxy_for(url: str) -> str | None:
    """The ``HTTP(S)_PROXY`` for ``url`` unless ``NO_PROXY`` names its host."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme.lower())
    host = (parts.hostname or "").lower()
    for entry in proxies.get("no", "").replace(" ", ",").split(","):
        name = entry.strip().lower().lstrip(".").split(":")[0]
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return None
    return proxy or None


def _proxy(url: str) -> tuple[httpcore.Proxy, tuple[str, int]]:
    """httpcore's proxy for a proxy URL (its credentials as Proxy-Authorization)."""
    target = _target(url)
    auth = (target.username, target.password or "") if target.username is not None else None
    plain = f"{target.scheme}://{target.host_header}/"
    return httpcore.Proxy(plain, auth=auth), (target.host, target.port)


class BoundedClient:
    """HTTP for one source: each request ends within ``timeout`` seconds, redirects
    included, reads at most ``max_bytes``, and connects only where the policy allows.

    The policy is fixed by the host of ``configured_url`` when the first request is made.
    """

    def __init__(
        self,
        configured_url: str,
        *,
        timeout: float,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        verify: bool | str = True,
        proxy: str | None = "environment",
    ) -> None:
        self.configured_url = configured_url
        # "environment": HTTP(S)_PROXY and NO_PROXY decide, for the configured URL.
        self.proxy = proxy_for(configured_url) if proxy == "environment" else proxy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._verify = verify
        self._backend: _Backend | None = None
        self._pool: httpcore.ConnectionPool | None = None
        # One request at a time: the deadline lives in the shared network backend.
        self._lock = threading.RLock()

    def _connections(self, deadline: _Deadline) -> tuple[_Backend, httpcore.ConnectionPool]:
        """The pool; on first use the policy, from the configured host's addresses."""
        if self._backend is None or self._pool is None:
            configured = _target(self.configured_url)
            proxy, proxy_origin = _proxy(self.proxy) if self.proxy else (None, None)
            addresses = self._addresses(configured, deadline)
            self._backend = _Backend(AddressPolicy.for_addresses(addresses), proxy_origin)
            # Loading the CA certificates costs ~0.06 s of CPU: a plain-http source with
            # the default verification leaves it to httpcore, which builds this same
            # default context if a redirect ever leads it to TLS.
            plain = configured.scheme == "http" and self._verify is True
            self._pool = httpcore.ConnectionPool(
                ssl_context=None if plain else _ssl_context(self._verify),
                proxy=proxy,
                max_connections=2,
                retries=0,
                network_backend=self._backend,
            )
        return self._backend, self._pool

    def _addresses(self, target: _Target, deadline: _Deadline) -> list[IPAddress]:
        """``target``'s addresses; through a proxy, none when only the proxy can tell."""
        left = deadline.left(error=httpcore.ConnectTimeout)
        try:
            return resolve(target.host, target.port, left)
        except FetchTimeout:
            raise
        except FetchError:
            if self.proxy is None:
                raise
            return []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool = self._backend = None

    def __enter__(self) -> BoundedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Fetched:
        """One exchange, redirects not followed; its own deadline."""
        with self._lock:
            return self._exchange(
                method, _target(url), headers or {}, body, _Deadline(self.timeout)
            )

    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url`` following at most ``max_redirects`` redirects, each hop checked;
        one deadline for all of them. Credentials in the URL go to its origin only."""
        with self._lock:
            return self._get(url, headers or {})

    def _get(self, url: str, headers: Mapping[str, str]) -> Fetched:
        deadline = _Deadline(self.timeout)
        first = _target(url)
        target = first
        credentials = _basic_auth(first)
        for _hop in range(self.max_redirects + 1):
            sent = dict(headers)
            if target.origin != first.origin:
                sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
            elif credentials:
                sent.setdefault("Authorization", credentials)
            answer = self._exchange("GET", target, sent, None, deadline)
            location = answer.headers.get("Location")
            if answer.status not in REDIRECTS or not location:
                return answer
            following = _target(urljoin(answer.url, location))
            if target.scheme == "https" and following.scheme == "http":
                raise Refused(f"{safe_url(answer.url)} redirected from https to plain http")
            target = following
        raise Refused(f"{safe_url(url)} redirected more than {self.max_redirects} times")

    def _exchange(
        self,
        method: str,
        target: _Target,
        headers: Mapping[str, str],
        body: bytes | None,
        deadline: _Deadline,
    ) -> Fetched:
        shown = f"{target.scheme}://{target.host_header}{target.path.split('?')[0]}"
        try:
            return self._send(shown, method, target, headers=headers, body=body, deadline=deadline)
        except FetchError:
            raise
        except httpcore.TimeoutException:
            raise FetchTimeout(
                f"{shown} sent no complete answer within {deadline.seconds:g} s"
            ) from None
        except (
            httpcore.ConnectError,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.ProxyError,
            httpcore.UnsupportedProtocol,
            UnicodeError,  # a header that HTTP cannot carry
        ) as exc:
            # The library's message may quote what the server sent: name the kind only.
            kind = type(exc).__name__
            raise FetchError(f"cannot fetch {shown} ({kind})", cause=kind) from None

    def _send(
        self,
        shown: str,
        method: str,
        target: _Target,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        deadline: _Deadline,
    ) -> Fetched:
        backend, pool = self._connections(deadline)
        backend.deadline = deadline
        if self.proxy is not None:  # the proxy connects: check what this host can see
            backend.policy.check(target.host, self._addresses(target, deadline))
        sent = {"Host": target.host_header, "Accept-Encoding": "gzip, deflate"}
        if credentials := _basic_auth(target):
            sent["Authorization"] = credentials
        sent.update(headers)
        url = httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode(),
            port=target.port,
            target=target.path.encode(),
        )
        left = deadline.left(error=httpcore.PoolTimeout)
        timeouts = {"connect": left, "read": left, "write": left, "pool": left}
        with pool.stream(
            method.encode(),
            url,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()],
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            answer_headers = httpx.Headers(response.headers)
            length = answer_headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self.max_bytes:
                raise TooLarge(
                    f"{shown} announced {int(length):,} bytes, more than the limit of "
                    f"{self.max_bytes:,} (max_bytes)"
                )
            collected = _Body(answer_headers.get("Content-Encoding", ""), self.max_bytes, shown)
            if response.status not in _NO_BODY and method != "HEAD":
                for chunk in response.iter_stream():
                    collected.add(chunk)
                    deadline.left(error=httpcore.ReadTimeout)
            reason = response.extensions.get("reason_phrase", b"")
        if collected.decoded:  # the body is given decoded: no layer may decode it again
            del answer_headers["Content-Encoding"]
            answer_headers.pop("Content-Length", None)
        return Fetched(
            status=response.status,
            headers=answer_headers,
            content=collected.bytes(),
            url=f"{target.scheme}://{target.host_header}{target.path}",
            reason=reason.decode("latin-1", "replace") if isinstance(reason, bytes) else "",
        )


class BoundedTransport(httpx.BaseTransport):
    """An httpx transport over :class:`BoundedClient`, for connectors built on httpx:
    the deadline, the size cap and the address policy hold for every request sent."""

    def __init__(self, client: BoundedClient) -> None:
        self._client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("accept-encoding", "host")
        }
        try:
            answer = self._client.request(
                request.method, str(request.url), headers=headers, body=body or None
            )
        except FetchTimeout as exc:
            raise httpx.TimeoutException(str(exc), request=request) from None
        except FetchError as exc:
            raise BoundedTransportError(str(exc), request=request) from None
        return httpx.Response(
            answer.status,
            headers=answer.headers.multi_items(),
            content=answer.content,
            request=request,
        )

    def close(self) -> None:
        self._client.close()


class BoundedTransportError(httpx.TransportError):
    """A :class:`FetchError` seen through httpx: its message is safe to show."""

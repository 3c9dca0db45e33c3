"""The HTTP service of a long-running process: /healthz, /readyz, /metrics, and the
dashboard (:mod:`mentorpulse.service.dashboard`) when ``service.dashboard`` is served.

One Starlette app (:func:`create_app`, which later pages add routes to) served by uvicorn
in a background thread of the process, for as long as :func:`serving` is entered. The
process tells it how it is doing through :class:`Health`. Uvicorn installs no signal
handler: the process's own (SIGTERM, SIGHUP) stay in charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mentorpulse import stages
from mentorpulse.config.schema import HttpConfig
from mentorpulse.errors import DatabaseUnavailable, UserError
from mentorpulse.service import metrics
from mentorpulse.service.answers import answer_routes
from mentorpulse.service.dashboard import dashboard_routes
from mentorpulse.storage.migrate import revision_state

log = structlog.get_logger(__name__)

STUCK_AFTER = timedelta(seconds=60)  # no heartbeat for this long: /healthz says 503
READY_TIMEOUT = 5.0  # seconds the readiness query may take before the database counts as down
START_TIMEOUT = 10.0  # seconds for uvicorn to start serving


class Health:
    """What the process tells its HTTP service: that its loop is alive (:meth:`beat`,
    at least every :data:`STUCK_AFTER`), and how its last config (re)load went."""

    def __init__(
        self,
        loaded_at: datetime,
        *,
        stuck_after: timedelta = STUCK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``loaded_at``: when the config in force was loaded (the process's start)."""
        self.stuck_after = stuck_after.total_seconds()
        self._clock = clock
        self._last_beat = clock()
        self.reload_result(True, loaded_at)

    def beat(self) -> None:
        """The process loop is alive."""
        self._last_beat = self._clock()

    def silent_for(self) -> float:
        """Seconds since the last heartbeat."""
        return self._clock() - self._last_beat

    def alive(self) -> bool:
        return self.silent_for() <= self.stuck_after

    def reload_result(self, ok: bool, at: datetime) -> None:
        """A reload (SIGHUP) succeeded, or failed and the old config stays in force."""
        metrics.observe_reload(ok=ok, at=at)


def readiness(ctx: stages.Context | None) -> str | None:
    """Why this process cannot do its work now (None: it can): no config, a database
    that does not answer, or a schema other than this version's. Never a password."""
    if ctx is None:
        return "no config loaded"
    try:
        current, head = revision_state(ctx.engine)
    except DatabaseUnavailable as exc:
        return f"database unreachable: {exc.message}"
    except Exception as exc:  # a dropped connection, a server shutting down …
        return f"database unreachable ({type(exc).__name__})"
    if current != head:
        state = f"schema at {current}" if current else "no schema"
        return f"{state}, this version needs {head}: run `mentorpulse db upgrade`"
    return None


def create_app(
    ctx: stages.Context, health: Health, *, routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """The process's web app: health, readiness, metrics and the attendance-answer pages,
    then ``routes``."""
    served = metrics.registry(ctx)
    checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")

    async def healthz(_request: Request) -> Response:
        if health.alive():
            return PlainTextResponse("ok\n")
        return PlainTextResponse(f"stuck: no heartbeat for {health.silent_for():.0f} s\n", 503)

    async def readyz(_request: Request) -> Response:
        try:
            reason = await asyncio.wait_for(
                asyncio.wrap_future(checks.submit(readiness, ctx)), READY_TIMEOUT
            )
        except TimeoutError:
            reason = f"database unreachable: no answer within {READY_TIMEOUT:.0f} s"
        if reason is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {reason}\n", 503)

    async def metrics_page(_request: Request) -> Response:
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.exposition, served)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    base = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_page),
        *answer_routes(ctx),
    ]
    app = Starlette(routes=[*base, *dashboard_routes(ctx), *routes])
    app.state.readiness_checks = checks
    return app


class Server:
    """The HTTP service running in its background thread."""

    def __init__(self, app: Starlette, listener: socket.socket) -> None:
        self.app = app
        self.host, self.port = listener.getsockname()[:2]
        # proxy_headers=False: the peer address stays the real peer, so the dashboard's
        # trusted_proxies is checked against who actually connected, never against an
        # X-Forwarded-For a client wrote itself.
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
        )
        self._uvicorn = _QuietServer(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [listener]}, name="http", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._uvicorn.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not self._uvicorn.started:
            self.stop()
            raise UserError(f"service.http: the HTTP service did not start on {self.url}")

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=START_TIMEOUT)
        self.app.state.readiness_checks.shutdown(wait=False, cancel_futures=True)


def _listen(config: HttpConfig) -> socket.socket:
    """The service's listening socket, or one line naming the setting to change."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((config.host, config.port))
    except OSError as exc:
        listener.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise UserError(
            f"service.http: cannot listen on {config.host}:{config.port} ({why}): "
            "set service.http.port to a free port, or service.http.enabled: false",
            code=2,
        ) from None
    listener.listen(64)
    return listener


@contextlib.contextmanager
def serving(
    ctx: stages.Context, health: Health, *, routes: Sequence[BaseRoute] = ()
) -> Iterator[Server | None]:
    """Serve ``service.http`` while the block runs (None: ``enabled: false``)."""
    config = ctx.config.service.http
    if not config.enabled:
        yield None
        return
    server = Server(create_app(ctx, health, routes=routes), _listen(config))
    server.start()
    log.info("http_serving", url=server.url)
    try:
        yield server
    finally:
        server.stop()


class _QuietServer(uvicorn.Server):
    """uvicorn's server without its signal handlers (the process keeps its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

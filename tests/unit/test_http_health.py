"""What /healthz and /readyz answer, and why: each readiness reason on a real database,
the heartbeat's bound on a frozen clock, a port already taken."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mentorpulse import stages
from mentorpulse.config.loader import load_config
from mentorpulse.config.roster import load_roster
from mentorpulse.config.schema import HttpConfig
from mentorpulse.errors import UserError
from mentorpulse.sample import write_demo
from mentorpulse.service import http
from mentorpulse.service.metrics import source_state
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.migrate import HEAD_REVISION, upgrade
from mentorpulse.storage.models import Source

NOW = datetime(2026, 11, 23, 9, tzinfo=UTC)
NEEDS = f"this version needs {HEAD_REVISION}: run `mentorpulse db upgrade`"


def _context(
    folder: Path, database: str | None = None, *, migrate_to: str | None = "head"
) -> stages.Context:
    """The demo's config and roster on ``database`` (default: its SQLite file), the
    schema brought to ``migrate_to`` (None: left empty)."""
    write_demo(folder, today=date(2026, 11, 23))
    path = folder / "mentorpulse.yaml"
    if database is not None:
        text = path.read_text().replace(
            "database: sqlite:///mentorpulse.db", f"database: {database}"
        )
        path.write_text(text)
    config = load_config(path)
    roster = load_roster(config.resolve(config.roster.path), config)
    engine = make_engine(config.database, config.base_dir)
    if migrate_to is not None:
        upgrade(engine, migrate_to)
    return stages.Context(config, roster, engine, session_factory(engine), lambda: NOW, path)


def test_ready_on_a_current_schema(tmp_path: Path) -> None:
    assert http.readiness(_context(tmp_path)) is None


def test_not_ready_without_a_config() -> None:
    assert http.readiness(None) == "no config loaded"


def test_not_ready_on_an_empty_database(tmp_path: Path) -> None:
    assert http.readiness(_context(tmp_path, migrate_to=None)) == f"no schema, {NEEDS}"


def test_not_ready_on_a_schema_behind_this_version(tmp_path: Path) -> None:
    ctx = _context(tmp_path, migrate_to="job_run_errors")
    assert http.readiness(ctx) == f"schema at job_run_errors, {NEEDS}"


def test_not_ready_when_the_database_does_not_answer_and_no_password_is_shown(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://mentorpulse:hunter2-secret@127.0.0.1:{port}/mentorpulse"
    reason = http.readiness(_context(tmp_path, url, migrate_to=None))
    assert reason is not None
    assert reason.startswith(
        f"database unreachable: database postgresql+psycopg://mentorpulse:***@127.0.0.1:{port}/"
        "mentorpulse: cannot connect: "
    ), reason
    assert "hunter2" not in reason


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _on_a_free_port(ctx: stages.Context, **http_config: object) -> None:
    service = ctx.config.service.model_copy(
        update={"http": HttpConfig.model_validate({"port": 0, **http_config})}
    )
    ctx.config = ctx.config.model_copy(update={"service": service})


def test_readyz_and_healthz_answer_with_the_reason_and_the_heartbeat(tmp_path: Path) -> None:
    ctx = _context(tmp_path, migrate_to="job_run_errors")
    _on_a_free_port(ctx)
    ticks = [100.0]
    health = http.Health(NOW, stuck_after=timedelta(seconds=30), clock=lambda: ticks[0])
    with http.serving(ctx, health) as server:
        assert server is not None
        assert _get(f"{server.url}/readyz") == (
            503,
            f"not ready: schema at job_run_errors, {NEEDS}\n",
        )
        assert _get(f"{server.url}/healthz") == (200, "ok\n")
        ticks[0] += 30
        assert _get(f"{server.url}/healthz")[0] == 200  # at the bound: still alive
        ticks[0] += 15
        assert _get(f"{server.url}/healthz") == (503, "stuck: no heartbeat for 45 s\n")
        health.beat()
        assert _get(f"{server.url}/healthz")[0] == 200
        upgrade(ctx.engine)
        assert _get(f"{server.url}/readyz") == (200, "ready\n")
        url = server.url
    with pytest.raises(urllib.error.URLError):
        _get(f"{url}/healthz")  # stopped with its block


def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ctx.config.model_copy(
            update={
                "service": ctx.config.service.model_copy(update={"http": HttpConfig(port=port)})
            }
        )
        ctx.config = config
        with pytest.raises(UserError) as refused, http.serving(ctx, http.Health(NOW)):
            pass
    assert refused.value.message == (
        f"service.http: cannot listen on 127.0.0.1:{port} (address already in use): "
        "set service.http.port to a free port, or service.http.enabled: false"
    )


def test_serving_is_off_when_disabled(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.config = ctx.config.model_copy(
        update={
            "service": ctx.config.service.model_copy(update={"http": HttpConfig(enabled=False)})
        }
    )
    with http.serving(ctx, http.Health(NOW)) as server:
        assert server is None


@pytest.mark.parametrize(
    ("reauth", "resync", "stale", "state"),
    [
        (NOW, NOW, True, "needs_reauth"),
        (None, NOW, True, "resyncing"),
        (None, None, True, "stale"),
        (None, None, False, "ok"),
    ],
)
def test_a_source_is_in_one_state_waiting_for_credentials_first(
    reauth: datetime | None, resync: datetime | None, stale: bool, state: str
) -> None:
    row = Source(id="s", kind="ics", needs_reauth_at=reauth, resync_started_at=resync)
    assert source_state(row, stale=stale) == state

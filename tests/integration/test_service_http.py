"""The daemon's HTTP service, driven from outside as an orchestrator and Prometheus would:
`/healthz`, `/readyz` (also while its database is gone), `/metrics` after a sync, and
SIGHUP with a broken config, then a fixed one."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mentorpulse.sample import write_demo
from mentorpulse.storage.engine import make_engine
from mentorpulse.storage.migrate import HEAD_REVISION, upgrade
from mentorpulse.storage.models import Event, Finding, OutboxMessage
from tests.conftest import _pg_admin_url
from tests.integration.test_daemon import WAIT
from tests.service_support import RunProcess

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SOURCE = "demo-calendars"
PASSWORD = "not-for-logs-7c1d"  # PostgreSQL trusts loopback here: it is sent, never checked


def _until(probe: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Poll ``probe`` until it returns something, or fail saying what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None and found is not False:
            return found
        time.sleep(0.2)
    pytest.fail(f"within {timeout:.0f} s: {what}")


def _config(folder: Path, database: str, *, every: str = "15m") -> Path:
    """The demo organisation on ``database``, its HTTP service on a free port, every job
    run ``every``."""
    write_demo(folder, today=datetime.now(UTC).date())
    path = folder / "mentorpulse.yaml"
    yaml = re.sub(r"(?m)^database:.*$", f"database: {database}", path.read_text(), count=1)
    yaml = yaml.replace(
        "    window_future: 100d\n", f"    window_future: 100d\n    poll_every: {every}\n"
    )
    yaml = yaml.replace("\nnotify:\n", f"\nnotify:\n  every: {every}\n", 1)
    # The demo's service.http (its public_url) gains a free port; the text stays the
    # demo's, which the reload test edits line by line.
    served = "\nservice:\n  http:\n"
    assert served in yaml
    yaml = yaml.replace(served, served + "    port: 0  # any free port: the log names it\n", 1)
    path.write_text(yaml + f"schedule:\n  evaluate_every: {every}\n")
    return path


def _url(daemon: RunProcess) -> str:
    def served() -> str | None:
        for line in daemon.lines:
            if '"http_serving"' in line:
                return str(json.loads(line)["url"])
        assert daemon.process.poll() is None, daemon.log
        return None

    return _until(served, "the daemon logs where it serves")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _scrape(base: str) -> Samples:
    status, body = _get(f"{base}/metrics")
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def _db(database: str) -> Session:
    url = make_url(database)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return Session(create_engine(url))


def _scope(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset({**labels, "scope": "database"}.items())


def _database_figures(database: str) -> tuple[int, dict[tuple[str, str], int], dict[str, int]]:
    """The database's own count of the source's events, findings and outbox rows."""
    with _db(database) as db:
        events = db.scalar(select(func.count()).where(Event.source_id == SOURCE)) or 0
        findings = {
            (rule, state): n
            for rule, state, n in db.execute(
                select(Finding.rule_id, Finding.state, func.count()).group_by(
                    Finding.rule_id, Finding.state
                )
            )
        }
        outbox = dict(
            db.execute(
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            ).all()
        )
    return events, findings, outbox


def _exported(
    samples: Samples,
) -> tuple[float | None, dict[tuple[str, str], float], dict[str, float]]:
    """The same three figures as /metrics gives them (outbox statuses at 0 left out)."""
    events = _value(samples, "mentorpulse_source_events", source=SOURCE, scope="database")
    findings = {
        (dict(labels)["rule"], dict(labels)["state"]): value
        for labels, value in _of(samples, "mentorpulse_findings").items()
    }
    outbox = {
        dict(labels)["status"]: value
        for labels, value in _of(samples, "mentorpulse_outbox_messages").items()
        if value
    }
    return events, findings, outbox


def test_a_daemon_serves_health_readiness_and_metrics_after_a_sync(
    database_url: str, tmp_path: Path, daemons: list[RunProcess]
) -> None:
    started = time.time()
    daemon = RunProcess(_config(tmp_path, database_url, every="2s"))
    daemons.append(daemon)
    base = _url(daemon)

    def agreed() -> Samples | None:
        """A scrape after the daemon synced, judged and queued mail, whose database-wide
        figures are the database's (jobs keep running: read until both agree)."""
        samples = _scrape(base)
        figures = _database_figures(database_url)
        if not figures[2] or _exported(samples) != figures:
            return None
        # The demo's attendance checks may queue mail before the first evaluation is done.
        for stage in ("sync", "evaluate", "notify"):
            labels = {"stage": stage, "result": "ok"}
            if _value(samples, "mentorpulse_job_duration_seconds_count", **labels) is None:
                return None
        return samples

    samples = _until(agreed, "mail queued, and /metrics agreeing with the database")
    assert _get(f"{base}/healthz") == (200, "ok\n")
    assert _get(f"{base}/readyz") == (200, "ready\n")

    # Per process: what this daemon did.
    assert _value(samples, "mentorpulse_sync_pages_total", source=SOURCE) >= 1
    stored = _value(samples, "mentorpulse_sync_events_stored_total", source=SOURCE)
    assert stored == _value(samples, "mentorpulse_source_events", source=SOURCE, scope="database")
    assert stored > 100  # the demo's 262 events, stored by this daemon's first sync
    assert _value(samples, "mentorpulse_sync_item_errors_total", source=SOURCE) == 0
    for stage in ("sync", "evaluate", "notify"):
        runs = _value(samples, "mentorpulse_job_duration_seconds_count", stage=stage, result="ok")
        assert runs >= 1, stage
        inf = _value(
            samples, "mentorpulse_job_duration_seconds_bucket", stage=stage, result="ok", le="+Inf"
        )
        assert inf == runs
    assert _value(samples, "mentorpulse_config_last_reload_success") == 1
    loaded = _value(samples, "mentorpulse_config_last_reload_success_timestamp_seconds")
    assert started <= loaded <= time.time()

    # Database-wide, read at the scrape (equal to the database's own figures, above).
    assert _value(samples, "mentorpulse_database_read_success") == 1
    assert any(state == "firing" for _rule, state in _exported(samples)[1]), "demo pairs lapse"
    failures = _of(samples, "mentorpulse_outbox_send_failures")
    assert failures == {
        _scope(kind=kind): 0.0 for kind in ("retrying", "permanent", "delivery_unknown")
    }  # the demo writes its mail to files: nothing fails
    assert _value(samples, "mentorpulse_outbox_oldest_queued_age_seconds", scope="database") >= 0
    last = _value(
        samples,
        "mentorpulse_source_last_success_timestamp_seconds",
        source=SOURCE,
        scope="database",
    )
    assert started <= last <= time.time()
    lag = _value(samples, "mentorpulse_source_sync_lag_seconds", source=SOURCE, scope="database")
    assert 0 <= lag <= time.time() - started
    failed = _value(
        samples, "mentorpulse_source_consecutive_failures", source=SOURCE, scope="database"
    )
    assert failed == 0
    assert _of(samples, "mentorpulse_source_state") == {
        _scope(source=SOURCE, state=state): float(state == "ok")
        for state in ("ok", "stale", "resyncing", "needs_reauth")
    }
    assert _value(samples, "mentorpulse_workers_alive", scope="database") == 1
    assert "Traceback" not in daemon.log


@pytest.mark.postgres
def test_readyz_says_503_while_the_database_is_gone_then_200_again(
    tmp_path: Path, daemons: list[RunProcess]
) -> None:
    """A scratch database of its own, dropped under the running daemon, then made again."""
    admin = make_url(_pg_admin_url()).set(drivername="postgresql+psycopg")
    name = f"mentorpulse_test_http_{uuid.uuid4().hex[:10]}"
    server = create_engine(admin, isolation_level="AUTOCOMMIT")
    database = admin.set(database=name, password=PASSWORD).render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        daemon = RunProcess(_config(tmp_path, database))
        daemons.append(daemon)
        base = _url(daemon)
        _until(lambda: _get(f"{base}/readyz") == (200, "ready\n"), "ready on a live database")

        with server.connect() as connection:  # FORCE ends the daemon's connections too
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        _status, body = _until(
            lambda: (reply := _get(f"{base}/readyz"))[0] == 503 and reply,
            "readyz says 503 once the database is gone",
        )
        assert body.startswith("not ready: database unreachable: "), body
        assert f'database "{name}" does not exist' in body, body
        assert _get(f"{base}/healthz")[0] == 200, "the process itself is fine"
        assert _scrape(base)[("mentorpulse_database_read_success", frozenset())] == 0

        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        _until(
            lambda: (
                _get(f"{base}/readyz")
                == (
                    503,
                    f"not ready: no schema, this version needs {HEAD_REVISION}: "
                    "run `mentorpulse db upgrade`\n",
                )
            ),
            "readyz names the missing schema",
        )
        engine = make_engine(database)
        upgrade(engine)
        engine.dispose()
        _until(lambda: _get(f"{base}/readyz") == (200, "ready\n"), "ready again")
        daemon.stop()
        assert PASSWORD not in daemon.log
        # The jobs that ran while it was gone logged their failure; nothing else did.
        traced = {json.loads(line)["event"] for line in daemon.lines if "Traceback" in line}
        assert traced <= {"job_run_not_recorded", "daemon_lease_not_renewed"}, daemon.log
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def test_sighup_refuses_a_broken_config_and_applies_a_fixed_one(
    database_url: str, tmp_path: Path, daemons: list[RunProcess]
) -> None:
    config = _config(tmp_path, database_url, every="1s")
    good = config.read_text()
    daemon = RunProcess(config)
    daemons.append(daemon)
    base = _url(daemon)

    def syncs() -> float:
        value = _value(
            _scrape(base), "mentorpulse_job_duration_seconds_count", stage="sync", result="ok"
        )
        return value or 0.0

    _until(lambda: syncs() >= 1, "a first sync")

    lines = good.splitlines(keepends=True)
    lines.insert(4, "@broken\n")  # line 5: a character no YAML token starts with
    config.write_text("".join(lines))
    daemon.process.send_signal(signal.SIGHUP)
    refused = _until(
        lambda: next((line for line in daemon.lines if '"config_reload_failed"' in line), None),
        "the broken config is refused in the log",
    )
    assert f"{config}:5:1: YAML syntax error" in json.loads(refused)["error"]
    assert _value(_scrape(base), "mentorpulse_config_last_reload_success") == 0
    before = syncs()
    _until(lambda: syncs() >= before + 2, "the old config's source still syncs")
    assert _get(f"{base}/readyz") == (200, "ready\n")  # the old config is still in force

    second = "  - id: second-calendars\n    kind: ics\n    path: calendars\n    poll_every: 1s\n"
    fixed = good.replace("roster:\n", second + "roster:\n", 1)
    fixed = fixed.replace("\nnotify:\n  every: 1s\n", "\nnotify:\n  every: 1h\n", 1)
    config.write_text(fixed)
    daemon.process.send_signal(signal.SIGHUP)
    reloaded = _until(
        lambda: next((line for line in daemon.lines if '"config_reloaded"' in line), None),
        "the fixed config is reloaded",
    )
    if database_url.startswith("sqlite"):  # the embedded ticker's jobs follow the config
        assert json.loads(reloaded)["jobs_added"] == ["sync:second-calendars"]
        assert json.loads(reloaded)["jobs_rescheduled"] == ["notify"]
    # (a pool worker's next tick plans from the config in force: nothing to reschedule)
    samples = _until(
        lambda: (
            (s := _scrape(base))
            and _value(s, "mentorpulse_sync_pages_total", source="second-calendars")
            and s
        ),
        "the new source syncs",
    )
    assert _value(samples, "mentorpulse_config_last_reload_success") == 1
    assert (
        _value(
            samples,
            "mentorpulse_source_state",
            source="second-calendars",
            state="ok",
            scope="database",
        )
        == 1
    )
    daemon.stop()
    assert daemon.process.returncode == 0, daemon.log
    assert "Traceback" not in daemon.log

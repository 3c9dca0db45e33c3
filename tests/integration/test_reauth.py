"""Refused credentials stop a source until the operator acts (Home Assistant's reconnect
path): marked needs_reauth, logged once, never retried on a timer, shown by `status` with
the next step, cleared by a changed config or a successful `mentorpulse auth …`; an
operator may still retry by hand with `sync --once --source ID`.

Through the real sync stage and store, on SQLite and PostgreSQL, against Radicale (a
wrong password) and the Graph fake (a revoked sign-in).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from caldav.davclient import DAVClient
from structlog.testing import capture_logs
from typer.testing import CliRunner

from mentorpulse import stages
from mentorpulse.cli import app
from mentorpulse.storage.models import Source
from tests.fakes.google_api import (
    GoogleFake,
    RunningFake,
    consent_in_browser,
    serve,
    write_installed_client,
)
from tests.fakes.graph_api import GraphFake
from tests.integration.test_caldav import write_config
from tests.integration.test_microsoft import write_deployment
from tests.servers import caldav as servers

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
MENTOR = "ana@example.org"
MENTEE = "ben@example.org"
PASSWORD_ENV = "MP_TEST_CALDAV_PASSWORD"  # what the CalDAV suite's config names


class Clock:
    """The stage's clock, moved by hand: hours pass without a sleep."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def radicale(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[servers.CaldavServer, Path]]:
    folder = tmp_path_factory.mktemp("radicale")
    with servers.radicale(folder) as running:
        yield running, folder


def refused_logins(folder: Path) -> int:
    """How many requests Radicale refused for a wrong password (its log says each)."""
    return (folder / "radicale.log").read_text(errors="replace").count("Failed login attempt")


def write_caldav_config(folder: Path, server: servers.CaldavServer, database_url: str) -> Path:
    """The CalDAV suite's config, over a calendar of this test's own."""
    client = DAVClient(url=server.url, username=server.username, password=server.password)
    calendar = client.principal().make_calendar(name=f"reauth-{folder.name}")
    return write_config(folder, server, database_url, [calendar])


def source_row(ctx: stages.Context, source_id: str) -> Source:
    with ctx.db() as db:
        row = db.get_one(Source, source_id)
        db.expunge(row)
        return row


def daemon_sync(ctx: stages.Context, source_id: str) -> stages.SourceResult:
    """One poll of the daemon's job for the source, as runner.py schedules it."""
    [result] = stages.sync_sources(ctx, [source_id], respect_backoff=True)
    return result


def test_a_wrong_caldav_password_stops_the_source_until_the_config_is_fixed(
    radicale: tuple[servers.CaldavServer, Path],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, log_folder = radicale
    config = write_caldav_config(tmp_path, server, database_url)
    monkeypatch.setenv(PASSWORD_ENV, "not the password")
    clock = Clock()
    ctx = stages.Context.open(config, clock=clock)
    runner = CliRunner()
    try:
        with capture_logs() as logs:
            first = daemon_sync(ctx, "dav")
            assert not first.ok
            assert first.needs_reauth
            assert "fix the credentials of source dav in mentorpulse.yaml" in (first.error or "")
            assert "not the password" not in (first.error or "")
            row = source_row(ctx, "dav")
            assert row.needs_reauth_at == NOW
            assert row.next_attempt_at is None  # no timer retries it
            tried = refused_logins(log_folder)
            assert tried >= 1

            status = runner.invoke(app, ["status", "--config", str(config)])
            assert status.exit_code == 1, status.output
            assert "needs_reauth" in status.output
            assert "fix the credentials of source dav in mentorpulse.yaml" in status.output
            assert "not the password" not in status.output
            listed = runner.invoke(app, ["status", "--format", "json", "--config", str(config)])
            assert listed.exit_code == 1
            [dav] = json.loads(listed.stdout)["sources"]
            assert dav["needs_reauth_at"] is not None
            assert dav["state"].startswith("needs_reauth: fix the credentials")

            # Hours later the daemon polls again: it says why it waits, and asks nothing.
            clock.now = NOW + timedelta(hours=6)
            later = daemon_sync(ctx, "dav")
            assert later.needs_reauth
            assert not later.ok
            assert "`mentorpulse sync --once --source dav`" in (later.error or "")
            # `sync --once` over every source skips it too, and says why.
            every = runner.invoke(app, ["sync", "--once", "--config", str(config)])
            assert every.exit_code == 1
            assert "needs_reauth" in every.output
            assert refused_logins(log_folder) == tried

            # Named by hand, it is tried (the env var may hold a new password).
            by_hand = runner.invoke(app, ["sync", "--once", "-s", "dav", "--config", str(config)])
            assert by_hand.exit_code == 1
            assert refused_logins(log_folder) > tried
            assert source_row(ctx, "dav").needs_reauth_at == NOW  # still refused
        assert [e["event"] for e in logs].count("source_auth_failed") == 1
    finally:
        ctx.engine.dispose()

    # The operator fixes the password: the changed config clears the mark at the next poll.
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    ctx = stages.Context.open(config, clock=clock)
    try:
        with capture_logs() as logs:
            fixed = daemon_sync(ctx, "dav")
        assert fixed.ok, fixed.error
        assert not fixed.needs_reauth
        row = source_row(ctx, "dav")
        assert row.needs_reauth_at is None
        assert row.healthy
        assert any(
            e["event"] == "source_reauth_cleared" and e["reason"] == "config_changed" for e in logs
        )
        status = runner.invoke(app, ["status", "--config", str(config)])
        assert "needs_reauth" not in status.output
        assert status.exit_code == 0, status.output
    finally:
        ctx.engine.dispose()


# ------------------------------------------------------------------ a revoked sign-in


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphFake]:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    fake = GraphFake(tmp_path)
    fake.mailbox(MENTOR)
    fake.mailbox(MENTEE)
    yield from fake.serve()


def test_a_revoked_microsoft_sign_in_waits_for_auth_microsoft(
    graph: GraphFake, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentorpulse.credentials import generate_key

    monkeypatch.setenv("MENTORPULSE_SECRET_KEY", generate_key())
    graph.auto_approve = MENTOR
    config = write_deployment(
        tmp_path, graph, database_url, device_code=True, pair=(MENTOR, MENTEE)
    )
    runner = CliRunner()
    sign_in = ["auth", "microsoft", "--source", "m365", "--config", str(config)]
    assert runner.invoke(app, sign_in).exit_code == 0
    clock = Clock()
    ctx = stages.Context.open(config, clock=clock)
    try:
        assert daemon_sync(ctx, "m365").ok
        issued = dict(graph.refresh_tokens)
        graph.refresh_tokens.clear()  # the tenant revoked the sign-in: invalid_grant

        refused = daemon_sync(ctx, "m365")
        assert refused.needs_reauth
        assert not refused.ok
        assert "invalid_grant" in (refused.error or "")
        assert "sign in again with `mentorpulse auth microsoft --source m365`" in (
            refused.error or ""
        )
        status = runner.invoke(app, ["status", "--config", str(config)])
        assert status.exit_code == 1
        assert "`mentorpulse auth microsoft --source m365`" in status.output

        asked = len(graph.log)
        clock.now = NOW + timedelta(days=1)
        assert daemon_sync(ctx, "m365").needs_reauth
        assert len(graph.log) == asked  # not a request more

        # Mended on the provider's side, config unchanged: a retry by hand gets through.
        graph.refresh_tokens.update(issued)
        by_hand = runner.invoke(app, ["sync", "--once", "-s", "m365", "--config", str(config)])
        assert by_hand.exit_code == 0, by_hand.output
        assert len(graph.log) > asked
        assert source_row(ctx, "m365").needs_reauth_at is None
        graph.refresh_tokens.clear()  # revoked once more: this time the operator signs in
        assert daemon_sync(ctx, "m365").needs_reauth

        again = runner.invoke(app, sign_in)
        assert again.exit_code == 0, again.output
        assert "m365 no longer needs_reauth" in again.output
        assert source_row(ctx, "m365").needs_reauth_at is None
        synced = daemon_sync(ctx, "m365")
        assert synced.ok, synced.error
        assert runner.invoke(app, ["status", "--config", str(config)]).exit_code == 0
    finally:
        ctx.engine.dispose()


@pytest.fixture
def google() -> Iterator[RunningFake]:
    yield from serve(GoogleFake())


def test_a_revoked_google_sign_in_waits_for_auth_google(
    google: RunningFake, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentorpulse.connectors.google import auth as google_module
    from mentorpulse.credentials import generate_key

    # Tokens cached by the process for another test's fake (another port) stay out.
    monkeypatch.setattr(google_module, "_CREDENTIALS", {})
    consent_in_browser()
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake speaks plain http
    monkeypatch.setenv("MENTORPULSE_SECRET_KEY", generate_key())
    write_installed_client(tmp_path, google.url)
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2026-09-01\n"
    )
    config = tmp_path / "mentorpulse.yaml"
    source = {
        "id": "gw",
        "kind": "google",
        "users": [MENTEE],
        "oauth_client": "client.json",
        "token_store": "secrets/tokens.json",
        "api_root": google.url,
    }
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "database": database_url,
                "sources": [source],
                "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
            }
        )
    )
    google.fake.add_user(MENTEE)
    google.fake.calendars[MENTEE].shared_with.add(google.fake.oauth_user)
    runner = CliRunner()
    sign_in = ["auth", "google", "--config", str(config), "--browser", "mentorpulse-consent"]
    assert runner.invoke(app, sign_in).exit_code == 0
    clock = Clock()
    ctx = stages.Context.open(config, clock=clock)
    try:
        first = daemon_sync(ctx, "gw")
        assert first.ok, first.error
        assert first.item_errors == 0
        # The person revoked mentorpulse's access: the API answers 401, the refresh
        # invalid_grant.
        google.fake.access_tokens.clear()
        google.fake.refresh_tokens.clear()

        refused = daemon_sync(ctx, "gw")
        assert refused.needs_reauth
        assert "sign in again with `mentorpulse auth google --source gw`" in (refused.error or "")
        status = runner.invoke(app, ["status", "--config", str(config)])
        assert status.exit_code == 1
        assert "`mentorpulse auth google --source gw`" in status.output

        asked = google.fake.http_requests
        clock.now = NOW + timedelta(days=1)
        assert daemon_sync(ctx, "gw").needs_reauth
        assert google.fake.http_requests == asked  # not a request more

        again = runner.invoke(app, sign_in)
        assert again.exit_code == 0, again.output
        assert "gw no longer needs_reauth" in again.output
        synced = daemon_sync(ctx, "gw")
        assert synced.ok, synced.error
        assert source_row(ctx, "gw").needs_reauth_at is None
    finally:
        ctx.engine.dispose()


def test_a_sign_in_with_the_database_down_still_stores_the_token_and_says_what_next(
    graph: GraphFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mentorpulse.credentials import generate_key
    from tests.servers.caldav import free_port

    monkeypatch.setenv("MENTORPULSE_SECRET_KEY", generate_key())
    graph.auto_approve = MENTOR
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/mentorpulse"  # nothing listens
    config = write_deployment(tmp_path, graph, down, device_code=True, pair=(MENTOR, MENTEE))
    result = CliRunner().invoke(app, ["auth", "microsoft", "--source", "m365", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "signed in" in result.output
    assert "run `mentorpulse sync --once --source m365`" in result.output
    assert "Traceback" not in result.output

"""The google connector: the real google-api-python-client against the loopback fake."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mentorpulse.config.schema import GoogleSource
from mentorpulse.connectors.base import AttendanceSource, AuthError, CursorExpired, TransientError
from mentorpulse.connectors.google import GoogleConnector
from mentorpulse.model import EventRecord, Response, SyncPage
from tests.fakes.google_api import (
    Fault,
    GoogleFake,
    RunningFake,
    consent_in_browser,
    instance_id,
    serve,
    write_installed_client,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MENTOR = "mira@example.org"
MENTEE = "theo@example.org"


@pytest.fixture
def google() -> Iterator[RunningFake]:
    yield from serve(GoogleFake())


@pytest.fixture
def key_file(google: RunningFake, tmp_path: Path) -> Path:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(google.service_account))
    return path


def make_source(google: RunningFake, key_file: Path, **overrides: Any) -> GoogleSource:
    values: dict[str, Any] = {
        "id": "gw",
        "kind": "google",
        "users": [MENTOR, MENTEE],
        "service_account_key": str(key_file),
        "api_root": google.url,
        **overrides,
    }
    return GoogleSource.model_validate(values)


def listed(
    connector: GoogleConnector, cursor: Mapping[str, object] | None = None
) -> list[SyncPage]:
    """The pages of one listing, as the connector yields them (the sync stage stores them:
    tests/connectors/ runs the connector through it)."""
    return list(connector.sync(cursor))


def records(pages: list[SyncPage]) -> list[EventRecord]:
    return [r for page in pages for r in page.records]


def record(pages: list[SyncPage], provider_id: str) -> EventRecord:
    return next(r for r in records(pages) if r.provider_id == provider_id)


def cursor_of(pages: list[SyncPage]) -> Mapping[str, object] | None:
    """The cursor the stage would hold after storing ``pages``."""
    cursors = [page.cursor for page in pages if page.cursor is not None]
    return json.loads(json.dumps(cursors[-1])) if cursors else None


def errors(pages: list[SyncPage]) -> list[str]:
    return [e.message for page in pages for e in page.errors]


def connector_for(
    google: RunningFake, key_file: Path, sleeps: list[float] | None = None, **overrides: Any
) -> GoogleConnector:
    recorded = sleeps if sleeps is not None else []
    return GoogleConnector(
        make_source(google, key_file, **overrides),
        base_dir=key_file.parent,
        now=NOW,
        sleep=recorded.append,
        jitter=lambda: 0.5,
    )


def populate(fake: GoogleFake) -> None:
    fake.add_user(MENTOR)
    fake.add_user(MENTEE)
    fake.meeting(
        [MENTOR, MENTEE],
        event_id="kickoff",
        start=NOW - timedelta(days=7),
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "tentative"},
        meet_code="abc-defg-hij",
    )
    fake.series(
        [MENTOR, MENTEE],
        series_id="weekly",
        first=NOW + timedelta(days=1),
        count=4,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "needsAction"},
    )


def expected_keys(fake: GoogleFake, window_end: datetime | None = None) -> set[str]:
    """Provider ids of every live event of the fake inside the window."""
    keys = set()
    for owner in fake.calendars:
        for event in fake.live_events(owner).values():
            start = datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00"))
            if window_end is None or start < window_end:
                keys.add(f"{owner}/{event['id']}")
    return keys


# ---------------------------------------------------------------- first and incremental sync


def test_first_sync_reads_every_occurrence_with_responses_and_meet(
    google: RunningFake, key_file: Path
) -> None:
    populate(google.fake)
    pages = listed(connector_for(google, key_file))

    assert {r.provider_id for r in records(pages)} == expected_keys(google.fake)
    kickoff = record(pages, f"{MENTEE}/kickoff")
    assert kickoff.organizer == MENTOR
    assert kickoff.calendar_owner == MENTEE
    assert kickoff.response_of(MENTEE) is Response.TENTATIVE
    assert kickoff.response_of(MENTOR) is Response.ACCEPTED
    assert kickoff.conference_id == "abc-defg-hij"
    assert kickoff.zone == "Europe/Berlin"
    assert kickoff.start == NOW - timedelta(days=7)
    second = record(pages, f"{MENTOR}/{instance_id('weekly', NOW + timedelta(days=8))}")
    assert second.series_id == "weekly"
    assert second.original_start == NOW + timedelta(days=8)
    # The first listing sent the window and the filters, 2,500 a page.
    first_list = next(q for p, q in google.fake.calls if p.endswith("/events"))
    assert first_list["singleEvents"] == "true"
    assert first_list["eventTypes"] == "default"
    assert first_list["maxResults"] == "2500"
    assert "timeMin" in first_list
    assert "timeMax" in first_list


def test_unchanged_poll_sends_only_the_sync_token_and_yields_nothing(
    google: RunningFake, key_file: Path
) -> None:
    populate(google.fake)
    cursor = cursor_of(listed(connector_for(google, key_file)))
    google.fake.calls.clear()
    before = google.fake.http_requests

    pages = listed(connector_for(google, key_file), cursor)

    assert pages == []
    assert google.fake.http_requests - before == 1  # both calendars in one batch request
    assert len(google.fake.calls) == 2
    for _path, query in google.fake.calls:
        assert "syncToken" in query
        assert not {"timeMin", "timeMax", "showDeleted", "pageToken"} & set(query)


def test_paging_resumes_mid_calendar_after_a_crash(
    google: RunningFake, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within one calendar: the page token of the stored page, not the listing again
    (the contract suite crashes the stage between calendars)."""
    import mentorpulse.connectors.google.sync as module

    fake = google.fake
    fake.add_user(MENTOR)
    starts = fake.series(
        [MENTOR],
        series_id="daily",
        first=NOW - timedelta(days=100),
        count=180,
        every=timedelta(days=1),
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
    )
    monkeypatch.setattr(module, "PAGE_SIZE", 50)
    connector = connector_for(google, key_file, users=[MENTOR])
    pages = connector.sync(None)
    first = next(pages)  # one page stored, then the process dies
    pages.close()
    cursor = cursor_of([first])
    assert cursor is not None
    state = cursor["calendars"][MENTOR]  # type: ignore[index]
    assert state["page_token"]
    assert "sync_token" not in state
    fake.calls.clear()

    rest = listed(connector_for(google, key_file, users=[MENTOR]), cursor)

    assert "pageToken" in fake.calls[0][1]  # resumed, not restarted
    assert len(fake.calls) == 3  # 180 instances in the window: 4 pages, 1 done before
    assert sorted(r.start for r in records([first, *rest])) == [
        s for s in starts if s < connector.window.end
    ]
    state = cursor_of(rest)["calendars"][MENTOR]  # type: ignore[index]
    assert state.get("sync_token")
    assert not state.get("page_token")


def test_series_edited_years_ahead_keeps_only_the_window(
    google: RunningFake, key_file: Path
) -> None:
    fake = google.fake
    fake.add_user(MENTOR)
    cursor = cursor_of(listed(connector_for(google, key_file, users=[MENTOR])))
    # An edited series: Google returns instances for years to come to the sync token.
    starts = fake.series(
        [MENTOR],
        series_id="forever",
        first=NOW + timedelta(days=2),
        count=150,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
    )
    pages = listed(connector_for(google, key_file, users=[MENTOR]), cursor)
    window = connector_for(google, key_file).window
    assert {r.start for r in records(pages)} == {s for s in starts if s < window.end}
    assert max(s for s in starts) > window.end + timedelta(days=365)


def test_window_moving_on_lists_the_new_slice_once(google: RunningFake, key_file: Path) -> None:
    fake = google.fake
    fake.add_user(MENTOR)
    starts = fake.series(
        [MENTOR],
        series_id="weekly",
        first=NOW,
        count=30,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
    )
    first = listed(connector_for(google, key_file, users=[MENTOR]))
    first_end = connector_for(google, key_file).window.end
    assert max(r.start for r in records(first)) < first_end

    def later() -> GoogleConnector:
        return GoogleConnector(
            make_source(google, key_file, users=[MENTOR]),
            base_dir=key_file.parent,
            now=NOW + timedelta(days=14),
            sleep=lambda _s: None,
        )

    moved_on = listed(later(), cursor_of(first))
    assert not any(page.deleted for page in moved_on)
    in_window = {s for s in starts if s < later().window.end}
    assert {r.start for r in records([*first, *moved_on])} == in_window
    fake.calls.clear()
    assert listed(later(), cursor_of(moved_on)) == []
    assert len(fake.calls) == 1  # the slice is not listed again


# ---------------------------------------------------------------- errors


def test_expired_sync_token_raises_cursor_expired(google: RunningFake, key_file: Path) -> None:
    populate(google.fake)
    cursor = cursor_of(listed(connector_for(google, key_file)))
    google.fake.expire_sync_tokens(MENTEE)

    with pytest.raises(CursorExpired, match=MENTEE):
        listed(connector_for(google, key_file), cursor)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(403, "rateLimitExceeded", times=2),
        Fault(403, "userRateLimitExceeded"),
        Fault(429, "rateLimitExceeded", retry_after=7),
        Fault(500, "backendError", times=2),
        Fault(0, outer=True),
        Fault(503, "backendError", outer=True),
        Fault(-1, outer=True, retry_after=2),
    ],
    ids=["403-rate", "403-user-rate", "429-retry-after", "500", "dropped", "503-batch", "timeout"],
)
def test_transient_faults_are_retried_with_backoff(
    google: RunningFake, key_file: Path, fault: Fault
) -> None:
    populate(google.fake)
    google.fake.faults.append(fault)
    sleeps: list[float] = []
    pages = listed(connector_for(google, key_file, sleeps, timeout="1s"))

    assert {r.provider_id for r in records(pages)} == expected_keys(google.fake)
    assert sleeps, "a retry waits first"
    if fault.retry_after and fault.status > 0:
        assert max(sleeps) >= fault.retry_after
    # The jitter draw is fixed (0.5): each wait is twice the one before, unless the
    # provider asked for longer.
    for before, after in itertools.pairwise(sleeps):
        assert after == 2 * before or after == fault.retry_after, sleeps


def backed_off(google: RunningFake, key_file: Path, jitter: Callable[[], float]) -> list[float]:
    """The waits of a sync whose calls on one calendar fail four times in a row (one
    attempt fewer than the connector gives up after), so the fifth answer is the data."""
    populate(google.fake)
    google.fake.faults.append(Fault(500, "backendError", times=4, calendar=MENTOR))
    sleeps: list[float] = []
    connector = GoogleConnector(
        make_source(google, key_file),
        base_dir=key_file.parent,
        now=NOW,
        sleep=sleeps.append,
        jitter=jitter,
    )
    pages = listed(connector)
    assert {r.provider_id for r in records(pages)} == expected_keys(google.fake)
    return sleeps


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999], ids=["low", "mid", "high"])
def test_backoff_doubles_per_retry_within_its_jitter(
    google: RunningFake, key_file: Path, draw: float
) -> None:
    """Exponential, as the module promises: about 1, 2, 4, 8 s, each at most 50% off."""
    sleeps = backed_off(google, key_file, lambda: draw)
    assert len(sleeps) == 4
    for before, after in itertools.pairwise(sleeps):
        assert after == pytest.approx(2 * before), sleeps  # the same draw: twice as long
    for attempt, wait in enumerate(sleeps):
        assert 0.5 * 2**attempt <= wait <= 1.5 * 2**attempt, sleeps


def test_backoff_jitter_spreads_the_waits(google: RunningFake, key_file: Path) -> None:
    """Two syncs failing alike wait different times, so clients do not retry in step; each
    wait stays within its attempt's band (the first and the last do not overlap, so no
    constant wait fits them all)."""
    draws = iter([0.0, 0.999, 0.25, 0.75])
    sleeps = backed_off(google, key_file, lambda: next(draws))
    assert len(sleeps) == 4
    bands = [(0.5 * 2**attempt, 1.5 * 2**attempt) for attempt in range(4)]
    assert all(low <= wait <= high for wait, (low, high) in zip(sleeps, bands, strict=True))
    assert sleeps[0] != sleeps[1] / 2, "the draws changed the waits"


def test_persistent_rate_limit_becomes_transient_error(google: RunningFake, key_file: Path) -> None:
    populate(google.fake)
    google.fake.faults.append(Fault(429, "rateLimitExceeded", retry_after=30, times=100))
    sleeps: list[float] = []
    with pytest.raises(TransientError) as caught:
        listed(connector_for(google, key_file, sleeps))
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 30
    assert len(sleeps) == 4


def test_suspended_user_is_skipped_not_a_failed_sync(google: RunningFake, key_file: Path) -> None:
    populate(google.fake)
    google.fake.suspended.add(MENTEE)
    with capture_logs() as logs:
        pages = listed(connector_for(google, key_file))
    assert {r.calendar_owner for r in records(pages)} == {MENTOR}
    assert any(MENTEE in e and "skipped" in e for e in errors(pages))
    assert any(e["event"] == "google_calendar_skipped" for e in logs)


def test_missing_delegation_is_an_auth_error_naming_the_user(
    google: RunningFake, key_file: Path
) -> None:
    populate(google.fake)
    google.fake.delegated_scopes = set()
    with pytest.raises(AuthError) as caught:
        listed(connector_for(google, key_file, users=["other@example.org"]))
    assert "other@example.org" in caught.value.message
    assert "domain-wide delegation" in caught.value.message
    private_key = google.service_account["private_key"]
    assert private_key.splitlines()[1] not in str(caught.value)


def test_revoked_sign_in_is_an_auth_error_without_the_token(
    google: RunningFake, tmp_path: Path
) -> None:
    from mentorpulse.credentials import TokenStore, generate_key

    populate(google.fake)
    google.fake.calendars[MENTEE].shared_with.add(google.fake.oauth_user)
    client = tmp_path / "client.json"
    client.write_text(
        json.dumps(
            {
                "installed": {
                    "client_id": "cid.apps.googleusercontent.com",
                    "client_secret": "GOCSPX-very-secret",
                    "auth_uri": f"{google.url}/o/oauth2/auth",
                    "token_uri": f"{google.url}/token",
                    "redirect_uris": ["http://localhost"],
                }
            }
        )
    )
    key = generate_key()
    TokenStore(tmp_path / "tokens.json", key).save("google:gw", "1//revoked-refresh-token")
    source = GoogleSource.model_validate(
        {
            "id": "gw",
            "kind": "google",
            "users": [MENTEE, MENTOR],  # only the mentee shared her calendar
            "oauth_client": str(client),
            "api_root": google.url,
        }
    )
    connector = GoogleConnector(source, base_dir=tmp_path, now=NOW, token_key=key)
    with capture_logs() as logs, pytest.raises(AuthError) as caught:
        list(connector.sync(None))
    assert MENTEE in caught.value.message
    assert "auth google" in caught.value.message
    for text in (str(caught.value), json.dumps(logs, default=str)):
        assert "revoked-refresh-token" not in text
        assert "very-secret" not in text

    # A valid refresh token reads the calendar shared with the signed-in user.
    google.fake.refresh_tokens["1//good"] = google.fake.oauth_user
    TokenStore(tmp_path / "tokens.json", key).save("google:gw", "1//good")
    pages = listed(GoogleConnector(source, base_dir=tmp_path, now=NOW, token_key=key))
    assert {r.calendar_owner for r in records(pages)} == {MENTEE}
    assert errors(pages) == [
        f"calendar of {MENTOR} skipped: no calendar (suspended, deleted, or not shared)"
    ]


# ---------------------------------------------------------------- cost


def test_200_unchanged_calendars_cost_four_batch_requests(
    google: RunningFake, key_file: Path
) -> None:
    fake = google.fake
    users = [f"user{n:03d}@example.org" for n in range(200)]
    for user in users:
        fake.add_user(user)
        fake.meeting(
            [user],
            event_id=f"e-{user.split('@')[0]}",
            start=NOW + timedelta(days=1),
            organizer=user,
            attendees={user: "accepted"},
        )
    pages = listed(connector_for(google, key_file, users=users))
    assert len(records(pages)) == 200
    before_http, before_calls = fake.http_requests, fake.api_calls
    fake.batch_sizes.clear()

    connector = connector_for(google, key_file, users=users)
    assert listed(connector, cursor_of(pages)) == []

    assert fake.api_calls - before_calls == 200  # one call per calendar
    assert fake.http_requests - before_http == 4  # in batches of 50
    assert fake.batch_sizes == [50, 50, 50, 50]
    assert connector.http_requests == 4


def test_quota_share_is_respected(google: RunningFake, key_file: Path) -> None:
    """With a 120/min project quota at half share, 100 calls must wait for 40 tokens."""
    fake = google.fake
    users = [f"q{n:03d}@example.org" for n in range(100)]
    for user in users:
        fake.add_user(user)
    sleeps: list[float] = []
    connector = connector_for(
        google, key_file, sleeps, users=users, project_quota_per_minute=120, quota_share=0.5
    )
    listed(connector)
    # 60 tokens in the bucket, refilled at one a second: the last batch waits ≈40 s.
    assert sleeps
    assert 30 <= sum(sleeps) <= 60


# ---------------------------------------------------------------- attendance


def test_meet_attendance_evidence(
    google: RunningFake, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(google.fake)
    start = NOW - timedelta(days=7)
    google.fake.add_conference(
        "abc-defg-hij",
        start,
        start + timedelta(minutes=50),
        {
            MENTOR: [
                (start, start + timedelta(minutes=20)),
                (start + timedelta(minutes=25), start + timedelta(minutes=50)),
            ],
            "stranger@example.com": [(start, start + timedelta(minutes=5))],
        },
        owner=MENTOR,
    )
    connector = connector_for(google, key_file, attendance=True)
    pages = listed(connector)
    assert isinstance(connector, AttendanceSource)

    import mentorpulse.connectors.google.meet as module

    monkeypatch.setattr(module, "MEET_PAGE_SIZE", 1)  # every list takes several pages
    evidence = connector.attendance_evidence(record(pages, f"{MENTEE}/kickoff"))

    by_email = {e.email: e for e in evidence}
    assert set(by_email) == {MENTOR, MENTEE}
    assert by_email[MENTOR].seconds_present == 45 * 60
    assert by_email[MENTOR].joined_at == start
    assert by_email[MENTOR].left_at == start + timedelta(minutes=50)
    assert by_email[MENTEE].seconds_present == 0  # the conference happened without them
    assert {e.system for e in evidence} == {"google_meet"}
    assert all(e.provider_id == f"{MENTEE}/kickoff" for e in evidence)


def test_no_conference_log_is_no_evidence(google: RunningFake, key_file: Path) -> None:
    populate(google.fake)
    with_meet = connector_for(google, key_file, attendance=True)
    kickoff = record(listed(with_meet), f"{MENTOR}/kickoff")
    assert with_meet.attendance_evidence(kickoff) == []
    # Off by default: no Meet call and no Meet scope requested.
    calls = len(google.fake.calls)
    assert connector_for(google, key_file).attendance_evidence(kickoff) == []
    assert len(google.fake.calls) == calls


# ---------------------------------------------------------------- through the sync stage


def write_config(tmp_path: Path, database_url: str, source: dict[str, Any]) -> Path:
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{MENTOR},{MENTEE},2025-01-06\n"
    )
    config = {
        "database": database_url,
        "timezone": "Europe/Berlin",
        "sources": [source],
        "roster": {"path": "roster.csv"},
        "programs": [{"id": "eng", "cadence": {"every": "14d"}}],
    }
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_auth_google_stores_the_refresh_token_encrypted(
    google: RunningFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from typer.testing import CliRunner

    from mentorpulse.cli import app
    from mentorpulse.credentials import TokenStore, generate_key

    consent_in_browser()
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake speaks plain http
    key = generate_key()
    monkeypatch.setenv("MENTORPULSE_SECRET_KEY", key)
    write_installed_client(tmp_path, google.url)
    path = write_config(
        tmp_path,
        "sqlite:///mp.db",
        {
            "id": "gw",
            "kind": "google",
            "users": [MENTEE],
            "oauth_client": "client.json",
            "token_store": "secrets/tokens.json",
        },
    )
    result = CliRunner().invoke(
        app, ["auth", "google", "--config", str(path), "--browser", "mentorpulse-consent"]
    )
    assert result.exit_code == 0, result.output
    stored = (tmp_path / "secrets" / "tokens.json").read_text()
    (refresh,) = google.fake.refresh_tokens
    assert refresh not in stored  # encrypted at rest
    assert refresh not in result.output
    assert TokenStore(tmp_path / "secrets" / "tokens.json").load("google:gw") == refresh


def test_auth_google_refuses_a_service_account_source(
    google: RunningFake, key_file: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app

    path = write_config(
        tmp_path,
        "sqlite:///mp.db",
        {"id": "gw", "kind": "google", "users": [MENTOR], "service_account_key": "sa.json"},
    )
    result = CliRunner().invoke(app, ["auth", "google", "--config", str(path)])
    assert result.exit_code == 1
    assert "uses a service account" in result.output
    assert "Traceback" not in result.output


def test_auth_google_needs_the_key_before_the_browser_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app

    monkeypatch.delenv("MENTORPULSE_SECRET_KEY", raising=False)
    (tmp_path / "client.json").write_text(
        json.dumps({"installed": {"client_id": "c", "client_secret": "s"}})
    )
    path = write_config(
        tmp_path,
        "sqlite:///mp.db",
        {"id": "gw", "kind": "google", "users": [MENTOR], "oauth_client": "client.json"},
    )
    result = CliRunner().invoke(app, ["auth", "google", "--config", str(path), "--no-browser"])
    assert result.exit_code == 1
    assert "MENTORPULSE_SECRET_KEY is not set" in result.output
    assert "Open this address" not in result.output


def test_config_errors_name_the_file_and_line(tmp_path: Path) -> None:
    from mentorpulse.config.loader import load_config
    from mentorpulse.errors import ConfigError

    path = tmp_path / "mentorpulse.yaml"
    path.write_text(
        "sources:\n"
        "  - id: gw\n"
        "    kind: google\n"
        "    users: [a@example.org]\n"
        "    service_account_key: sa.json\n"
        "    oauth_client: client.json\n"
        "  - id: gw2\n"
        "    kind: google\n"
        "    users: [a@example.org]\n"
        "    oauth_client: client.json\n"
        "    batch_size: 5000\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert f"{path}:2" in problems
    assert "exactly one of service_account_key or oauth_client" in problems
    assert f"{path}:11" in problems
    assert "batch_size" in problems


@pytest.mark.parametrize(
    ("mentee_minutes", "outcome"), [(40, "held"), (0, "missed")], ids=["joined", "no-show"]
)
def test_meet_evidence_turns_presumed_held_into_held_or_missed(
    google: RunningFake, key_file: Path, tmp_path: Path, mentee_minutes: int, outcome: str
) -> None:
    from sqlalchemy import select

    from mentorpulse import stages
    from mentorpulse.storage.models import MentoringSession

    fake = google.fake
    fake.add_user(MENTOR)
    fake.add_user(MENTEE)
    start = NOW - timedelta(days=2)
    fake.meeting(
        [MENTOR, MENTEE],
        event_id="weekly-chat",
        start=start,
        minutes=45,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
        meet_code="kpq-wxyz-abc",
    )
    source = {
        "id": "gw",
        "kind": "google",
        "users": [MENTOR, MENTEE],
        "service_account_key": key_file.name,
        "api_root": google.url,
    }
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'mp.db'}", source)
    ctx = stages.Context.open(path, clock=lambda: NOW)
    try:
        stages.sync_sources(ctx)
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            assert db.scalar(select(MentoringSession.outcome)) == "presumed_held"
    finally:
        ctx.engine.dispose()

    present = {MENTOR: [(start, start + timedelta(minutes=45))]}
    if mentee_minutes:
        present[MENTEE] = [(start + timedelta(minutes=2), start + timedelta(minutes=42))]
    fake.add_conference("kpq-wxyz-abc", start, start + timedelta(minutes=45), present, owner=MENTOR)
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'mp.db'}", {**source, "attendance": True})
    ctx = stages.Context.open(path, clock=lambda: NOW)
    try:
        (result,) = stages.sync_sources(ctx)
        assert result.ok, result.error
        assert result.attendance_checked == 2  # the mentor's and the mentee's copy
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            assert list(db.scalars(select(MentoringSession.outcome))) == [outcome]
    finally:
        ctx.engine.dispose()


def test_new_window_slice_survives_a_failed_poll(google: RunningFake, key_file: Path) -> None:
    fake = google.fake
    fake.add_user(MENTOR)
    fake.add_user(MENTEE)
    starts = fake.series(
        [MENTOR, MENTEE],
        series_id="weekly",
        first=NOW,
        count=30,
        organizer=MENTOR,
        attendees={MENTOR: "accepted", MENTEE: "accepted"},
    )
    first = listed(connector_for(google, key_file))

    def later() -> GoogleConnector:
        return GoogleConnector(
            make_source(google, key_file, batch_size=1),
            base_dir=key_file.parent,
            now=NOW + timedelta(days=21),
            sleep=lambda _s: None,
        )

    fake.faults.append(Fault(500, "backendError", times=5, calendar=MENTEE))  # all retries
    failed: list[SyncPage] = []
    with pytest.raises(TransientError):
        failed.extend(later().sync(cursor_of(first)))  # the mentor's page, then the error
    assert failed
    resumed = listed(later(), cursor_of([*first, *failed]))
    window_end = later().window.end
    read = records([*first, *failed, *resumed])
    mentee = {r.start for r in read if r.calendar_owner == MENTEE}
    assert mentee == {s for s in starts if s < window_end}


def test_revoked_access_tokens_are_renewed_or_named(google: RunningFake, key_file: Path) -> None:
    populate(google.fake)
    cursor = cursor_of(listed(connector_for(google, key_file)))
    google.fake.move(MENTEE, "kickoff", NOW - timedelta(days=6))

    # Google revokes the access tokens early: a 401, a new token, the call again.
    google.fake.access_tokens.clear()
    pages = listed(connector_for(google, key_file), cursor)
    assert record(pages, f"{MENTEE}/kickoff").start == NOW - timedelta(days=6)

    # ... and once the delegation is withdrawn, the new token is refused: AuthError.
    google.fake.access_tokens.clear()
    google.fake.delegated_scopes = set()
    with pytest.raises(AuthError, match="domain-wide delegation"):
        listed(connector_for(google, key_file), cursor_of(pages) or cursor)


def test_all_day_events_rooms_and_optional_attendees(google: RunningFake, key_file: Path) -> None:
    fake = google.fake
    fake.add_user(MENTOR)
    fake.put_event(
        MENTOR,
        {
            "id": "offsite",
            "start": {"date": "2026-03-05"},
            "end": {"date": "2026-03-06"},
            "organizer": {"email": MENTOR, "self": True},
            "attendees": [
                {"email": "Mira@Example.org", "responseStatus": "accepted", "self": True},
                {"email": MENTEE, "responseStatus": "tentative", "optional": True},
                {
                    "email": "room-1@resource.example.org",
                    "resource": True,
                    "responseStatus": "accepted",
                },
            ],
        },
    )
    (record,) = records(listed(connector_for(google, key_file, users=[MENTOR])))
    assert record.all_day
    # The calendar's zone (the fake's is Europe/Berlin) places an all-day date.
    assert record.start == datetime(2026, 3, 4, 23, 0, tzinfo=UTC)
    assert record.end == datetime(2026, 3, 5, 23, 0, tzinfo=UTC)
    assert {a.email for a in record.attendees} == {MENTOR, MENTEE}  # rooms are not people
    assert next(a for a in record.attendees if a.email == MENTEE).optional
    assert record.calendar_owner == MENTOR

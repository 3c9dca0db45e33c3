"""The Microsoft 365 connector against the Graph fake: msal and httpx over real HTTPS."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mentorpulse.config.schema import MicrosoftSource
from mentorpulse.connectors.base import AttendanceSource, AuthError, CursorExpired, TransientError
from mentorpulse.connectors.microsoft import MicrosoftConnector
from mentorpulse.model import EventRecord, EventStatus, Response, SyncPage
from tests.fakes.graph_api import AttendanceReport, FakeEvent, GraphFake

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MENTOR = "mentor@contoso.example"
MENTEE = "mentee@contoso.example"
JOIN = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0?context=x"


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphFake]:
    # requests (under msal) would otherwise trust only this bundle, not the test CA.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    fake = GraphFake(tmp_path)
    fake.mailbox(MENTOR)
    fake.mailbox(MENTEE)
    yield from fake.serve()


def make_source(fake: GraphFake, **changes: Any) -> MicrosoftSource:
    values: dict[str, Any] = {
        "id": "m365",
        "kind": "microsoft",
        "tenant_id": fake.tenant,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "mailboxes": [MENTOR, MENTEE],
        "authority_host": fake.url,
        "graph_url": f"{fake.url}/v1.0",
        "ca_bundle": str(fake.ca_path),
        "page_size": 2,
        "window_past": "30d",
        "window_future": "30d",
    }
    values.update(changes)
    return MicrosoftSource.model_validate(values)


def records(pages: list[SyncPage]) -> list[EventRecord]:
    return [r for page in pages for r in page.records]


def record(pages: list[SyncPage], provider_id: str) -> EventRecord:
    return next(r for r in records(pages) if r.provider_id == provider_id)


def deleted(pages: list[SyncPage]) -> set[str]:
    return {gone for page in pages for gone in page.deleted}


def cursor_of(pages: list[SyncPage]) -> Mapping[str, object] | None:
    """The cursor the stage would hold after storing ``pages``."""
    cursors = [page.cursor for page in pages if page.cursor is not None]
    return cursors[-1] if cursors else None


def errors(pages: list[SyncPage]) -> list[str]:
    return [e.message for page in pages for e in page.errors]


def connector(
    fake: GraphFake, *, now: datetime = NOW, sleeps: list[float] | None = None, **changes: Any
) -> MicrosoftConnector:
    sink = sleeps if sleeps is not None else []
    return MicrosoftConnector(
        make_source(fake, **changes), base_dir=fake.ca_path.parent, now=now, sleep=sink.append
    )


def listed(
    fake: GraphFake, cursor: Mapping[str, object] | None = None, **kwargs: Any
) -> list[SyncPage]:
    """The pages of one listing, as the connector yields them (the sync stage stores them:
    tests/connectors/ runs the connector through it)."""
    return list(connector(fake, **kwargs).sync(cursor))


def meeting(
    fake: GraphFake, start: datetime, *, uid: str, mentee_response: str = "accepted", **kw: Any
) -> tuple[FakeEvent, FakeEvent]:
    """One meeting between the pair: the mentor's copy and the mentee's copy."""
    common: dict[str, Any] = {
        "ical_uid": uid,
        "subject": "Mentoring",
        "start": start,
        "end": start + timedelta(hours=1),
        "organizer": MENTOR,
        "attendees": [(MENTEE, "required", mentee_response)],
        "join_url": JOIN,
        **kw,
    }
    mine = fake.put(MENTOR, FakeEvent(id=fake.next_id(), owner_response="organizer", **common))
    theirs = fake.put(
        MENTEE, FakeEvent(id=fake.next_id(), owner_response=mentee_response, **common)
    )
    return mine, theirs


def series(fake: GraphFake) -> dict[str, FakeEvent]:
    """A weekly series in the mentor's calendar: plain, moved, cancelled, thin occurrences."""
    master = fake.next_id()
    base = datetime(2026, 11, 5, 15, 0, tzinfo=UTC)
    made = {}
    for week, kind in enumerate(["occurrence", "exception", "cancelled", "thin"]):
        original = base + timedelta(weeks=week)
        start = original + (timedelta(days=1) if kind == "exception" else timedelta(0))
        made[kind] = fake.put(
            MENTOR,
            FakeEvent(
                id=fake.next_id(),
                ical_uid="series-uid",
                subject="Weekly mentoring",
                start=start,
                end=start + timedelta(minutes=45),
                organizer=MENTOR,
                attendees=[(MENTEE, "required", "tentativelyAccepted")],
                type="exception" if kind in ("exception", "cancelled") else "occurrence",
                series_master_id=master,
                original_start=original,
                is_cancelled=kind == "cancelled",
                zone="(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
                thin_in_delta=kind == "thin",
            ),
        )
    return made


# ------------------------------------------------------------------ first sync


def test_first_sync_records_every_kind_of_instance(graph: GraphFake) -> None:
    mine, theirs = meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="single-1")
    made = series(graph)
    conn = connector(graph)
    pages = list(conn.sync(None))

    assert len(records(pages)) == 6
    single = record(pages, f"{MENTOR}/{mine.id}")
    assert single.start == datetime(2026, 11, 10, 10, tzinfo=UTC)
    assert single.zone == "Europe/Berlin"
    assert single.organizer == MENTOR
    assert single.conference_id == JOIN
    assert single.calendar_owner == MENTOR
    copy = record(pages, f"{MENTEE}/{theirs.id}")
    assert copy.ical_uid == single.ical_uid == "single-1"
    assert copy.response_of(MENTEE) is Response.ACCEPTED

    moved = record(pages, f"{MENTOR}/{made['exception'].id}")
    assert moved.original_start == datetime(2026, 11, 12, 15, tzinfo=UTC)
    assert moved.start == datetime(2026, 11, 13, 15, tzinfo=UTC)
    assert moved.series_id == made["exception"].series_master_id
    cancelled = record(pages, f"{MENTOR}/{made['cancelled'].id}")
    assert cancelled.status is EventStatus.CANCELLED
    # The thin delta occurrence was completed, not stored half-empty.
    thin = record(pages, f"{MENTOR}/{made['thin'].id}")
    assert thin.ical_uid == "series-uid"
    assert thin.response_of(MENTEE) is Response.TENTATIVE
    assert thin.original_start == datetime(2026, 11, 26, 15, tzinfo=UTC)
    assert thin.start == datetime(2026, 11, 26, 15, tzinfo=UTC)

    # The mentor's 5 events come in pages of page_size (2), the mentees' along with the
    # first of them in one batch; the cursor settles on each mailbox's deltaLink.
    assert len(pages) == 3
    boxes = cursor_of(pages)["mailboxes"]  # type: ignore[index]
    assert all(boxes[m]["settled"] for m in (MENTOR, MENTEE))  # type: ignore[index]
    prefer = {r.headers.get("prefer") for r in graph.graph_requests(in_batch=False)} - {None}
    assert 'odata.maxpagesize=2, outlook.timezone="UTC"' in prefer
    assert conn.requests == len(graph.graph_requests(in_batch=False))


def test_the_mailbox_owner_s_own_answer_wins(graph: GraphFake) -> None:
    # The organiser's copy still says "accepted"; the mentee's own copy says declined.
    _, theirs = meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    theirs.owner_response = "declined"
    graph.put(MENTEE, theirs)
    pages = listed(graph)
    assert record(pages, f"{MENTEE}/{theirs.id}").response_of(MENTEE) is Response.DECLINED


def test_a_booked_room_is_a_resource_not_a_person(graph: GraphFake) -> None:
    room = "room-4.12@contoso.example"
    mine, _ = meeting(
        graph,
        datetime(2026, 11, 10, 10, tzinfo=UTC),
        uid="u1",
        attendees=[(MENTEE, "required", "accepted"), (room, "resource", "accepted")],
    )
    attendees = {a.email: a for a in record(listed(graph), f"{MENTOR}/{mine.id}").attendees}
    assert attendees[room].is_resource
    assert not attendees[MENTEE].is_resource


# ------------------------------------------------------------------ incremental


def test_incremental_sync_after_each_kind_of_change(graph: GraphFake) -> None:
    mine, theirs = meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    gone, _ = meeting(graph, datetime(2026, 11, 12, 10, tzinfo=UTC), uid="u2")
    leaving, _ = meeting(graph, datetime(2026, 11, 14, 10, tzinfo=UTC), uid="u3")
    first = listed(graph)
    assert len(records(first)) == 6
    graph.log.clear()

    theirs.owner_response = "declined"  # the mentee declines in their own calendar
    graph.put(MENTEE, theirs)
    graph.delete(MENTOR, gone.id)  # the mentor deletes a meeting
    leaving.start = leaving.end = NOW + timedelta(days=90)  # moved out of the window
    graph.put(MENTOR, leaving)
    added, _ = meeting(graph, datetime(2026, 11, 30, 10, tzinfo=UTC), uid="u4")

    changes = listed(graph, cursor_of(first))
    assert record(changes, f"{MENTEE}/{theirs.id}").response_of(MENTEE) is Response.DECLINED
    assert {f"{MENTOR}/{gone.id}", f"{MENTOR}/{leaving.id}"} <= deleted(changes)
    assert f"{MENTOR}/{added.id}" in {r.provider_id for r in records(changes)}
    assert f"{MENTOR}/{mine.id}" not in {r.provider_id for r in records(changes)}

    # A quiet poll of both mailboxes is one $batch request, and changes nothing.
    graph.log.clear()
    conn = connector(graph)
    quiet = list(conn.sync(cursor_of(changes)))
    assert [(p.records, p.deleted) for p in quiet] == [((), ())]  # one cursor write
    top = graph.graph_requests(in_batch=False)
    assert [r.path for r in top] == ["/v1.0/$batch"]
    assert conn.requests == 1
    assert len(graph.graph_requests(in_batch=True)) == 2


def test_a_crash_between_pages_resumes_from_the_next_link(graph: GraphFake) -> None:
    for day in range(1, 6):
        meeting(graph, datetime(2026, 11, day, 10, tzinfo=UTC), uid=f"u{day}")
    pages = connector(graph).sync(None)
    first = next(pages)  # the first page is stored with its cursor ...
    pages.close()  # ... and the process dies
    assert first.cursor is not None
    graph.log.clear()

    rest = listed(graph, first.cursor)
    ids = [r.provider_id for r in records([first, *rest])]
    assert len(ids) == len(set(ids)) == 10
    # The resumed run went on from the skiptoken rather than starting the round again.
    assert not [r.path for r in graph.graph_requests() if "startDateTime" in r.query]


def test_replaying_a_round_changes_nothing(graph: GraphFake) -> None:
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    settled = cursor_of(listed(graph))
    meeting(graph, datetime(2026, 11, 11, 10, tzinfo=UTC), uid="u2")
    round_ = listed(graph, settled)
    # The cursor of the last round was lost: the same changes come again, nothing else.
    replayed = listed(graph, settled)
    assert records(replayed) == records(round_)
    assert deleted(replayed) == deleted(round_) == set()


# ------------------------------------------------------------------ expired cursors


@pytest.mark.parametrize("style", ["gone", "syncStateNotFound"])
def test_expired_sync_state_raises_cursor_expired_then_a_full_resync_matches(
    graph: GraphFake, style: str
) -> None:
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    first = listed(graph)
    graph.expire_sync_state(MENTEE, style)
    with pytest.raises(CursorExpired) as raised:
        listed(graph, cursor_of(first))
    assert MENTEE in str(raised.value)
    assert "410" in raised.value.message or "syncStateNotFound" in raised.value.message
    # The sync stage drops the cursor and resyncs (the contract suite runs that): a
    # listing from scratch gives the same events.
    assert records(listed(graph)) == records(first)


def test_expired_skip_token_mid_round_raises_cursor_expired(graph: GraphFake) -> None:
    for day in range(1, 6):
        meeting(graph, datetime(2026, 11, day, 10, tzinfo=UTC), uid=f"u{day}")
    pages = connector(graph).sync(None)
    first = next(pages)
    pages.close()
    graph.expire_sync_state(MENTOR, "syncStateNotFound")
    with pytest.raises(CursorExpired):
        listed(graph, first.cursor)


# ------------------------------------------------------------------ window


def test_the_window_rolls_forward_without_losing_recorded_sessions(graph: GraphFake) -> None:
    early, _ = meeting(graph, NOW - timedelta(days=25), uid="early")
    first = listed(graph)
    assert f"{MENTOR}/{early.id}" in {r.provider_id for r in records(first)}

    # Before the window moves: a meeting is deleted (only the old round can tell) ...
    doomed, _ = meeting(graph, NOW + timedelta(days=5), uid="doomed")
    cursor = cursor_of(listed(graph, cursor_of(first)))
    graph.delete(MENTOR, doomed.id)
    # ... and one is booked beyond the old window's end.
    later, _ = meeting(graph, NOW + timedelta(days=40), uid="later")
    graph.log.clear()

    rolled = listed(graph, cursor, now=NOW + timedelta(days=15))
    # The old round was drained (deletion seen), then a round over the new window began.
    assert f"{MENTOR}/{doomed.id}" in deleted(rolled)
    assert f"{MENTOR}/{later.id}" in {r.provider_id for r in records(rolled)}
    # The early meeting fell out of the back of the window and stays recorded.
    assert f"{MENTOR}/{early.id}" not in deleted(rolled)
    new_window = (NOW + timedelta(days=15) - timedelta(days=30)).strftime("%Y-%m-%d")
    starts = [r.query for r in graph.graph_requests() if "startDateTime" in r.query]
    assert len(starts) == 2
    assert all(f"startDateTime={new_window}T00:00:00Z" in q for q in starts)
    assert cursor_of(rolled)["window_start"] == new_window  # type: ignore[index]


# ------------------------------------------------------------------ throttling


def test_batch_retries_only_the_throttled_sub_response(graph: GraphFake) -> None:
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    cursor = cursor_of(listed(graph))
    meeting(graph, datetime(2026, 11, 11, 10, tzinfo=UTC), uid="u2")
    graph.throttle(MENTEE, status=429, retry_after="3")
    graph.log.clear()
    sleeps: list[float] = []
    pages = listed(graph, cursor, sleeps=sleeps)
    assert sleeps == [3.0]
    assert len(records(pages)) == 2  # the new meeting's two copies
    batches = [r for r in graph.graph_requests(in_batch=False) if r.path.endswith("$batch")]
    assert len(batches) == 2
    inner = [r.path for r in graph.graph_requests(in_batch=True)]
    assert sum(MENTOR in p for p in inner) == 1  # the mentor's answer was not asked again
    assert sum(MENTEE in p for p in inner) == 2


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_with_retry_after_are_waited_out(graph: GraphFake, status: int) -> None:
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    graph.throttle(MENTOR, status=status, retry_after="2")
    sleeps: list[float] = []
    pages = listed(graph, sleeps=sleeps, mailboxes=[MENTOR])  # one mailbox: plain GETs
    assert sleeps == [2.0]
    assert len(records(pages)) == 1
    assert not graph.graph_requests(in_batch=True)


def test_a_long_retry_after_is_left_to_the_scheduler(graph: GraphFake) -> None:
    graph.throttle(MENTOR, status=429, retry_after="120")
    sleeps: list[float] = []
    with pytest.raises(TransientError) as raised:
        listed(graph, None, sleeps=sleeps)
    assert raised.value.retry_after == 120.0
    assert sleeps == []


# ------------------------------------------------------------------ sign-in


def test_a_wrong_secret_is_an_auth_error_that_never_shows_the_secret(graph: GraphFake) -> None:
    wrong = "not-the-Right-secret~42"
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as raised:
        listed(graph, None, client_secret=wrong)
    assert "invalid_client" in raised.value.message
    for text in (str(raised.value), repr(logs)):
        assert wrong not in text
        assert graph.client_secret not in text


def test_a_good_secret_never_reaches_logs_or_cursor(graph: GraphFake) -> None:
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    with structlog.testing.capture_logs() as logs:
        pages = listed(graph)
    assert graph.client_secret not in repr(logs) + repr(cursor_of(pages))
    assert graph.client_secret not in repr(make_source(graph))


def test_certificate_credentials_sign_in(graph: GraphFake, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mentorpulse")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    graph.certificate_thumbprint = thumbprint
    graph.certificate_public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = tmp_path / "app-key.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    pages = listed(
        graph, client_secret=None, certificate_path=str(pem), certificate_thumbprint=thumbprint
    )
    assert len(records(pages)) == 2


# ------------------------------------------------------------------ time zones


def test_times_in_a_windows_zone_are_read_as_that_zone(graph: GraphFake) -> None:
    """Should Graph ignore outlook.timezone, the times still land on the right instant."""
    graph.ignore_timezone_preference = True
    graph.mailbox(MENTEE).time_zone = "Pacific Standard Time"
    start = datetime(2026, 11, 10, 10, tzinfo=UTC)
    mine, theirs = meeting(graph, start, uid="u1")
    pages = listed(graph)
    for copy in (f"{MENTOR}/{mine.id}", f"{MENTEE}/{theirs.id}"):
        assert record(pages, copy).start == start
        assert record(pages, copy).end == start + timedelta(hours=1)
    served = theirs.full("Pacific Standard Time")["start"]  # what the fake answered with
    assert served == {
        "dateTime": "2026-11-10T02:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }


def test_a_custom_zone_in_an_event_uses_the_mailbox_zone_and_is_recorded(
    graph: GraphFake,
) -> None:
    graph.mailbox(MENTOR).time_zone = "Pacific Standard Time"
    mine, theirs = meeting(
        graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1", zone="tzone://Microsoft/Custom"
    )
    with structlog.testing.capture_logs() as logs:
        pages = listed(graph)
    assert record(pages, f"{MENTOR}/{mine.id}").zone == "America/Los_Angeles"
    assert record(pages, f"{MENTEE}/{theirs.id}").zone == "Europe/Berlin"  # its mailbox's zone
    assert record(pages, f"{MENTOR}/{mine.id}").start == datetime(2026, 11, 10, 10, tzinfo=UTC)
    assert any("tzone://Microsoft/Custom" in e for e in errors(pages))
    assert any(e["event"] == "graph_zone_fallback" for e in logs)
    # The mailbox's zone was looked up once per mailbox and kept in the cursor.
    lookups = [r for r in graph.graph_requests() if r.path.endswith("/mailboxSettings/timeZone")]
    assert len(lookups) == 2


# ------------------------------------------------------------------ attendance


def test_teams_attendance_is_evidence_for_the_right_occurrence(graph: GraphFake) -> None:
    start = datetime(2026, 11, 10, 10, tzinfo=UTC)
    mine, _ = meeting(graph, start, uid="u1")
    online = graph.add_meeting(MENTOR, JOIN)
    online.reports = [
        AttendanceReport(
            "r-earlier",
            start - timedelta(days=7),
            start - timedelta(days=7) + timedelta(hours=1),
            [(MENTOR, 3600, start - timedelta(days=7), start - timedelta(days=7, hours=-1))],
        ),
        AttendanceReport(
            "r-this",
            start,
            start + timedelta(minutes=50),
            [
                (MENTOR, 3000, start, start + timedelta(minutes=50)),
                (
                    "Mentee@Contoso.example",
                    2400,
                    start + timedelta(minutes=10),
                    start + timedelta(minutes=50),
                ),
            ],
        ),
    ]
    conn = connector(graph, attendance=True)
    pages = list(conn.sync(None))
    assert isinstance(conn, AttendanceSource)
    this = record(pages, f"{MENTOR}/{mine.id}")
    evidence = {e.email: e for e in conn.attendance_evidence(this)}
    assert set(evidence) == {MENTOR, MENTEE}
    assert evidence[MENTOR].seconds_present == 3000
    assert evidence[MENTEE].seconds_present == 2400
    assert evidence[MENTEE].joined_at == start + timedelta(minutes=10)
    assert all(e.provider_id == this.provider_id and e.system == "teams" for e in evidence.values())

    # A meeting nobody joined has a report without the mentee: no evidence for them.
    other = replace(this, start=start + timedelta(days=14), end=start + timedelta(days=14, hours=1))
    assert conn.attendance_evidence(other) == []


def test_attendance_is_off_by_default(graph: GraphFake) -> None:
    mine, _ = meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    graph.add_meeting(MENTOR, JOIN)
    conn = connector(graph)
    pages = list(conn.sync(None))
    graph.log.clear()
    assert conn.attendance_evidence(record(pages, f"{MENTOR}/{mine.id}")) == []
    assert graph.graph_requests() == []


def test_a_refused_attendance_permission_says_what_to_grant(graph: GraphFake) -> None:
    mine, _ = meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    conn = connector(graph, attendance=True)
    pages = list(conn.sync(None))
    graph.deny_meetings = True
    with pytest.raises(AuthError, match=r"OnlineMeetings\.Read\.All.*access policy"):
        conn.attendance_evidence(record(pages, f"{MENTOR}/{mine.id}"))


# ------------------------------------------------------------------ through the sync stage


def write_deployment(
    tmp_path: Path,
    fake: GraphFake,
    database_url: str,
    *,
    device_code: bool = False,
    pair: tuple[str, str] = (MENTOR, MENTEE),
) -> Path:
    """A roster of one pair and a config with one Graph source on the fake reading both
    mailboxes: signed in as the app (its secret in $MP_GRAPH_SECRET) or, with
    ``device_code``, by a person."""
    mentor, mentee = pair
    (tmp_path / "roster.csv").write_text(
        f"program,mentor_email,mentee_email,started_on\neng,{mentor},{mentee},2026-09-01\n"
    )
    config = tmp_path / "mentorpulse.yaml"
    sign_in = "auth: device_code" if device_code else "client_secret: ${MP_GRAPH_SECRET}"
    config.write_text(
        f"""database: {database_url}
timezone: Europe/Berlin
sources:
  - id: m365
    kind: microsoft
    tenant_id: {fake.tenant}
    client_id: {fake.client_id}
    {sign_in}
    mailboxes: [{mentor}, {mentee}]
    authority_host: {fake.url}
    graph_url: {fake.url}/v1.0
    ca_bundle: {fake.ca_path}
    window_past: 30d
    window_future: 30d
programs:
  - id: eng
    cadence: {{every: 14d}}
"""
    )
    return config


def test_the_sync_stage_stores_graph_events_once(
    graph: GraphFake, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import func, select

    from mentorpulse import stages
    from mentorpulse.storage.models import Event, MentoringSession

    monkeypatch.setenv("MP_GRAPH_SECRET", graph.client_secret)
    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    series(graph)
    graph.put(  # not about the pair: dropped at ingest
        MENTOR,
        FakeEvent(
            id=graph.next_id(),
            ical_uid="other",
            subject="Budget",
            start=datetime(2026, 11, 11, 9, tzinfo=UTC),
            end=datetime(2026, 11, 11, 10, tzinfo=UTC),
            organizer=MENTOR,
            attendees=[("cfo@contoso.example", "required", "accepted")],
        ),
    )
    ctx = stages.Context.open(write_deployment(tmp_path, graph, database_url), clock=lambda: NOW)
    try:
        [first] = stages.sync_sources(ctx)
        assert first.ok, first.error
        assert first.stored == 6
        assert first.dropped == 1
        with ctx.db() as db:
            assert db.scalar(select(func.count()).select_from(Event)) == 6
        [again] = stages.sync_sources(ctx)
        assert again.ok
        assert again.stored + again.deleted == 0
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            outcomes = sorted(db.scalars(select(MentoringSession.outcome)))
        # The two copies of the single meeting fold into one session; the series gives
        # one session per occurrence, the cancelled one included.
        assert outcomes == sorted(
            ["presumed_held", "presumed_held", "presumed_held", "cancelled", "upcoming"]
        )
    finally:
        ctx.engine.dispose()


def test_cli_sync_with_a_bad_secret_is_one_clear_line(
    graph: GraphFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app

    wrong = "wrong-Secret~value-123"
    monkeypatch.setenv("MP_GRAPH_SECRET", wrong)
    config = write_deployment(tmp_path, graph, f"sqlite:///{tmp_path / 'mp.db'}")
    result = CliRunner().invoke(app, ["--log-json", "sync", "--once", "--config", str(config)])
    assert result.exit_code == 1
    assert "invalid_client" in result.output
    assert "Traceback" not in result.output
    assert wrong not in result.output


# ------------------------------------------------------------------ device-code sign-in


def test_device_code_sign_in_stores_the_refresh_token_encrypted_and_sync_uses_it(
    graph: GraphFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app
    from mentorpulse.credentials import generate_key

    monkeypatch.setenv("MENTORPULSE_SECRET_KEY", generate_key())
    graph.auto_approve = MENTOR
    config = write_deployment(tmp_path, graph, f"sqlite:///{tmp_path / 'mp.db'}")
    text = config.read_text().replace("    client_secret: ${MP_GRAPH_SECRET}\n", "")
    config.write_text(
        text.replace("    kind: microsoft\n", "    kind: microsoft\n    auth: device_code\n")
    )

    result = CliRunner().invoke(app, ["auth", "microsoft", "--source", "m365", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "FAKE-CODE" in result.output  # the instruction the user follows
    [refresh] = graph.refresh_tokens
    stored = (tmp_path / "tokens.json").read_text()
    assert refresh not in stored
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0

    meeting(graph, datetime(2026, 11, 10, 10, tzinfo=UTC), uid="u1")
    result = CliRunner().invoke(app, ["--log-json", "sync", "--once", "-c", str(config)])
    assert result.exit_code == 0, result.output
    grants = [r for r in graph.log if r.path.endswith("/oauth2/v2.0/token")]
    assert len(grants) == 2  # the device code, then the refresh token


def test_device_code_sign_in_without_a_key_says_what_to_do(
    graph: GraphFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app

    monkeypatch.delenv("MENTORPULSE_SECRET_KEY", raising=False)
    config = write_deployment(tmp_path, graph, f"sqlite:///{tmp_path / 'mp.db'}")
    text = config.read_text().replace("    client_secret: ${MP_GRAPH_SECRET}\n", "")
    config.write_text(
        text.replace("    kind: microsoft\n", "    kind: microsoft\n    auth: device_code\n")
    )
    result = CliRunner().invoke(app, ["auth", "microsoft", "--source", "m365", "-c", str(config)])
    assert result.exit_code == 1
    assert "mentorpulse auth key" in result.output
    assert "Traceback" not in result.output


def test_a_source_nobody_signed_in_for_is_an_auth_error(graph: GraphFake, tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="mentorpulse auth microsoft --source m365"):
        listed(graph, None, auth="device_code", client_secret=None)


def test_teams_attendance_turns_presumed_held_into_held_or_missed(
    graph: GraphFake, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import select

    from mentorpulse import stages
    from mentorpulse.storage.models import MentoringSession

    monkeypatch.setenv("MP_GRAPH_SECRET", graph.client_secret)
    both = datetime(2026, 11, 10, 10, tzinfo=UTC)
    alone = datetime(2026, 11, 17, 10, tzinfo=UTC)
    unlogged = datetime(2026, 11, 19, 10, tzinfo=UTC)
    meeting(graph, both, uid="both")
    meeting(graph, alone, uid="alone")
    meeting(graph, unlogged, uid="unlogged", join_url=None)
    online = graph.add_meeting(MENTOR, JOIN)
    online.reports = [
        AttendanceReport(
            "r1",
            both,
            both + timedelta(hours=1),
            [
                (MENTOR, 3500, both, both + timedelta(hours=1)),
                (MENTEE, 3400, both + timedelta(minutes=2), both + timedelta(hours=1)),
            ],
        ),
        AttendanceReport(  # the mentor waited alone
            "r2", alone, alone + timedelta(minutes=20), [(MENTOR, 1200, alone, alone)]
        ),
    ]
    config = write_deployment(tmp_path, graph, database_url)
    config.write_text(
        config.read_text().replace("    window_past", "    attendance: true\n    window_past")
    )
    ctx = stages.Context.open(config, clock=lambda: NOW)
    try:
        [result] = stages.sync_sources(ctx)
        assert result.ok, result.error
        assert result.attendance_checked == 4  # both copies of the two online meetings
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            outcomes = {s.start: s.outcome for s in db.scalars(select(MentoringSession))}
    finally:
        ctx.engine.dispose()
    assert outcomes == {both: "held", alone: "missed", unlogged: "presumed_held"}


# ------------------------------------------------------------------ scale and faults


def test_many_mailboxes_go_in_batches_of_at_most_20(graph: GraphFake) -> None:
    people = [f"p{n:02d}@contoso.example" for n in range(45)]
    for person in people:
        graph.mailbox(person)
    conn = connector(graph, mailboxes=people)
    pages = list(conn.sync(None))
    batches = [r for r in graph.graph_requests(in_batch=False) if r.path.endswith("$batch")]
    assert len(batches) == 3  # 20 + 20 + 5; the fake answers 400 beyond 20
    assert conn.requests == 3
    assert len(graph.graph_requests(in_batch=True)) == 45
    assert set(cursor_of(pages)["mailboxes"]) == set(people)  # type: ignore[index]


def test_a_throttled_batch_as_a_whole_is_retried(graph: GraphFake) -> None:
    cursor = cursor_of(listed(graph))
    graph.throttle("$batch", status=429, retry_after="1")
    sleeps: list[float] = []
    listed(graph, cursor, sleeps=sleeps)
    assert sleeps == [1.0]


def test_a_mailbox_outside_the_rbac_scope_names_the_mailbox(graph: GraphFake) -> None:
    graph.forbidden.add(MENTEE)
    with pytest.raises(AuthError) as raised:
        listed(graph)
    assert MENTEE in raised.value.message
    assert "RBAC" in raised.value.message


def test_a_server_error_is_transient(graph: GraphFake) -> None:
    graph.throttle(MENTOR, status=500, retry_after="", times=1)
    with pytest.raises(TransientError, match="HTTP 500"):
        listed(graph, None, mailboxes=[MENTOR])


def test_an_unreadable_certificate_is_an_auth_error_naming_the_file(graph: GraphFake) -> None:
    with pytest.raises(AuthError, match=r"cannot read certificate_path missing\.pem"):
        listed(
            graph,
            None,
            client_secret=None,
            certificate_path="missing.pem",
            certificate_thumbprint="ab" * 20,
        )


def test_an_unknown_tenant_is_an_auth_error(graph: GraphFake) -> None:
    with pytest.raises(AuthError, match="sign-in failed"):
        listed(graph, None, tenant_id="fabrikam.example")


def test_an_unreachable_sign_in_service_is_transient(graph: GraphFake) -> None:
    with pytest.raises(TransientError, match="cannot reach the Microsoft sign-in service"):
        listed(graph, None, authority_host="https://127.0.0.1:9")

"""The connector contract for on-premises Exchange: exchangelib against the EWS fake, plus
what only EWS does (impersonation refused per mailbox, ErrorServerBusy's back-off, and a
pair's two mailboxes telling one session)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mentorpulse import stages
from mentorpulse.config.schema import ExchangeSource
from mentorpulse.connectors.base import AuthError, CursorExpired, TransientError, TryAgain
from mentorpulse.connectors.exchange import ExchangeConnector
from mentorpulse.model import Response, SyncPage
from mentorpulse.storage.models import Evidence, MentoringSession
from tests.connectors.contract import (
    ACCEPTED,
    KICKOFF,
    LATER,
    MENTEE,
    MENTOR,
    NOW,
    SOURCE,
    ConnectorContract,
    Harness,
    LiveSource,
)
from tests.fakes.ews_api import OUTLOOK_ZONES, CalendarItem, EwsFake, Occurrence

MAILBOXES = [MENTOR, MENTEE]
ANSWERS = {Response.ACCEPTED: "accepted", Response.DECLINED: "declined"}
MY_RESPONSE = {"accepted": "Accept", "declined": "Decline", "tentative": "Tentative"}
PASSWORD_VARIABLE = "MP_CONTRACT_EWS_PASSWORD"


@dataclass
class Meeting:
    """One meeting's copies, by mailbox (a series is one item with its occurrences)."""

    copies: dict[str, CalendarItem] = field(default_factory=dict)


class LiveExchange(LiveSource):
    """Both people's mailboxes on the fake server, read by a service account with
    ApplicationImpersonation over Basic auth; a CalendarView holds at most 3 items, so a
    window with more is split."""

    def __init__(self, fake: EwsFake, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = fake
        self.meetings: dict[str, Meeting] = {}
        self.saved_password = fake.password
        self.read = MAILBOXES  # the mailboxes the source lists
        self.discover_from: str | None = None  # autodiscover from this address, not url
        monkeypatch.setenv(PASSWORD_VARIABLE, fake.password)

    @property
    def connector_class(self) -> type:
        return ExchangeConnector

    def source(self) -> dict[str, Any]:
        endpoint: dict[str, Any] = (
            {"autodiscover": True, "autodiscover_email": self.discover_from}
            if self.discover_from
            else {"url": self.fake.url}
        )
        return {
            "id": SOURCE,
            "kind": "exchange",
            **endpoint,
            "auth": "basic",
            "username": self.fake.username,
            "password": f"${{{PASSWORD_VARIABLE}}}",
            "mailboxes": self.read,
            "ca_bundle": str(self.fake.ca_path),
            "view_limit": 3,
        }

    def _put(self, name: str, start: datetime, answer: str, **fields: Any) -> Meeting:
        meeting = Meeting()
        for mailbox in MAILBOXES:
            meeting.copies[mailbox] = self.fake.put(
                mailbox,
                CalendarItem(
                    id=self.fake.next_id(),
                    uid=name,
                    subject="Mentoring",
                    organizer=MENTOR,
                    start=start,
                    end=start + timedelta(hours=1),
                    attendees=[(MENTEE, "required", answer)],
                    my_response="Organizer"
                    if mailbox == MENTOR
                    else MY_RESPONSE.get(answer, "NoResponseReceived"),
                    **fields,
                ),
            )
        self.meetings[name] = meeting
        return meeting

    def add_meeting(self, name: str, start: datetime, response: Response = ACCEPTED) -> None:
        self._put(name, start, ANSWERS[response])

    def add_series(self, name: str, starts: list[datetime]) -> None:
        # Each copy has occurrences of its own (a mailbox's copy changes on its own).
        meeting = self._put(name, starts[0], "accepted")
        for mailbox, item in meeting.copies.items():
            item.occurrences = [Occurrence(s, s, s + timedelta(hours=1)) for s in starts]
            self.fake.put(mailbox, item)

    def _change(self, name: str) -> Iterator[tuple[str, CalendarItem]]:
        for mailbox, item in self.meetings[name].copies.items():
            yield mailbox, item
            self.fake.put(mailbox, item)

    def respond(self, name: str, response: Response) -> None:
        for mailbox, item in self._change(name):
            item.attendees = [(MENTEE, "required", ANSWERS[response])]
            if mailbox == MENTEE:
                item.my_response = MY_RESPONSE[ANSWERS[response]]

    def _occurrence(self, item: CalendarItem, original: datetime) -> Occurrence:
        assert item.occurrences is not None
        return next(o for o in item.occurrences if o.original_start == original)

    def move_occurrence(self, name: str, original: datetime, start: datetime) -> None:
        for _, item in self._change(name):
            occurrence = self._occurrence(item, original)
            occurrence.start, occurrence.end = start, start + timedelta(hours=1)
            occurrence.changed = True

    def cancel_occurrence(self, name: str, original: datetime) -> None:
        # As Exchange does it: gone from the organizer's series, cancelled in the
        # attendee's copy (until they remove it from their calendar).
        for mailbox, item in self._change(name):
            occurrence = self._occurrence(item, original)
            if mailbox == MENTOR:
                occurrence.deleted = True
            else:
                occurrence.cancelled = True

    def delete(self, name: str) -> None:
        for mailbox, item in self.meetings.pop(name).copies.items():
            self.fake.delete(mailbox, item.id)

    def add_bad_item(self, name: str, start: datetime) -> None:
        self._put(name, start, "accepted", unreadable=True)

    def expire_cursor(self, harness: Harness) -> None:
        for mailbox in MAILBOXES:
            self.fake.expire_sync_state(mailbox)

    def break_auth(self) -> None:
        self.fake.password = "Rotated-By-The-Domain-Admin-2!"  # ours is refused now

    def mend_auth(self) -> None:
        self.fake.password = self.saved_password


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsFake]:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    server = EwsFake(tmp_path)
    for mailbox in MAILBOXES:
        server.mailbox(mailbox)
    yield from server.serve()


class TestExchange(ConnectorContract):
    @pytest.fixture
    def live(self, fake: EwsFake, monkeypatch: pytest.MonkeyPatch) -> LiveExchange:
        return LiveExchange(fake, monkeypatch)

    def test_a_quiet_poll_is_one_request_per_mailbox(self, harness: Harness) -> None:
        live = harness.live
        assert isinstance(live, LiveExchange)
        live.add_series("weekly", [KICKOFF + timedelta(weeks=n) for n in range(3)])
        assert harness.sync().ok
        live.fake.log.clear()
        again = harness.sync()
        assert again.ok, again.error
        assert (again.stored, again.deleted) == (0, 0)
        assert [r.operation for r in live.fake.requests()] == ["SyncFolderItems"] * 2


# -------------------------------------------------------------------- EWS's own cases


def _source(fake: EwsFake, **overrides: Any) -> ExchangeSource:
    return ExchangeSource.model_validate(
        {
            "id": SOURCE,
            "kind": "exchange",
            "url": fake.url,
            "auth": "basic",
            "username": fake.username,
            "password": fake.password,
            "mailboxes": MAILBOXES,
            "ca_bundle": str(fake.ca_path),
            "window_past": "60d",
            "window_future": "60d",
            **overrides,
        }
    )


def _mailbox_of(page: SyncPage) -> str:
    """The mailbox a page read: its scopes are that mailbox's days of the window."""
    mailboxes = {scope.rpartition("/")[0] for scope in page.replaces_scopes}
    assert len(mailboxes) == 1, mailboxes
    return mailboxes.pop()


def _sync(source: ExchangeSource, tmp_path: Path, cursor: Any = None) -> list[Any]:
    return list(ExchangeConnector(source, base_dir=tmp_path, now=NOW).sync(cursor))


def test_a_mailbox_outside_the_impersonation_scope_is_an_item_error(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveExchange(fake, monkeypatch)
    live.add_meeting("kickoff", KICKOFF)
    fake.impersonation_scope = {MENTOR}
    pages = _sync(_source(fake), tmp_path)
    read = [p for p in pages if p.replaces_scopes]
    assert [_mailbox_of(p) for p in read] == [MENTOR]
    assert len(read[0].records) == 1
    [error] = [e for p in pages for e in p.errors]
    assert error.item == MENTEE
    assert "ErrorImpersonateUserDenied" in error.message
    assert "ApplicationImpersonation" in error.message
    # Every mailbox refused: the source's access is wrong, not one mailbox.
    fake.impersonation_scope = set()
    with pytest.raises(AuthError, match="none of the 2 mailboxes"):
        _sync(_source(fake), tmp_path)


def test_delegate_access_reads_the_calendars_shared_with_the_account(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    fake.delegates = {MENTOR}
    pages = _sync(_source(fake, access="delegate"), tmp_path)
    assert [_mailbox_of(p) for p in pages if p.replaces_scopes] == [MENTOR]
    [error] = [e for p in pages for e in p.errors]
    assert error.item == MENTEE
    assert "Add-MailboxFolderPermission" in error.message
    assert all(r.impersonated is None for r in fake.requests())


def test_server_busy_asks_to_come_back_after_its_back_off(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveExchange(fake, monkeypatch)
    live.add_meeting("kickoff", KICKOFF)
    cursor = _sync(_source(fake), tmp_path)[-1].cursor
    live.add_meeting("later", LATER)
    fake.busy(times=1, back_off_ms=45_000)
    with pytest.raises(TryAgain) as busy:
        _sync(_source(fake), tmp_path, cursor)
    assert busy.value.retry_after == 45.0
    again = _sync(_source(fake), tmp_path, cursor)  # the server is back
    assert sum(len(p.records) for p in again) == 4


def test_an_expired_sync_state_is_a_cursor_expiry(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    cursor = _sync(_source(fake), tmp_path)[-1].cursor
    fake.expire_sync_state(MENTEE)
    with pytest.raises(CursorExpired, match=MENTEE):
        _sync(_source(fake), tmp_path, cursor)


@pytest.mark.parametrize("fault", ["drop", "500"])
def test_a_dropped_connection_or_a_500_is_transient(
    fault: str, fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    if fault == "drop":
        fake.drop_next("GetItem")
    else:
        fake.fail_next("FindItem", 500)
    with pytest.raises(TransientError) as failed:
        _sync(_source(fake), tmp_path)
    assert not isinstance(failed.value, AuthError | CursorExpired)
    assert fake.password not in str(failed.value)


def test_an_untrusted_certificate_names_ca_bundle(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    with pytest.raises(TransientError, match="ca_bundle"):
        _sync(_source(fake, ca_bundle=None), tmp_path)


def test_a_full_window_is_split_until_no_view_reaches_the_limit(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = LiveExchange(fake, monkeypatch)
    starts = [KICKOFF - timedelta(days=40) + timedelta(days=4 * n) for n in range(20)]
    live.add_series("weekly", starts)
    fake.find_limit = 4  # the server's EWSFindCountLimit, lower than view_limit
    pages = _sync(_source(fake, view_limit=4), tmp_path)
    mentor = next(p for p in pages if p.replaces_scopes and _mailbox_of(p) == MENTOR)
    assert sorted(r.start for r in mentor.records) == starts
    assert len(fake.requests("FindItem")) > 2


def test_a_pair_in_two_mailboxes_is_one_session_with_both_answers(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The organizer's copy has not heard from the mentee yet (NoResponseReceived); the
    mentee's own copy says Tentative (MyResponseType), which wins for the mentee."""
    live = LiveExchange(fake, monkeypatch)
    live._put("pair", LATER, "none")
    live.meetings["pair"].copies[MENTEE].my_response = "Tentative"
    fake.put(MENTEE, live.meetings["pair"].copies[MENTEE])
    harness = Harness(live, database_url, tmp_path, monkeypatch)
    try:
        result = harness.sync()
        assert result.ok, result.error
        assert result.stored == 2  # one copy in each mailbox
        ctx = harness.context()
        stages.rebuild_sessions(ctx)
        with ctx.db() as db:
            [session] = db.scalars(select(MentoringSession)).all()
            evidence = db.scalars(select(Evidence).where(Evidence.session_id == session.id))
            said = {(e.party, e.kind, e.detail) for e in evidence}
        assert session.outcome == "upcoming"
        parties = {party for party, _, _ in said}
        assert {MENTOR, MENTEE} <= parties, said
        assert any(p == MENTEE and "tentative" in d.lower() for p, _, d in said), said
    finally:
        harness.close()


def test_outlook_zone_names_are_mapped_and_an_unknown_one_falls_back_with_a_warning(
    fake: EwsFake, tmp_path: Path
) -> None:
    served = {
        "by-id": ("Romance Standard Time", None),
        "by-display-name": ("", OUTLOOK_ZONES["AUS Eastern Standard Time"][0]),
        "custom": ("tzone://Microsoft/Custom", "Customized Time Zone"),
    }
    for offset, (uid, (zone, name)) in enumerate(served.items()):
        start = KICKOFF + timedelta(hours=offset)
        fake.put(
            MENTOR,
            CalendarItem(
                id=fake.next_id(),
                uid=uid,
                subject="Mentoring",
                organizer=MENTOR,
                start=start,
                end=start + timedelta(hours=1),
                attendees=[(MENTEE, "required", "accepted")],
                zone=zone,
                zone_name=name,
            ),
        )
    pages = _sync(_source(fake, mailboxes=[MENTOR]), tmp_path)
    zones = {r.ical_uid: r.zone for p in pages for r in p.records}
    assert zones == {
        "by-id": OUTLOOK_ZONES["Romance Standard Time"][1],
        "by-display-name": OUTLOOK_ZONES["AUS Eastern Standard Time"][1],
        "custom": "UTC",  # the config's timezone stands in for the mailbox's
    }
    [warning] = [e for p in pages for e in p.errors]
    assert "custom time zone" in warning.message


def test_ntlm_signs_in_and_a_wrong_password_is_refused(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTLM as IIS asks for it (exchangelib through requests_ntlm, pyspnego's acceptor)."""
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    monkeypatch.setenv("NTLM_USER_FILE", str(fake.use_ntlm(tmp_path)))
    pages = _sync(_source(fake, auth="ntlm", username=fake.username), tmp_path)
    assert sum(len(p.records) for p in pages) == 2
    with pytest.raises(AuthError) as refused:
        _sync(_source(fake, auth="ntlm", username=fake.username, password="wrong"), tmp_path)
    assert "wrong" not in str(refused.value)


def test_a_calendar_that_empties_at_once_is_held_until_a_second_sync_confirms(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The sync stage's guard, source-wide as for every source: with one page per
    mailbox, a mailbox that empties at once is held until the next full listing."""
    live = LiveExchange(fake, monkeypatch)
    live.read = [MENTOR]
    for n in range(12):
        live.add_meeting(f"m{n}", KICKOFF - timedelta(days=n))
    harness = Harness(live, database_url, tmp_path, monkeypatch)
    try:
        assert harness.sync().ok
        for n in range(12):
            live.delete(f"m{n}")  # the calendar looks empty (say, a broken scope)
        held = harness.sync()
        assert not held.ok
        assert held.held_deletions == 12
        assert harness.rows() == 12  # reported, not applied
        confirmed = harness.sync()
        assert confirmed.ok, confirmed.error
        assert harness.rows() == 0
    finally:
        harness.close()


def test_a_series_with_a_moved_and_a_cancelled_occurrence(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exchange's own shapes: the moved instance is an exception keeping its original
    start; the cancelled one is gone from the organizer's series and cancelled (by the
    organizer, when the cancellation arrived) in the attendee's copy."""
    live = LiveExchange(fake, monkeypatch)
    starts = [KICKOFF + timedelta(weeks=n) for n in range(3)]
    live.add_series("weekly", starts)
    moved_to = starts[1] + timedelta(days=1)
    live.move_occurrence("weekly", starts[1], moved_to)
    live.cancel_occurrence("weekly", starts[2])
    pages = _sync(_source(fake), tmp_path)
    by_mailbox = {_mailbox_of(p): p.records for p in pages if p.replaces_scopes}
    organizer = sorted((r.original_start, r.start, r.status) for r in by_mailbox[MENTOR])
    assert organizer == [
        (starts[0], starts[0], "confirmed"),
        (starts[1], moved_to, "confirmed"),
    ]
    [cancelled] = [r for r in by_mailbox[MENTEE] if r.status == "cancelled"]
    assert cancelled.original_start == starts[2]
    assert cancelled.series_id == "weekly"
    assert cancelled.organizer == MENTOR
    assert cancelled.updated is not None
    assert {r.series_id for p in pages for r in p.records} == {"weekly"}


def test_the_server_version_is_asked_once_and_kept_in_the_cursor(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchangelib.protocol import close_connections  # forgets exchangelib's protocols

    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    cursor = _sync(_source(fake), tmp_path)[-1].cursor
    assert cursor["server_version"] == "15.1.2507.6"
    assert len(fake.requests("ConvertId")) == 1  # exchangelib's version probe
    close_connections()  # as a new process would start
    fake.log.clear()
    _sync(_source(fake), tmp_path, cursor)
    assert [r.operation for r in fake.requests()] == ["SyncFolderItems"] * 2


def test_meetings_behind_a_moved_window_are_kept_and_deletions_within_it_seen(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    live = LiveExchange(fake, monkeypatch)
    live.read = [MENTOR]
    old = NOW - timedelta(days=59)  # inside the 60-day window today, behind it next week
    live.add_meeting("old", old)
    live.add_meeting("kickoff", KICKOFF)
    live.add_meeting("later", LATER)
    harness = Harness(live, database_url, tmp_path, monkeypatch)
    try:
        assert harness.sync().ok
        assert harness.rows() == 3
        live.delete("later")
        harness.close_context()
        later = NOW + timedelta(days=7)  # the window moved a week on
        harness._ctx = stages.Context.open(harness.folder / "mentorpulse.yaml", clock=lambda: later)
        harness._ctx_config = harness.config()
        moved = harness.sync()
        assert moved.ok, moved.error
        starts = {start for start, _ in harness.stored()}
        assert starts == {old, KICKOFF}  # history kept, the deletion applied
    finally:
        harness.close()


@pytest.mark.parametrize("first_sync", [False, True], ids=["later-sync", "first-sync"])
def test_server_busy_puts_the_next_attempt_after_the_back_off(
    first_sync: bool,
    fake: EwsFake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    """A later sync meets it on SyncFolderItems; the first, on exchangelib's version probe."""
    live = LiveExchange(fake, monkeypatch)
    live.add_meeting("kickoff", KICKOFF)
    harness = Harness(live, database_url, tmp_path, monkeypatch)
    try:
        if not first_sync:
            assert harness.sync().ok
        fake.busy(times=1, back_off_ms=600_000)
        busy = harness.sync()
        assert not busy.ok
        assert not busy.needs_reauth
        row = harness.source_row()
        assert row.next_attempt_at is not None
        next_attempt = row.next_attempt_at.replace(tzinfo=row.next_attempt_at.tzinfo or UTC)
        assert next_attempt >= NOW + timedelta(minutes=10)
    finally:
        harness.close()


def test_cli_sync_with_a_wrong_password_is_one_clear_line(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mentorpulse.cli import app

    live = LiveExchange(fake, monkeypatch)
    live.add_meeting("kickoff", KICKOFF)
    harness = Harness(live, f"sqlite:///{tmp_path / 'mp.db'}", tmp_path, monkeypatch)
    try:
        harness.context()  # writes mentorpulse.yaml and the roster
        harness.close_context()
        wrong = "Not-The-Service-Password-9!"
        monkeypatch.setenv(PASSWORD_VARIABLE, wrong)
        config = str(tmp_path / "mentorpulse.yaml")
        result = CliRunner().invoke(app, ["--log-json", "sync", "--once", "--config", config])
        assert result.exit_code == 1
        assert "EWS refused the credentials" in result.output
        assert "Traceback" not in result.output
        assert wrong not in result.output
    finally:
        harness.close()


@pytest.fixture
def discovery(fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EwsFake:
    """The fake reachable by its organisation's names, with exchangelib's autodiscover
    cache (in memory and its file) this test's own."""
    from exchangelib.autodiscover import cache

    monkeypatch.setattr(cache, "AUTODISCOVER_PERSISTENT_STORAGE", tmp_path / "autodiscover")
    monkeypatch.setattr(cache.autodiscover_cache, "_protocols", {})
    fake.resolve_hosts(monkeypatch)
    return fake


def _discovering(fake: EwsFake, **overrides: Any) -> ExchangeSource:
    return _source(
        fake,
        **{"url": None, "autodiscover": True, "autodiscover_email": f"mentor@{fake.domain}"}
        | overrides,
    )


def test_autodiscover_finds_the_endpoint_and_the_mailboxes_are_read(
    discovery: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """exchangelib's own discovery (step 1's domain has no address, step 2's
    autodiscover host answers GetUserSettings), trusting the source's ca_bundle."""
    fake = discovery
    live = LiveExchange(fake, monkeypatch)
    live.add_meeting("kickoff", KICKOFF)
    live.discover_from = f"mentor@{fake.domain}"
    fake.mailbox(live.discover_from)
    harness = Harness(live, database_url, tmp_path, monkeypatch)
    try:
        result = harness.sync()
        assert result.ok, result.error
        assert harness.rows() == 2  # the meeting in both mailboxes
        assert [r.mailbox for r in fake.requests("GetUserSettings")] == [f"mentor@{fake.domain}"]
        assert {r.mailbox for r in fake.requests("SyncFolderItems")} == set(MAILBOXES)
        # The source's own configuration talks to the endpoint found: the server's build
        # asked of it (not guessed from the schema names discovery listed).
        cursor = harness.cursor()
        assert cursor is not None
        assert cursor["server_version"] == "15.1.2507.6"
        fake.log.clear()
        quiet = harness.sync()  # the endpoint is asked again each sync, one request
        assert (quiet.ok, quiet.stored, quiet.deleted) == (True, 0, 0), quiet.error
        assert sorted(r.operation for r in fake.requests()) == [
            "GetUserSettings",
            "SyncFolderItems",
            "SyncFolderItems",
        ]
    finally:
        harness.close()


def test_a_failed_autodiscover_is_one_clear_message_naming_the_source(
    discovery: EwsFake, tmp_path: Path
) -> None:
    with pytest.raises(TransientError) as unknown_domain:
        _sync(_discovering(discovery, autodiscover_email="mentor@elsewhere.example"), tmp_path)
    message = str(unknown_domain.value)
    assert unknown_domain.value.source_id == SOURCE
    assert "autodiscover for mentor@elsewhere.example found no EWS endpoint" in message
    assert "give the endpoint as url" in message
    assert discovery.password not in message
    with pytest.raises(TransientError, match="ca_bundle"):  # an internal CA not named
        _sync(_discovering(discovery, ca_bundle=None), tmp_path)


def test_server_busy_on_the_first_sync_asks_to_come_back_after_its_back_off(
    fake: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a server version is known, exchangelib's version probe is the first request:
    its ErrorServerBusy keeps BackOffMilliseconds too."""
    LiveExchange(fake, monkeypatch).add_meeting("kickoff", KICKOFF)
    fake.busy(times=1, back_off_ms=45_000)
    with pytest.raises(TryAgain) as busy:
        _sync(_source(fake), tmp_path)
    assert busy.value.retry_after == 45.0
    assert [r.operation for r in fake.requests()] == ["ConvertId"]
    pages = _sync(_source(fake), tmp_path)  # the server is back
    assert sum(len(p.records) for p in pages) == 2


def test_autodiscover_takes_the_internal_url_when_no_external_one_is_published(
    discovery: EwsFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An on-premises server without external access publishes only InternalEwsUrl."""
    discovery.external_access = False
    discovery.mailbox(f"mentor@{discovery.domain}")
    LiveExchange(discovery, monkeypatch).add_meeting("kickoff", KICKOFF)
    pages = _sync(_discovering(discovery), tmp_path)
    assert sum(len(p.records) for p in pages) == 2

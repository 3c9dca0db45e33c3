"""The HR and program-admin dashboard, driven over HTTP as a browser would: the magic link
read from the email a real SMTP server caught, the session cookie, CSRF refusals, a program
admin's 404 on another program, findings silenced and un-silenced, report downloads, the
SSO proxy's header. On each backend, through the real store and stages."""

from __future__ import annotations

import csv
import io
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import insert, select
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from mentorpulse.config.roster import RosterPairing
from mentorpulse.config.schema import MentorpulseConfig
from mentorpulse.service.http import Health, create_app, serving
from mentorpulse.stages import Context, evaluate_rules, send_notifications
from mentorpulse.stages.silences import SilenceRequest, add_silence
from mentorpulse.storage import roster as stored_roster
from mentorpulse.storage.engine import make_engine, session_factory
from mentorpulse.storage.models import (
    Base,
    Finding,
    MentoringSession,
    OutboxMessage,
    Pairing,
    SignInLink,
)
from tests.servers.smtpd import SmtpServer

HR = "hana@example.org"
ENG_ADMIN = "ana@example.org"
SALES_ADMIN = "sam@example.org"
STRANGER = "mallory@example.org"
ROSTER = [
    RosterPairing(
        program=program,
        mentor_email=f"mentor{i}@example.org",
        mentee_email=f"mentee{i}@example.org",
        started_on=date(2025, 1, 6),
        mentor_name=f"Mentor {i}",
        mentee_name=f"Mentee {i}",
    )
    for i, program in enumerate(("eng", "eng", "sales"))
]
MET, NEVER_MET, SALES_PAIR = (entry.key for entry in ROSTER)
HTTPS = "https://testserver"


def _settings(server: SmtpServer, **dashboard: Any) -> dict[str, Any]:
    return {
        "timezone": "Europe/London",
        "programs": [
            {
                "id": "eng",
                "name": "Engineering mentoring",
                "cadence": {"every": "14d"},
                "admins": ["ana"],
                "rules": [{"id": "first", "kind": "first_meeting", "within": "10d"}],
            },
            {
                "id": "sales",
                "name": "Sales mentoring",
                "cadence": {"every": "14d"},
                "admins": [SALES_ADMIN],
                "rules": [{"id": "first", "kind": "first_meeting", "within": "10d"}],
            },
        ],
        "contacts": {
            "hr": {"email": HR, "name": "Hana HR"},
            "ana": {"email": ENG_ADMIN, "name": "Ana Admin"},
        },
        "notify": {"sender": "mentorpulse@example.org", "transport": server.config()},
        "service": {"http": {"port": 0}, "dashboard": dashboard},
    }


def _last_month() -> tuple[date, date]:
    first_this_month = datetime.now(UTC).date().replace(day=1)
    last = first_this_month - timedelta(days=1)
    return last.replace(day=1), last


@pytest.fixture
def make_ctx(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """Contexts on one database holding the roster, three sessions of the pair that met
    (last month: two held, one missed) and the findings evaluation made of it all."""
    engine = make_engine(database_url, tmp_path)
    Base.metadata.create_all(engine)
    made: list[Context] = []

    def make(server: SmtpServer, **dashboard: Any) -> Context:
        config = MentorpulseConfig.model_validate(_settings(server, **dashboard))
        ctx = Context(config, ROSTER, engine, session_factory(engine), lambda: datetime.now(UTC))
        if not made:
            _seed(ctx)
        made.append(ctx)
        return ctx

    yield make
    engine.dispose()


def _seed(ctx: Context) -> None:
    with ctx.db.begin() as db:
        stored_roster.apply_roster(db, ctx.config, ROSTER)
        met = db.scalars(select(Pairing.id).where(Pairing.key == MET)).one()
        first, _last = _last_month()
        db.execute(
            insert(MentoringSession),
            [
                {
                    "pairing_id": met,
                    "key": f"s{day}",
                    "start": datetime(first.year, first.month, day, 10, tzinfo=UTC),
                    "end": datetime(first.year, first.month, day, 11, tzinfo=UTC),
                    "outcome": outcome,
                    "confidence": 0.8,
                    "updated_at": datetime.now(UTC),
                }
                for day, outcome in ((3, "held"), (10, "held"), (17, "missed"))
            ],
        )
    evaluate_rules(ctx)


@pytest.fixture
def ctx(make_ctx: Any, server: SmtpServer) -> Context:
    context: Context = make_ctx(server)
    return context


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as browser:
        yield browser


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _ask_for_link(client: TestClient, server: SmtpServer, email: str) -> str:
    """The sign-in form, then the path of the link in the email that comes (the newest)."""
    form = client.get("/sign-in")
    assert form.status_code == 200
    sent = client.post("/sign-in", data={"email": email, "csrf_token": _csrf(form.text)})
    assert sent.status_code == 200
    assert "If that address may sign in, a link is on its way" in sent.text
    mails = server.recorder.to(email)
    assert mails, f"no sign-in mail reached {email}"
    body = mails[-1].get_body(preferencelist=("plain",))
    assert body is not None
    link = re.search(r"https?://\S+/sign-in/(\S+)", body.get_content())
    assert link, body.get_content()
    return f"/sign-in/{link.group(1)}"


def _sign_in(client: TestClient, server: SmtpServer, email: str) -> None:
    path = _ask_for_link(client, server, email)
    page = client.get(path)
    assert 'id="sign-in-confirm"' in page.text
    done = client.post(path, data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/"


def _pairing_id(ctx: Context, key: str) -> int:
    with ctx.db() as db:
        return db.scalars(select(Pairing.id).where(Pairing.key == key)).one()


def _finding_id(ctx: Context, key: str) -> int:
    with ctx.db() as db:
        query = select(Finding.id).join(Pairing).where(Pairing.key == key)
        return db.scalars(query).one()


def _rows(page: str, attribute: str) -> dict[str, str]:
    """``<tr data-…="x" …>`` of a page: value → the whole opening tag."""
    return {m.group(1): m.group(0) for m in re.finditer(rf'<tr {attribute}="([^"]+)"[^>]*>', page)}


# ------------------------------------------------------------------ magic link


def test_a_magic_link_from_the_email_signs_in_once(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/sign-in"
    path = _ask_for_link(client, server, HR)
    # Sent through the outbox, at once: a row with its Message-ID, already sent.
    with ctx.db() as db:
        row = db.scalars(select(OutboxMessage).where(OutboxMessage.template == "sign_in")).one()
    assert row.status == "sent"
    assert row.recipient == HR
    assert str(server.recorder.to(HR)[-1]["Message-ID"]) == row.message_id
    # A mail scanner's GET uses nothing: the page shows a button, twice.
    for _ in range(2):
        page = client.get(path)
        assert page.status_code == 200
        assert 'id="sign-in-confirm"' in page.text
    done = client.post(path, data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    home = client.get("/")
    assert 'id="signed-in-as"' in home.text
    assert HR in home.text
    assert set(_rows(home.text, "data-program-id")) == {"eng", "sales"}  # HR sees every one
    # The same link again: used.
    again = client.get(path)
    assert again.status_code == 410
    assert 'id="link-used"' in again.text
    refused = client.post(path, data={"csrf_token": _csrf(again.text)})
    assert 'id="link-used"' in refused.text


def test_the_answer_never_says_who_may_sign_in(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    form = client.get("/sign-in")
    answers = {
        email: client.post("/sign-in", data={"email": email, "csrf_token": _csrf(form.text)}).text
        for email in (STRANGER, HR)
    }
    assert answers[STRANGER] == answers[HR]
    assert server.recorder.to(STRANGER) == []
    assert len(server.recorder.to(HR)) == 1
    with ctx.db() as db:
        assert db.scalars(select(SignInLink.email)).all() == [HR]


def test_an_expired_link_shows_the_expiry_page_and_logs_no_token(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        path = _ask_for_link(client, server, HR)
        token = path.rpartition("/")[2]
        clock.shift(timedelta(minutes=16))
        with capture_logs() as logs:
            page = client.get(path)
        assert page.status_code == 410
        assert 'id="link-expired"' in page.text
        assert logs
        assert token not in repr(logs)
        used = client.post(path, data={"csrf_token": _csrf(client.get("/sign-in").text)})
        assert 'id="link-expired"' in used.text
    assert client.get("/", follow_redirects=False).status_code == 303  # not signed in


def test_a_forged_link_is_invalid(client: TestClient) -> None:
    page = client.get("/sign-in/not-a-token.at-all")
    assert page.status_code == 400
    assert 'id="link-invalid"' in page.text


def test_the_session_cookie_is_httponly_secure_and_lax(
    client: TestClient, server: SmtpServer
) -> None:
    path = _ask_for_link(client, server, HR)
    page = client.get(path)
    done = client.post(path, data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    cookie = next(c for c in done.headers.get_list("set-cookie") if "mentorpulse_session=" in c)
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert {"httponly", "secure", "path", "samesite", "max-age"} <= flags.keys()
    assert flags["samesite"].strip().lower() == "samesite=lax"
    assert flags["path"].strip() == "Path=/"
    assert flags["max-age"].strip() == "Max-Age=43200"  # 12h
    # Signing out ends it.
    home = client.get("/")
    out = client.post("/sign-out", data={"csrf_token": _csrf(home.text)}, follow_redirects=False)
    assert out.headers["location"] == "/sign-in"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_copied_session_cookie_is_refused_after_sign_out(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, HR)
    copied = client.cookies["mentorpulse_session"]
    home = client.get("/")
    assert home.status_code == 200
    client.post("/sign-out", data={"csrf_token": _csrf(home.text)}, follow_redirects=False)
    with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as thief:
        thief.cookies.set("mentorpulse_session", copied)
        refused = thief.get("/", follow_redirects=False)
        assert refused.status_code == 303
        assert refused.headers["location"] == "/sign-in"


def test_insecure_cookies_drop_secure_for_localhost(
    make_ctx: Any, server: SmtpServer, tmp_path: Path
) -> None:
    local = make_ctx(server, insecure_cookies=True)
    with TestClient(create_app(local, Health(local.clock()))) as browser:  # plain http
        _sign_in(browser, server, HR)
        assert HR in browser.get("/").text
        assert "mentorpulse_session" in browser.cookies


# ------------------------------------------------------------------ CSRF


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    assert client.post("/sign-in", data={"email": HR}).status_code == 403
    assert server.recorder.to(HR) == []
    _sign_in(client, server, HR)
    finding = _finding_id(ctx, NEVER_MET)
    form = {"duration": "1w", "reason": "on leave"}
    for token in ({}, {"csrf_token": "forged"}):
        refused = client.post(f"/findings/{finding}/silence", data={**form, **token})
        assert refused.status_code == 403
        assert 'id="csrf-refused"' in refused.text
    # A token from another browser's session is not this one's.
    with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as other:
        _sign_in(other, server, HR)
        theirs = _csrf(other.get("/findings").text)
    refused = client.post(f"/findings/{finding}/silence", data={**form, "csrf_token": theirs})
    assert refused.status_code == 403
    assert _rows(client.get("/findings").text, "data-finding-id")[str(finding)].count(
        'data-silenced="false"'
    )


# ------------------------------------------------------------------ scoping


def test_a_program_admin_sees_only_their_program(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, ENG_ADMIN)
    assert set(_rows(client.get("/").text, "data-program-id")) == {"eng"}
    assert client.get("/programs/eng").status_code == 200
    sales_pairing = _pairing_id(ctx, SALES_PAIR)
    sales_finding = _finding_id(ctx, SALES_PAIR)
    token = _csrf(client.get("/findings").text)
    for response in (
        client.get("/programs/sales"),
        client.get(f"/pairings/{sales_pairing}"),
        client.get("/findings?program=sales"),
        client.get("/reports?first=2025-01-01&last=2025-01-31&program=sales&format=csv"),
        client.post(
            f"/findings/{sales_finding}/silence",
            data={"duration": "1w", "reason": "x", "csrf_token": token},
        ),
    ):
        assert response.status_code == 404, response.text
        assert 'id="not-found"' in response.text
    # Nor may they end a silence of another program's pair.
    with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as hr:
        _sign_in(hr, server, HR)
        silenced = hr.post(
            f"/findings/{sales_finding}/silence",
            data={"duration": "1w", "reason": "leave", "csrf_token": _csrf(hr.get("/").text)},
        )
        assert silenced.status_code == 200  # HR may, and is back on the list
        silence = re.search(r'action="/silences/(\d+)/expire"', silenced.text)
        assert silence
    expire = client.post(f"/silences/{silence.group(1)}/expire", data={"csrf_token": token})
    assert expire.status_code == 404
    # Same answer as a program that does not exist at all.
    assert client.get("/programs/nope").status_code == 404
    listed = _rows(client.get("/findings").text, "data-finding-id")
    assert str(sales_finding) not in listed
    assert str(_finding_id(ctx, NEVER_MET)) in listed


# ------------------------------------------------------------------ pages


def test_overview_and_pairing_pages_show_the_figures_and_explain(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, HR)
    overview = client.get("/programs/eng").text
    first, _last = _last_month()
    month = _rows(overview, "data-month")
    assert first.strftime("%Y-%m") in month
    cells = re.search(
        rf'data-month="{first:%Y-%m}">\s*<td>[^<]+</td><td class="num">(\d+)</td>'
        r'<td class="num">(\d+)</td><td class="num">(\d+)</td>',
        overview,
    )
    assert cells
    assert cells.groups() == ("3", "2", "1")
    at_risk = _rows(overview, "data-pairing-id")
    assert set(at_risk) == {str(_pairing_id(ctx, NEVER_MET))}
    page = client.get(f"/pairings/{_pairing_id(ctx, MET)}").text
    sessions = _rows(page, "data-session-id")
    assert len(sessions) == 3
    assert sorted(re.findall(r'data-outcome="(\w+)"', page)) == ["held", "held", "missed"]
    assert 'data-rule-id="first"' in page
    assert 'id="answers"' in page
    assert 'id="next-deadline"' in page


def test_findings_filter_silence_and_expire(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, ENG_ADMIN)
    finding = str(_finding_id(ctx, NEVER_MET))
    firing = client.get("/findings?state=firing&rule=first").text
    assert _rows(firing, "data-finding-id").keys() == {finding}
    assert 'data-state="firing"' in _rows(firing, "data-finding-id")[finding]
    assert _rows(client.get("/findings?state=resolved").text, "data-finding-id") == {}
    done = client.post(
        f"/findings/{finding}/silence",
        data={
            "duration": "2w",
            "reason": "mentee on leave",
            "csrf_token": _csrf(firing),
            "back": "state=firing&rule=first",
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/findings?state=firing&rule=first"
    page = client.get(done.headers["location"]).text
    assert 'data-silenced="true"' in _rows(page, "data-finding-id")[finding]
    silence = re.search(r'action="/silences/(\d+)/expire"', page)
    assert silence
    expired = client.post(
        f"/silences/{silence.group(1)}/expire",
        data={"csrf_token": _csrf(page)},
        follow_redirects=False,
    )
    assert expired.status_code == 303
    again = client.get("/findings").text
    assert 'data-silenced="false"' in _rows(again, "data-finding-id")[finding]


def test_a_silence_of_every_program_shows_no_expire_button_to_a_program_admin(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    silence = add_silence(
        ctx, SilenceRequest(reason="company holiday", length=timedelta(days=7), created_by=HR)
    )
    finding = str(_finding_id(ctx, NEVER_MET))
    expire = f'action="/silences/{silence.id}/expire"'
    _sign_in(client, server, ENG_ADMIN)
    page = client.get("/findings").text
    assert 'data-silenced="true"' in _rows(page, "data-finding-id")[finding]
    assert expire not in page  # only HR may end it: no button that leads to a 404
    with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as hr:
        _sign_in(hr, server, HR)
        assert expire in hr.get("/findings").text


def test_a_program_admin_sees_only_the_sources_feeding_their_program(
    database_url: str, tmp_path: Path, server: SmtpServer
) -> None:
    settings = _settings(server)
    settings["sources"] = [
        {"id": source, "kind": "ics", "path": "calendars", "owner": owner}
        for source, owner in (
            ("eng-a", "mentor0@example.org"),
            ("eng-b", "mentee1@example.org"),
            ("sales-cal", "mentor2@example.org"),
        )
    ]
    engine = make_engine(database_url, tmp_path)
    Base.metadata.create_all(engine)
    config = MentorpulseConfig.model_validate(settings)
    ctx = Context(config, ROSTER, engine, session_factory(engine), lambda: datetime.now(UTC))
    try:
        _seed(ctx)
        with TestClient(create_app(ctx, Health(ctx.clock())), base_url=HTTPS) as browser:
            _sign_in(browser, server, ENG_ADMIN)
            overview = browser.get("/programs/eng").text
            assert _rows(overview, "data-source-id").keys() == {"eng-a", "eng-b"}
            met = _pairing_id(ctx, MET)
            stale = re.search(
                r'id="stale-sources">(.*?)</div>', browser.get(f"/pairings/{met}").text
            )
            assert stale is not None  # never synced: stale
            assert "eng-a" in stale.group(1)
            assert "eng-b" not in stale.group(1)
            assert "sales-cal" not in stale.group(1)
    finally:
        engine.dispose()


def test_reports_download_as_csv_and_show_as_html(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, ENG_ADMIN)
    first, last = _last_month()
    query = f"first={first}&last={last}"
    download = client.get(f"/reports?{query}&format=csv")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {r["program"] for r in rows} == {"eng"}  # the admin's program only
    met = next(r for r in rows if r["mentor_email"] == "mentor0@example.org")
    assert (met["scheduled"], met["attended"], met["missed"]) == ("3", "2", "1")
    shown = client.get(f"/reports?{query}&format=html")
    assert shown.status_code == 200
    assert 'id="report"' in shown.text
    assert client.get(f"/reports?first={last}&last={first}&format=csv").status_code == 400
    assert client.get("/reports?first=yesterday&last=today").status_code == 400


# ------------------------------------------------------------------ trusted header


def test_the_proxy_header_is_believed_from_trusted_proxies_only(
    make_ctx: Any, server: SmtpServer
) -> None:
    proxied = make_ctx(server, auth="trusted_header", trusted_proxies=["10.0.0.0/8"])
    app = create_app(proxied, Health(proxied.clock()))
    header = {"X-Forwarded-Email": ENG_ADMIN}
    with TestClient(app, base_url=HTTPS, client=("10.1.2.3", 40000)) as via_proxy:
        page = via_proxy.get("/", headers=header)
        assert page.status_code == 200
        assert set(_rows(page.text, "data-program-id")) == {"eng"}
        assert via_proxy.get("/", headers={"X-Forwarded-Email": STRANGER}).status_code == 403
        assert via_proxy.get("/").status_code == 403
        assert via_proxy.get("/sign-in").status_code == 404  # the proxy signs people in
        # CSRF still applies, bound to the proxy's email.
        finding = _finding_id(proxied, NEVER_MET)
        form = {"duration": "1d", "reason": "leave"}
        assert (
            via_proxy.post(f"/findings/{finding}/silence", headers=header, data=form).status_code
            == 403
        )
        token = _csrf(via_proxy.get("/findings", headers=header).text)
        done = via_proxy.post(
            f"/findings/{finding}/silence",
            headers=header,
            data={**form, "csrf_token": token},
            follow_redirects=False,
        )
        assert done.status_code == 303
    with TestClient(app, base_url=HTTPS, client=("192.0.2.7", 40000)) as direct:
        refused = direct.get("/", headers=header)
        assert refused.status_code == 403
        assert 'id="forbidden"' in refused.text


def test_trusted_header_without_proxies_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        MentorpulseConfig.model_validate({"service": {"dashboard": {"auth": "trusted_header"}}})
    with pytest.raises(ValueError, match="IP address or a CIDR block"):
        MentorpulseConfig.model_validate(
            {"service": {"dashboard": {"trusted_proxies": ["proxy.example.org"]}}}
        )
    served = MentorpulseConfig.model_validate({"service": {"http": {"enabled": False}}})
    assert not served.service.dashboard_served  # no HTTP service, no dashboard


# ------------------------------------------------------------------ a real service


def test_the_service_serves_the_dashboard_on_a_free_port(ctx: Context) -> None:
    with serving(ctx, Health(ctx.clock())) as running:
        assert running is not None
        with urllib.request.urlopen(f"{running.url}/sign-in", timeout=10) as response:
            page = response.read().decode()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert 'name="email"' in page


@pytest.mark.parametrize(("proxies", "status"), [(["127.0.0.1"], 200), (["203.0.113.9"], 403)])
def test_the_real_service_checks_the_proxy_by_its_peer_not_by_x_forwarded_for(
    make_ctx: Any, server: SmtpServer, proxies: list[str], status: int
) -> None:
    proxied = make_ctx(server, auth="trusted_header", trusted_proxies=proxies)
    with serving(proxied, Health(proxied.clock())) as running:
        assert running is not None
        request = urllib.request.Request(
            f"{running.url}/",
            headers={"X-Forwarded-Email": ENG_ADMIN, "X-Forwarded-For": "203.0.113.9"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answered = response.status
        except urllib.error.HTTPError as exc:
            answered = exc.code
    assert answered == status


# ------------------------------------------------------------------ delivery, limits, reload


def test_a_link_the_mail_server_refused_is_retried_by_the_notify_stage(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        server.recorder.refuse = "451 4.3.0 Try again later"
        form = client.get("/sign-in")
        sent = client.post("/sign-in", data={"email": HR, "csrf_token": _csrf(form.text)})
        assert "a link is on its way" in sent.text  # the person sees no difference
        with ctx.db() as db:
            row = db.scalars(select(OutboxMessage)).one()
        assert (row.status, row.attempts) == ("pending", 1)
        assert "451" in (row.last_error or "")
        server.recorder.refuse = None
        clock.shift(timedelta(minutes=3))  # past the outbox's first backoff
        send_notifications(ctx)  # (also the findings' reminders to the mentors)
        with ctx.db() as db:
            assert db.get(OutboxMessage, row.id).status == "sent"
        assert len(server.recorder.to(HR)) == 1
        assert str(server.recorder.to(HR)[0]["Message-ID"]) == row.message_id


def test_one_address_gets_at_most_five_links_per_quarter_hour(
    client: TestClient, server: SmtpServer
) -> None:
    token = _csrf(client.get("/sign-in").text)
    for _ in range(7):
        client.post("/sign-in", data={"email": HR, "csrf_token": token})
    assert len(server.recorder.to(HR)) == 5


def test_an_admin_taken_out_of_the_config_is_signed_out(
    ctx: Context, client: TestClient, server: SmtpServer
) -> None:
    _sign_in(client, server, ENG_ADMIN)
    assert client.get("/programs/eng").status_code == 200
    settings = _settings(server)
    settings["programs"][0]["admins"] = []
    ctx.config = MentorpulseConfig.model_validate(settings)  # what a SIGHUP reload does
    assert client.get("/programs/eng", follow_redirects=False).headers["location"] == "/sign-in"


def test_a_form_too_large_or_of_too_many_fields_gets_a_page_not_a_crash(
    client: TestClient,
) -> None:
    token = _csrf(client.get("/sign-in").text)
    many = client.post("/sign-in", data={"csrf_token": token, **{f"f{i}": "x" for i in range(60)}})
    assert many.status_code == 400
    assert 'id="form-refused"' in many.text
    large = client.post("/sign-in", data={"csrf_token": token, "email": "x" * 20_000})
    assert large.status_code == 413
    assert 'id="form-refused"' in large.text

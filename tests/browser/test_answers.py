"""Answering an attendance check in a real browser, as a mentor does from the email: the
link's page (a GET records nothing), its button (the POST records), and the dashboard's
pairing page showing the session held; expired and garbled links get their own pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import time_machine
from playwright.sync_api import Page, expect

from mentorpulse.signing import ANSWER, Signer
from mentorpulse.storage.keys import signing_keys
from mentorpulse.storage.models import MentoringSession
from tests.browser.conftest import HR, TOKEN, SignedIn, Site, body, keep_screenshot


def _question(site: Site) -> tuple[str, str, str]:
    """The first attendance question the service mailed: (to, its yes link, the token)."""
    link = re.compile(re.escape(f"{site.url}answer/") + f"({TOKEN})" + r"\?a=yes")
    for message in list(site.smtp.recorder.messages):
        found = link.search(body(message))
        if found:
            return str(message["To"].addresses[0].addr_spec), found.group(0), found.group(1)
    raise AssertionError(
        f"no attendance question among {len(site.smtp.recorder.messages)} mails sent"
    )


def _session_of(site: Site, token: str) -> MentoringSession:
    """The session a link asks about, read from its token as the service does."""
    with site.db() as db:
        payload = Signer(signing_keys(db), ANSWER).read(token, max_age=timedelta(days=3650))
        session = db.get(MentoringSession, int(payload["s"]))
        assert session is not None, payload
        db.expunge(session)
        return session


def _outcome_on_pairing_page(page: Page, site: Site, session: MentoringSession) -> str:
    page.goto(f"{site.url}pairings/{session.pairing_id}")
    row = page.locator(f"tr[data-session-id='{session.id}'][data-outcome]")
    expect(row).to_have_count(1)
    return str(row.get_attribute("data-outcome"))


def test_answering_yes_through_the_emailed_link_makes_the_session_held(
    site: Site, page: Page, signed_in: SignedIn, tmp_path: Path
) -> None:
    to, yes, token = _question(site)
    session = _session_of(site, token)
    assert session.outcome in {"presumed_held", "unknown"}
    dashboard = signed_in.page(HR)

    # The link's page asks, with one button; fetching it (as a mail scanner would)
    # records nothing.
    page.goto(yes)
    form = page.locator("form#answer-form[method=post]")
    expect(form).to_be_visible()
    expect(form.locator("button[name=answer]")).to_have_count(1)
    expect(form.locator("button[name=answer][value=yes]")).to_be_visible()
    assert _outcome_on_pairing_page(dashboard, site, session) == session.outcome

    form.locator("button[name=answer][value=yes]").click()
    expect(page.locator("#answer-recorded[data-answer='yes']")).to_be_visible()

    assert _outcome_on_pairing_page(dashboard, site, session) == "held"
    # The answer is there for a reader of the pairing page, with who gave it.
    answer = dashboard.locator(f"#answers tr[data-session-id='{session.id}']")
    expect(answer).to_have_count(1)
    expect(answer).to_have_attribute("data-party", to)
    expect(answer).to_have_attribute("data-answer", "yes")
    expect(answer).to_contain_text("it took place")
    keep_screenshot(dashboard, "dashboard-pairing-answered.png", tmp_path)
    keep_screenshot(page, "answer-recorded.png", tmp_path)


def test_an_expired_answer_link_shows_the_expiry_page(site: Site, page: Page) -> None:
    _, _, token = _question(site)
    with site.db() as db:
        signer = Signer(signing_keys(db), ANSWER)
    claims = signer.read(token, max_age=timedelta(days=3650))
    # The same question, its answer window closed yesterday (the deadline it carries).
    closed = {**claims, "d": int((datetime.now(UTC) - timedelta(days=1)).timestamp())}
    page.goto(f"{site.url}answer/{signer.sign(closed)}?a=yes")
    expect(page.locator("#link-expired")).to_be_visible()
    expect(page.locator("body")).to_contain_text("closed")
    expect(page.locator("button[name=answer]")).to_have_count(0)

    # Signed so long ago that the signature itself has expired.
    with time_machine.travel(datetime.now(UTC) - timedelta(days=60), tick=False):
        old = signer.sign(claims)
    page.goto(f"{site.url}answer/{old}?a=yes")
    expect(page.locator("#link-expired")).to_be_visible()
    expect(page.locator("body")).to_contain_text("expired")

    # A link cut short in the mail: its own clear page.
    page.goto(f"{site.url}answer/{token[:-6]}?a=yes")
    expect(page.locator("#link-invalid")).to_be_visible()
    expect(page.locator("button[name=answer]")).to_have_count(0)

"""Fixtures of the browser tests: headless Chromium driven by Playwright, and the real
service (`mentorpulse run`) on the demo organisation with aiosmtpd catching its mail.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/run``; another with
``$MENTORPULSE_CHROMIUM``): Playwright's own browser download is not reachable here, so
Playwright only drives that executable. Without Chromium or Playwright the tests skip with
a message, and fail in CI (``CI`` set), as the PostgreSQL tests do.

Cheap by design: one Chromium and one service per module (Playwright's driver stops with
the module, before the rest of the suite runs); each test gets fresh browser contexts,
signed in once per module and address (:class:`SignedIn`) unless signing in is the test.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from mentorpulse import stages
from mentorpulse.sample import write_demo
from mentorpulse.service.runner import sync_job
from tests.servers.ports import free_port
from tests.servers.smtpd import PASSWORD, SmtpServer, smtp_server
from tests.service_support import RunProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM_ENV = "MENTORPULSE_CHROMIUM"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS_ENV = "MENTORPULSE_SCREENSHOTS"  # a folder: keep the pages' screenshots there
SMTP_PASSWORD_ENV = "MENTORPULSE_BROWSER_SMTP_PASSWORD"
WAIT = 45.0  # seconds: a service start or a mail on a loaded 2-core machine
STEP_MS = 20_000  # Playwright's bound on one action or expectation

HR = "hr@demo.example"  # contact `hr`: notify.hr, sees every program
ENG_ADMIN = "eng-mentoring@demo.example"  # admins of `engineering` only
TOKEN = r"[A-Za-z0-9_\-\.]+"


def _missing(why: str) -> None:
    """Skip with ``why``, or fail in CI, where the browser tests must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run the browser tests: .ci/run installs Chromium)")
    pytest.skip(why)


def chromium_path() -> str:
    return os.environ.get(CHROMIUM_ENV) or CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per module."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("browser tests need Playwright: pip install -e '.[test]'")
    executable = chromium_path()
    if not os.access(executable, os.X_OK):
        _missing(
            f"browser tests need Chromium at {executable} "
            f"(apt-get install chromium, or set ${CHROMIUM_ENV})"
        )
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=executable, headless=True, timeout=60_000
            )
        except Error as exc:
            _missing(f"Chromium at {executable} does not start under Playwright: {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Site:
    """The running service on the demo organisation, and the mail it sent."""

    url: str  # ends with "/"
    folder: Path
    config: Path
    smtp: SmtpServer
    process: RunProcess
    db: sessionmaker[Session]

    def mail_to(self, address: str) -> list[EmailMessage]:
        return self.smtp.recorder.to(address)

    def wait_for_mail(self, address: str, after: int, link: str) -> str:
        """The first link matching ``link`` (a regex) in a mail to ``address`` beyond the
        first ``after`` ones, waiting for the service to send it."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for message in self.mail_to(address)[after:]:
                found = re.search(link, body(message))
                if found:
                    return found.group(0)
            assert self.process.process.poll() is None, self.process.log[-4000:]
            time.sleep(0.1)
        pytest.fail(f"within {WAIT:.0f} s, no mail to {address} with a link {link!r}")


def body(message: EmailMessage) -> str:
    """The plain-text part (else the HTML) of a mail, as a reader sees it."""
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None, message
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _configure(config: Path, smtp: SmtpServer, port: int) -> None:
    """The demo's config, served on ``port`` (links in mail name it), its dashboard on
    plain HTTP (insecure_cookies: localhost only), its mail through ``smtp``, both programs
    asking both parties after each session. Who may sign in is the demo's: its ``hr``
    contact (every program) and each program's admins (``eng-admin``: engineering only)."""
    settings: dict[str, Any] = yaml.safe_load(config.read_text())
    settings["notify"]["transport"] = smtp.config(password=f"${{{SMTP_PASSWORD_ENV}}}")
    settings["reports"]["send"] = []  # no scheduled report among the mail the tests read
    for program in settings["programs"]:  # each question in a mail of its own, at once
        program["attendance_check"] = {
            "ask": ["mentor", "mentee"],
            "after": "2h",
            "answer_within": "7d",
        }
    service = settings.setdefault("service", {})
    service["http"] = {
        "host": "127.0.0.1",
        "port": port,
        "public_url": f"http://127.0.0.1:{port}/",
    }
    service["dashboard"] = {"insecure_cookies": True}
    config.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))


def _prepare(config: Path) -> None:
    """What the service's first jobs would do (sync, sessions, rules, notify), done before
    it starts and recorded as its jobs' runs: the service starts with nothing due, so no
    job of its own runs beside the browser (and its mail is in the SMTP server already)."""
    ctx = stages.Context.open(config)
    try:
        for source in ctx.config.sources:
            with ctx.recorded(sync_job(source.id)):
                stages.sync_sources(ctx, [source.id])
        with ctx.recorded("evaluate"):
            stages.rebuild_sessions(ctx)
            stages.evaluate_rules(ctx)
        with ctx.recorded("notify"):
            stages.send_notifications(ctx)
    finally:
        ctx.engine.dispose()


def _until_healthy(url: str, process: RunProcess) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.process.poll() is None, f"the service exited:\n{process.log[-4000:]}"
        try:
            with urllib.request.urlopen(f"{url}readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"the service did not become ready at {url} within {WAIT:.0f} s")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Site]:
    """`mentorpulse run` on the demo organisation (SQLite), its HTTP service on a free
    port chosen first, so that ``public_url`` (the links in its mail) names the port it
    really listens on (``port: 0`` would leave the links without one)."""
    folder = tmp_path_factory.mktemp("org")
    with pytest.MonkeyPatch.context() as env, smtp_server(folder) as smtp:
        env.setenv("HOME", str(folder))  # no state of this machine's user is read
        env.delenv("MENTORPULSE_DATA_DIR", raising=False)
        env.setenv(SMTP_PASSWORD_ENV, PASSWORD)
        write_demo(folder, today=datetime.now(UTC).date())
        config = folder / "mentorpulse.yaml"
        port = free_port()
        _configure(config, smtp, port)
        _prepare(config)
        process = RunProcess(config)
        engine = create_engine(f"sqlite:///{folder / 'mentorpulse.db'}")
        try:
            url = f"http://127.0.0.1:{port}/"
            _until_healthy(url, process)
            yield Site(url, folder, config, smtp, process, sessionmaker(engine))
        finally:
            process.stop()
            engine.dispose()


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A browser profile with bounded waits (``storage_state``: already signed in)."""
    opened = browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, **options
    )
    opened.set_default_timeout(STEP_MS)
    opened.set_default_navigation_timeout(STEP_MS)
    return opened


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) for one test."""
    opened = new_context(browser)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


class SignedIn:
    """Browser profiles signed in once per module and address (through the emailed link,
    as :func:`sign_in` does): a test that is not about signing in starts signed in."""

    def __init__(self, site: Site, browser: Browser) -> None:
        self.site, self.browser = site, browser
        self.states: dict[str, Any] = {}
        self.opened: list[BrowserContext] = []

    def page(self, email: str) -> Page:
        if email not in self.states:
            first = new_context(self.browser)
            sign_in(first.new_page(), self.site, email)
            self.states[email] = first.storage_state()
            first.close()
        context = new_context(self.browser, storage_state=self.states[email])
        self.opened.append(context)
        return context.new_page()

    def close(self) -> None:
        for context in self.opened:
            context.close()
        self.opened.clear()


@pytest.fixture(scope="module")
def signed_in_states(site: Site, browser: Browser) -> SignedIn:
    return SignedIn(site, browser)


@pytest.fixture
def signed_in(signed_in_states: SignedIn) -> Iterator[SignedIn]:
    """``signed_in.page(email)``: a page of a profile signed in as ``email``."""
    try:
        yield signed_in_states
    finally:
        signed_in_states.close()


def keep_screenshot(page: Page, name: str, folder: Path) -> Path:
    """A full-page screenshot in ``folder`` (and in ``$MENTORPULSE_SCREENSHOTS``, for a
    person to look at; nothing compares it with a stored image)."""
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get(SCREENSHOTS_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        (Path(extra) / name).write_bytes(path.read_bytes())
    return path


def sign_in(page: Page, site: Site, email: str) -> str:
    """Sign ``email`` in as a person does: ask for a link, open it from the caught mail
    (the GET only shows a button: mail scanners fetch links), press the button. Returns
    the link."""
    from playwright.sync_api import expect

    before = len(site.mail_to(email))
    page.goto(f"{site.url}sign-in")
    page.fill("input[name=email]", email)
    page.locator("form[method=post] button").first.click()
    expect(page.locator("body")).to_contain_text("on its way")
    link = site.wait_for_mail(email, before, re.escape(f"{site.url}sign-in/") + TOKEN)

    page.goto(link)
    button = page.locator("form[method=post] button")
    expect(button).to_be_visible()
    # Having fetched the link signs nobody in: another tab still has to sign in.
    other = page.context.new_page()
    other.goto(site.url)
    expect(other).to_have_url(re.compile(r"/sign-in"))
    other.close()

    button.click()
    expect(page.locator("body")).to_contain_text(email)
    expect(page.get_by_role("button", name=re.compile("sign out", re.IGNORECASE))).to_be_visible()
    return link

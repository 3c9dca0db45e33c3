"""The dashboard in a real browser, as HR and a program admin use it: sign in through the
emailed link, walk overview → pairing → findings, silence a finding, download the XLSX
report, see the charts drawn; and what a user must be refused: another program's pages,
a POST without its CSRF token, an expired sign-in link."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import openpyxl
import time_machine
from PIL import Image
from playwright.sync_api import Browser, FrameLocator, Page, expect
from sqlalchemy import select

from mentorpulse.signing import SIGN_IN, Signer
from mentorpulse.storage.keys import signing_keys
from mentorpulse.storage.models import Finding, MentoringSession, Pairing, Person
from tests.browser.conftest import (
    ENG_ADMIN,
    HR,
    SignedIn,
    Site,
    keep_screenshot,
    new_context,
    sign_in,
)

DRAWN = 0.01  # a chart drew when more than 1% of its box differs from the background


def _pairings(site: Site, program: str) -> list[Pairing]:
    with site.db() as db:
        return list(db.scalars(select(Pairing).where(Pairing.program_id == program)))


def _open_findings(site: Site, program: str) -> dict[int, str]:
    """Firing findings of ``program``: id → the mentor's name."""
    with site.db() as db:
        rows = db.execute(
            select(Finding.id, Person.name)
            .join(Pairing, Pairing.id == Finding.pairing_id)
            .join(Person, Person.id == Pairing.mentor_id)
            .where(Pairing.program_id == program, Finding.state == "firing")
        )
        return {int(i): str(name) for i, name in rows}


def drawn_fraction(png: bytes) -> float:
    """The share of a chart's pixels that differ from its background (the colour of its
    corners): a chart that failed to draw is a blank box."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    corners = [image.getpixel(xy) for xy in ((0, 0), (width - 1, 0), (0, height - 1))]
    background = max(set(corners), key=corners.count)
    differ = sum(
        count
        for count, colour in image.getcolors(width * height) or []
        if sum(abs(a - b) for a, b in zip(colour, background, strict=True)) > 48
    )
    return differ / (width * height)


def assert_charts_drew(root: Page | FrameLocator, at_least: int) -> int:
    """Every ``figure.chart`` on the page (or in a frame of it) drew: its picture's box,
    cut from a screenshot, is not blank. Returns how many there are."""
    charts = root.locator("figure.chart")
    expect(charts.first).to_be_visible()
    count = charts.count()
    assert count >= at_least, f"{count} charts"
    for n in range(count):
        figure = charts.nth(n)
        picture = figure.locator("svg").first
        picture.scroll_into_view_if_needed()
        box = picture.bounding_box()
        assert box is not None, figure.get_attribute("id")
        assert box["width"] > 50, (figure.get_attribute("id"), box)
        assert box["height"] > 50, (figure.get_attribute("id"), box)
        fraction = drawn_fraction(picture.screenshot())
        assert fraction > DRAWN, (figure.get_attribute("id"), fraction)
    return count


def test_hr_signs_in_and_walks_overview_pairing_findings(
    site: Site, page: Page, browser: Browser, tmp_path: Path
) -> None:
    link = sign_in(page, site, HR)
    # The link worked once: opened again (say, forwarded), it signs nobody in.
    again = new_context(browser)
    try:
        used = again.new_page()
        used.goto(link)
        expect(used.locator("#link-used")).to_be_visible()
        expect(used.locator("form[method=post] button")).to_have_count(0)
    finally:
        again.close()

    # HR sees every program.
    page.goto(site.url)
    expect(page.get_by_role("link", name="Engineering mentoring")).to_be_visible()
    expect(page.get_by_role("link", name="Leadership mentoring")).to_be_visible()
    page.get_by_role("link", name="Engineering mentoring").click()
    expect(page).to_have_url(re.compile(r"/programs/engineering$"))

    # The overview names the pairs at risk: each mentor with a firing finding.
    at_risk = _open_findings(site, "engineering")
    assert at_risk, "the demo has lapsed engineering pairs"
    for mentor in set(at_risk.values()):
        expect(page.locator("main")).to_contain_text(mentor)
    # Its charts (sessions by outcome, attendance rates, the pairs' health grid) drew.
    assert_charts_drew(page, at_least=3)
    keep_screenshot(page, "dashboard-overview.png", tmp_path)

    # Overview → a pairing: its sessions, each with the outcome the database holds.
    at_risk_link = page.locator("a[href*='/pairings/']").first
    pair = at_risk_link.inner_text().strip()
    at_risk_link.click()
    expect(page).to_have_url(re.compile(r"/pairings/\d+$"))
    expect(page.locator("h1#pairing")).to_have_text(pair)  # named as the overview names it
    pairing_id = int(page.url.rsplit("/", 1)[1])
    with site.db() as db:
        outcomes = dict(
            db.execute(
                select(MentoringSession.id, MentoringSession.outcome).where(
                    MentoringSession.pairing_id == pairing_id
                )
            ).all()
        )
    rows = page.locator("tr[data-session-id][data-outcome]")
    expect(rows.first).to_be_visible()
    assert rows.count() == len(outcomes)
    for n in range(rows.count()):
        row = rows.nth(n)
        session_id = int(row.get_attribute("data-session-id") or 0)
        assert row.get_attribute("data-outcome") == outcomes[session_id]
    keep_screenshot(page, "dashboard-pairing.png", tmp_path)

    # → findings: every firing one listed, and the program filter narrows the list.
    page.get_by_role("link", name="Findings").click()
    expect(page).to_have_url(re.compile(r"/findings"))
    for finding_id in at_risk:
        expect(page.locator(f"tr[data-finding-id='{finding_id}']")).to_have_count(1)
    page.goto(f"{site.url}findings?program=leadership")
    leadership = _open_findings(site, "leadership")
    for finding_id in at_risk:
        expect(page.locator(f"tr[data-finding-id='{finding_id}']")).to_have_count(0)
    for finding_id in leadership:
        expect(page.locator(f"tr[data-finding-id='{finding_id}']")).to_have_count(1)


def test_admin_silences_a_finding_and_sees_it_silenced(site: Site, signed_in: SignedIn) -> None:
    page = signed_in.page(ENG_ADMIN)
    page.goto(f"{site.url}findings?program=engineering")
    row = page.locator("tr[data-finding-id][data-state='firing']:not([data-silenced='true'])")
    expect(row.first).to_be_visible()
    finding_id = row.first.get_attribute("data-finding-id")
    target = page.locator(f"tr[data-finding-id='{finding_id}']")
    form = target.locator("form[action*='/silence']")
    form.locator("[name=reason]").fill("on parental leave")
    form.locator("button, input[type=submit]").first.click()

    silenced = page.locator(f"tr[data-finding-id='{finding_id}'][data-silenced='true']")
    expect(silenced).to_have_count(1)
    expect(silenced).to_contain_text("silenced until")
    with site.db() as db:
        finding = db.get(Finding, int(finding_id or 0))
        assert finding is not None
        assert finding.silence_id is not None


def test_a_post_without_its_csrf_token_is_refused(site: Site, signed_in: SignedIn) -> None:
    page = signed_in.page(HR)
    page.goto(f"{site.url}findings?program=engineering")
    row = page.locator("tr[data-finding-id][data-state='firing']:not([data-silenced='true'])")
    expect(row.first).to_be_visible()
    finding_id = row.first.get_attribute("data-finding-id")
    form = page.locator(f"tr[data-finding-id='{finding_id}'] form[action*='/silence']")
    form.locator("[name=reason]").fill("on leave")
    # The form as the page serves it, less its token (JavaScript in the test, not the page).
    form.evaluate("f => f.querySelector('input[name=csrf_token]').remove()")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        form.locator("button, input[type=submit]").first.click()
    assert answer.value.status == 403
    expect(page.locator("#csrf-refused")).to_be_visible()  # a page that says why
    # A request the page never made, with the session cookie but no token: refused too.
    refused = page.request.post(
        f"{site.url}findings/{finding_id}/silence", form={"reason": "forged", "duration": "7d"}
    )
    assert refused.status == 403
    page.goto(f"{site.url}findings?program=engineering")
    expect(page.locator(f"tr[data-finding-id='{finding_id}']")).to_have_attribute(
        "data-silenced", "false"
    )


def test_a_program_admin_gets_404_on_another_program(site: Site, signed_in: SignedIn) -> None:
    page = signed_in.page(ENG_ADMIN)
    page.goto(site.url)
    expect(page.get_by_role("link", name="Engineering mentoring")).to_be_visible()
    expect(page.get_by_role("link", name="Leadership mentoring")).to_have_count(0)

    own = page.goto(f"{site.url}programs/engineering")
    assert own is not None
    assert own.status == 200
    other = page.goto(f"{site.url}programs/leadership")
    assert other is not None
    assert other.status == 404
    leadership = _pairings(site, "leadership")[0]
    pairing = page.goto(f"{site.url}pairings/{leadership.id}")
    assert pairing is not None
    assert pairing.status == 404
    engineering = _pairings(site, "engineering")[0]
    mine = page.goto(f"{site.url}pairings/{engineering.id}")
    assert mine is not None
    assert mine.status == 200


def test_an_expired_sign_in_link_shows_the_expiry_page(site: Site, page: Page) -> None:
    with site.db() as db:
        keys = signing_keys(db)
    # Minted with the house's key an hour ago: a sign-in link lives 15 minutes.
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=1), tick=False):
        token = Signer(keys, SIGN_IN).sign({"email": HR, "nonce": "expired-in-test"})
    page.goto(f"{site.url}sign-in/{token}")
    expect(page.locator("#link-expired")).to_be_visible()
    expect(page.locator("body")).to_contain_text("expired")
    # Not signed in: the overview sends one to sign in.
    page.goto(f"{site.url}programs/engineering")
    expect(page).to_have_url(re.compile(r"/sign-in"))

    # A garbled link: its own clear page.
    page.goto(f"{site.url}sign-in/not-a-token")
    expect(page.locator("#link-invalid")).to_be_visible()
    expect(page.locator("form[method=post] button")).to_have_count(0)


def _table(root: Page | FrameLocator, selector: str) -> list[list[str]]:
    """The text of every row of a table (header first), as a reader sees it."""
    rows = root.locator(selector).evaluate(
        "t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    return [[str(cell) for cell in row] for row in rows]


def _same(text: str, value: object) -> bool:
    """A cell of the page's table and the workbook's typed cell say the same."""
    if value is None:
        return text in {"", "\u2014"}
    if isinstance(value, int | float) and text.endswith("%"):  # 100% reads back as 1
        return round(value * 100) == int(text.rstrip("%"))
    return str(value) == text


def _sheet(book: openpyxl.Workbook, name: str, first_header: str) -> list[list[object]]:
    """A sheet's table from its header row on (the rows above are its title)."""
    rows = [list(row) for row in book[name].iter_rows(values_only=True)]
    start = next(i for i, row in enumerate(rows) if row[0] == first_header)
    return rows[start:]


def _report_form(page: Page, first: date, last: date, fmt: str) -> None:
    page.fill("#report-form input[name=first]", first.isoformat())
    page.fill("#report-form input[name=last]", last.isoformat())
    page.select_option("#report-form select[name=format]", fmt)


def test_reports_page_downloads_the_xlsx_with_the_page_s_numbers(
    site: Site, signed_in: SignedIn, tmp_path: Path
) -> None:
    page = signed_in.page(HR)
    page.goto(site.url)
    page.get_by_role("link", name="Reports").click()
    expect(page).to_have_url(re.compile(r"/reports"))
    today = datetime.now(UTC).date()
    first, last = date(today.year, today.month, 1) - timedelta(days=91), today

    _report_form(page, first, last, "html")
    page.locator("#report-form [type=submit]").click()
    report = page.frame_locator("iframe#report")
    # Three charts per program (sessions by outcome, rates, the pairs' health grid).
    assert assert_charts_drew(report, at_least=6) % 3 == 0
    totals = _table(report, "table.totals")
    pairings = {
        program: _table(report, f"section.program[data-program='{program}'] table.pairings")
        for program in ("engineering", "leadership")
    }

    _report_form(page, first, last, "xlsx")
    with page.expect_download() as download:
        page.locator("#report-form [type=submit]").click()
    saved = tmp_path / download.value.suggested_filename
    assert saved.suffix == ".xlsx"
    download.value.save_as(saved)
    book = openpyxl.load_workbook(saved)

    # The summary sheet: the page's programs table, cell for cell.
    summary = _sheet(book, book.sheetnames[0], totals[0][0])
    assert [str(h) for h in summary[0]] == totals[0]
    assert len(summary) == len(totals)
    for shown, typed in zip(totals[1:], summary[1:], strict=True):
        for column, text, value in zip(totals[0], shown, typed, strict=True):
            assert _same(text, value), (column, shown, typed)

    # Each program's sheet: the same counts and rate per pair as its table on the page.
    for program, table in pairings.items():
        name = next(row[0] for row in totals[1:] if program in row[0].lower())
        sheet = _sheet(book, name[:31], table[0][0])
        header = [str(h) for h in sheet[0]]
        by_pair = {(row[1], row[3]): row for row in sheet[1:]}
        assert len(by_pair) == len(table) - 1
        counted = [
            c for c in table[0][2:] if c in header and c not in ("Last attended", "Next scheduled")
        ]
        assert counted, table[0]
        for shown in table[1:]:
            mentor_email, mentee_email = shown[0].splitlines()[-1], shown[1].splitlines()[-1]
            typed = by_pair[(mentor_email, mentee_email)]
            for column in counted:
                text = shown[table[0].index(column)]
                value = typed[header.index(column)]
                assert _same(text, value), (program, column, shown, typed)

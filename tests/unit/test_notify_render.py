"""What a recipient gets from render(): the same bytes the email package's own
set_content + add_alternative build writes, and the decoded headers and bodies a mail
reader shows, for plain, non-ASCII, quoted and folding values."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import pytest

from mentorpulse.notify.outbox import outbox_row
from mentorpulse.notify.render import RenderError, environment, render
from mentorpulse.notify.route import notifications_for
from mentorpulse.storage.models import OutboxMessage
from tests.notify_support import FIRED, alert

SENDER = "mentorpulse@example.org"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LONG = "Maximiliane Theodora Wilhelmina von und zu Hohenzollern-Sigmaringen"

CASES = {
    "plain": {},
    "non-ascii names": {"mentor_name": "Zoë Ñúñez", "mentee_name": "Łukasz Żółć"},
    "long subject folds": {"mentee_name": LONG},
    "long non-ascii subject folds": {"mentee_name": "Ærøskøbing " * 6 + "Å"},
    "quoted display name": {"mentor_name": "O'Brien, Ann (R&D)"},
    "double space in name": {"mentor_name": "Ann  Lee"},
    "encoded-word look-alike": {"mentee_name": "=?utf-8?q?Ben?="},
    "long display name": {"mentor_name": LONG + " " + LONG},
    "non-ascii program": {"program_name": "Ingeniería \u2013 mentoría"},
}


def _row(n: int, **changes: object) -> OutboxMessage:
    [note] = [
        note
        for note in notifications_for([alert(n, **changes)], now=FIRED)
        if note.recipient == f"mentor{n}@example.org"
    ]
    return OutboxMessage(id=n, **outbox_row(note, now=NOW, domain="example.org"))


def _email_package_build(row: OutboxMessage, boundary: str) -> EmailMessage:
    """The message as the email package builds it from the same row and templates."""
    payload: dict[str, object] = {**row.payload, "template": row.template}
    context: dict[str, object] = {**payload, "_payload": payload}
    env = environment(None)
    subject = env.get_template(f"{row.template}.subject.j2").render(context).strip()
    context["subject"] = subject
    message = EmailMessage()
    message["From"] = Address(addr_spec=SENDER)
    name = str(row.payload.get("recipient_name") or "")
    message["To"] = Address(display_name=name, addr_spec=row.recipient)
    message["Subject"] = subject
    message["Message-ID"] = row.message_id
    message["Date"] = email.utils.format_datetime(NOW)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(env.get_template(f"{row.template}.txt.j2").render(context))
    message.add_alternative(
        env.get_template(f"{row.template}.html.j2").render(context), subtype="html"
    )
    message.set_boundary(boundary)
    return message


def _as_read(raw: bytes) -> dict[str, object]:
    """What a mail reader shows: decoded headers, and each part's type, charset,
    transfer encoding and decoded text."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    headers = {name: str(value) for name, value in message.items()}
    parts = [
        (p.get_content_type(), p.get_content_charset(), p["Content-Transfer-Encoding"])
        for p in message.iter_parts()
    ]
    bodies = [p.get_content() for p in message.iter_parts() if isinstance(p, EmailMessage)]
    return {"headers": headers, "parts": parts, "bodies": bodies}


@pytest.mark.parametrize("changes", CASES.values(), ids=CASES.keys())
def test_render_writes_what_the_email_package_writes(changes: dict[str, object]) -> None:
    row = _row(7, **changes)
    message = render(row, sender=SENDER, now=NOW)
    boundary = message.get_boundary()
    assert boundary is not None
    expected = _email_package_build(row, boundary)
    for linesep in ("\n", "\r\n"):  # a file, and the SMTP wire
        policy = email.policy.default.clone(linesep=linesep)
        assert message.as_bytes(policy=policy) == expected.as_bytes(policy=policy)
    assert _as_read(message.as_bytes()) == _as_read(expected.as_bytes())
    assert message["Subject"] == expected["Subject"]
    assert message["To"].addresses == expected["To"].addresses


def test_non_ascii_and_folded_headers_read_back_as_written() -> None:
    row = _row(3, mentor_name="Zoë Ñúñez", mentee_name=LONG)
    read = _as_read(render(row, sender=SENDER, now=NOW).as_bytes())
    headers = read["headers"]
    assert isinstance(headers, dict)
    assert headers["From"] == SENDER
    assert headers["To"] == "Zoë Ñúñez <mentor3@example.org>"
    assert headers["Subject"] == f"Mentoring: you and {LONG} have not met since 10 Feb 2026"
    assert headers["Message-ID"] == row.message_id
    assert headers["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"
    assert headers["Auto-Submitted"] == "auto-generated"
    assert read["parts"] == [
        ("text/plain", "utf-8", "quoted-printable"),
        ("text/html", "utf-8", "quoted-printable"),
    ]
    text, html = read["bodies"]  # type: ignore[misc]
    assert text.startswith("Hello Zoë Ñúñez,\n")
    assert f"<strong>{LONG}</strong>" in html


def test_plain_headers_are_written_on_one_line() -> None:
    raw = render(_row(1), sender=SENDER, now=NOW).as_bytes()
    head = raw.split(b"\n\n", 1)[0].decode("ascii")
    assert "To: Mentor 1 <mentor1@example.org>\n" in head
    assert "Subject: Mentoring: you and Mentee 1 have not met since 10 Feb 2026\n" in head


def _report_row(attachments: list[dict[str, str]]) -> OutboxMessage:
    payload = {
        "period": "2026-10",
        "period_title": "October 2026",
        "first_day": "2026-10-01",
        "last_day": "2026-10-31",
        "programs": [],
        "pairings": 0,
        "scheduled": 0,
        "attended": 0,
        "rate": "\u2014",
        "note": None,
        "attachments": attachments,
        "recipient_name": "HR",
    }
    return OutboxMessage(
        id=1,
        recipient="hr@example.org",
        template="report",
        idempotency_key="report:month:2026-10:abc",
        message_id="<report@example.org>",
        payload=payload,
    )


def test_a_binary_attachment_is_sent_as_its_bytes() -> None:
    workbook = bytes(range(256)) * 4  # anything: the bytes must arrive as they were
    row = _report_row(
        [
            {"filename": "r.csv", "content_type": "text/csv", "text": "a,b\r\n1,2\r\n"},
            {
                "filename": "r.xlsx",
                "content_type": "application/vnd.ms-excel",
                "base64": base64.b64encode(workbook).decode(),
            },
        ]
    )
    raw = render(row, sender=SENDER, template_dir=None, now=NOW).as_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    parts = {str(p.get_filename()): p for p in message.iter_attachments()}
    assert parts["r.xlsx"].get_content_type() == "application/vnd.ms-excel"
    assert parts["r.xlsx"].get_payload(decode=True) == workbook
    assert parts["r.csv"].get_content().splitlines() == ["a,b", "1,2"]
    # A row from before formats existed says what it always said.
    assert "as CSV for spreadsheets and as HTML to read" in str(
        message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    )


def test_a_broken_binary_attachment_fails_its_row_only() -> None:
    row = _report_row([{"filename": "r.xlsx", "content_type": "a/b", "base64": "not base64!"}])
    with pytest.raises(RenderError, match=r"attachment 'r\.xlsx' is not valid base64"):
        render(row, sender=SENDER, template_dir=None, now=NOW)


def test_the_report_summary_says_how_many_sessions_participants_confirmed() -> None:
    program = {
        "program": "eng",
        "program_name": "Engineering",
        "pairings": 3,
        "scheduled": 9,
        "attended": 7,
        "rate": "78%",
        "below_half": 0,
        "open_findings": 1,
    }
    before = _report_row([])
    before.payload = {**before.payload, "programs": [program]}  # queued before the column
    now = _report_row([])
    now.payload = {**now.payload, "programs": [{**program, "confirmed": 2}]}
    texts = [
        str(
            render(row, sender=SENDER, template_dir=None, now=NOW)
            .get_body(("plain",))
            .get_content()
        )  # type: ignore[union-attr]
        for row in (before, now)
    ]
    assert "- Engineering: 7 of 9 attended (78%), 3 pairings" in texts[0]
    assert "- Engineering: 7 of 9 attended (78%; 2 confirmed by a participant), 3" in texts[1]

"""Rendering an outbox row into an email: Jinja2 templates, safe headers.

Names and program titles come from rosters and calendars, i.e. from people we do not
control, so nothing from the payload reaches a header with a line break in it (no header
injection) and the HTML part escapes every value. An admin may override any template
by dropping a file of the same name in ``template_dir``: ``<template>.subject.j2``,
``.txt.j2`` and ``.html.j2`` for ``reminder``, ``escalation``, ``resolved``, ``digest``
and ``report``.
"""

from __future__ import annotations

import base64
import random
import re
import sys
from collections.abc import Mapping
from datetime import datetime
from email.contentmanager import _encode_text  # type: ignore[attr-defined]
from email.headerregistry import Address, BaseHeader
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path

import jinja2

from mentorpulse.config.schema import DISPUTE_KIND, check_address
from mentorpulse.storage.models import OutboxMessage
from mentorpulse.text import one_line


class RenderError(Exception):
    """A row cannot become an email (bad template, bad address): retrying will not help."""


@lru_cache(maxsize=8)
def environment(template_dir: Path | None = None) -> jinja2.Environment:
    """The template environment: the admin's folder first (if any), then ours."""
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.PackageLoader("mentorpulse.notify", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        # Only the HTML templates escape; plain text must show "O'Brien" as written.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "html", "htm"), default_for_string=False
        ),
        undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly, not "Hi ,"
        keep_trailing_newline=True,
    )
    # Plain strings, so the HTML templates escape them like any other value.
    env.globals.update(pair=pair, status=status)
    return env


def pair(item: Mapping[str, object]) -> str:
    """'Ana and Ben (Engineering mentoring)': one pair, for escalations and digests."""
    mentor = item.get("mentor_name") or item.get("mentor_email")
    mentee = item.get("mentee_name") or item.get("mentee_email")
    return f"{mentor} and {mentee} ({item.get('program_name')})"


def status(item: Mapping[str, object]) -> str:
    """'no session since 2 Oct 2024, flagged since 20 Oct 2024 (rule lapsed)'."""
    if item.get("template") == "resolved":
        day = item.get("resolved_display")
        return f"resolved on {day}" if day else "resolved"
    facts = item.get("facts")
    if item.get("rule_kind") == DISPUTE_KIND and isinstance(facts, Mapping):
        text = (
            "the mentor and the mentee disagree on whether their session of "
            f"{facts.get('disputed_sessions', '?')} took place"
        )
    elif item.get("last_met_display"):
        text = f"no session since {item['last_met_display']}"
    elif item.get("never_met"):
        text = "no session yet"
    else:
        text = "no recent session on record"
    if item.get("firing_since_display"):
        text += f", flagged since {item['firing_since_display']} (rule {item.get('rule_id')})"
    return text


def render(
    row: OutboxMessage,
    *,
    sender: str,
    template_dir: Path | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """Build the multipart/alternative (text + HTML) message for one outbox row.

    Whatever the row holds, it fails alone: every error becomes a :class:`RenderError`
    (the dispatcher marks that row failed and goes on with the batch).
    """
    try:
        return _render(row, sender=sender, template_dir=template_dir, now=now)
    except RenderError:
        raise
    except Exception as exc:  # e.g. HeaderParseError: the email package's own refusals
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def _render(
    row: OutboxMessage, *, sender: str, template_dir: Path | None, now: datetime | None
) -> EmailMessage:
    for role, address in (("sender", sender), ("recipient", row.recipient)):
        try:
            # The email package reads "=a(x)@y" as "=a@y": only a real address goes out.
            check_address(address)
        except ValueError as exc:
            raise RenderError(f"bad {role}: {exc}") from None
    payload: dict[str, object] = dict(row.payload)
    payload["template"] = row.template
    context: dict[str, object] = {**payload, "_payload": payload}
    env = environment(template_dir)
    try:
        subject = one_line(env.get_template(f"{row.template}.subject.j2").render(context))
        context["subject"] = subject
        text = env.get_template(f"{row.template}.txt.j2").render(context)
        html = env.get_template(f"{row.template}.html.j2").render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {row.template!r}: {exc}") from exc

    headers: list[tuple[str, str | Address]] = [
        ("From", _address(sender, None)),
        ("To", _address(row.recipient, _text(payload.get("recipient_name")))),
        ("Subject", subject),
        ("Message-ID", one_line(row.message_id)),
    ]
    if now is not None:
        headers.append(("Date", format_datetime(now)))
    # RFC 3834: out-of-office robots must not answer us (no mail loops).
    headers.append(("Auto-Submitted", "auto-generated"))
    attachments = _attachments(payload)
    if not attachments and (sender + row.recipient).isascii():
        return _prefolded(headers, text, html)
    message = EmailMessage()
    for name, value in headers:
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment["content_type"].partition("/")
        filename = one_line(attachment["filename"])
        if "base64" in attachment:  # a binary file (a scheduled report's XLSX)
            try:
                data = base64.b64decode(attachment["base64"], validate=True)
            except ValueError as exc:
                raise RenderError(f"attachment {filename!r} is not valid base64") from exc
            message.add_attachment(
                data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename
            )
            continue
        message.add_attachment(attachment["text"], subtype=subtype or "plain", filename=filename)
    message.as_bytes()  # what the email package cannot write fails here, not in a transport
    return message


# A header value the email package writes back exactly as given: printable ASCII, no
# encoded word, no run of spaces, short enough not to fold.
_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")
MAIL_POLICY = default_policy  # EmailMessage's own
_MAX_LINE = MAIL_POLICY.max_line_length or sys.maxsize


def _prefolded(headers: list[tuple[str, str | Address]], text: str, html: str) -> EmailMessage:
    """The message ``set_content`` + ``add_alternative`` build, at a quarter of the CPU.

    The email package parses every header it is given (and its own MIME headers again
    each time the generator reads them) and folds each on every write: that was most of
    a message's CPU. Here a plain value (ASCII, one line) is stored as it is written, the
    others parsed as before; MIME headers are parsed once per process; the bodies get the
    package's own transfer encoding. Same bytes, same decoded headers
    (tests/unit/test_notify_render.py compares them with the package's build).
    """
    message = EmailMessage()
    stored = [(name, _folded(name, value)) for name, value in headers]
    for name, value in stored:
        message.set_raw(name, value)
    # The headers set_content and add_alternative leave, in their order.
    parts = [_text_part(text, "plain", ()), _text_part(html, "html", (("MIME-Version", "1.0"),))]
    boundary = _boundary("".join(str(part.get_payload()) for part in parts))
    message["MIME-Version"] = _structural("MIME-Version", "1.0")
    message["Content-Type"] = MAIL_POLICY.header_factory(
        "Content-Type", f'multipart/alternative; boundary="{boundary}"'
    )
    payload: list[Message[str, str] | str] = [*parts]
    message.set_payload(payload)
    if any(isinstance(value, BaseHeader) for _, value in stored):
        message.as_bytes()  # a header the package folds may fail to fold: fail here
    return message


def _text_part(body: str, subtype: str, extra: tuple[tuple[str, str], ...]) -> EmailMessage:
    part = EmailMessage()
    cte, payload = _encode_text(body, "utf-8", None, MAIL_POLICY)
    part["Content-Type"] = _structural("Content-Type", f'text/{subtype}; charset="utf-8"')
    part["Content-Transfer-Encoding"] = _structural("Content-Transfer-Encoding", cte)
    for name, value in extra:
        part[name] = _structural(name, value)
    part.set_payload(payload)
    return part


@lru_cache(maxsize=32)
def _structural(name: str, value: str) -> BaseHeader:
    """A MIME structure header, parsed once: the sending code reads them back per message."""
    header: BaseHeader = MAIL_POLICY.header_factory(name, value)
    return header


def _folded(name: str, value: str | Address) -> str | BaseHeader:
    """The header as the email package stores it, or, when it would write the value back
    unchanged (plain ASCII on one line), the value itself: nothing to parse or fold."""
    plain = value if isinstance(value, str) else _plain_address(value)
    if (
        plain is not None
        and len(name) + 2 + len(plain) <= _MAX_LINE
        and "=?" not in plain
        and _PLAIN_VALUE.fullmatch(plain)
    ):
        return plain
    parsed: BaseHeader = MAIL_POLICY.header_store_parse(name, value)[1]
    return parsed


def _plain_address(address: Address) -> str | None:
    """``Name <a@b>`` when neither part needs quoting or encoding; None otherwise."""
    if not _DOT_ATOM_ADDRESS.fullmatch(address.addr_spec):
        return None
    name = address.display_name
    if not name:
        return address.addr_spec
    if not _ATEXT_WORDS.fullmatch(name):
        return None
    return f"{name} <{address.addr_spec}>"


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ATEXT_WORDS = re.compile(rf"{_ATEXT}(?: {_ATEXT})*")
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")


def _boundary(text: str) -> str:
    """A multipart boundary as the email package's generator draws it."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="  # noqa: S311
        if f"--{boundary}" not in text:
            return boundary


def _attachments(payload: Mapping[str, object]) -> list[dict[str, str]]:
    """Files the row carries (a scheduled report's CSV and HTML as ``text``, its XLSX as
    ``base64``)."""
    items = payload.get("attachments")
    if not isinstance(items, list):
        return []
    return [{k: str(v) for k, v in item.items()} for item in items if isinstance(item, dict)]


def _address(addr_spec: str, display_name: str | None) -> Address:
    """An address header value; the display name is quoted/encoded by the email package."""
    return Address(display_name=one_line(display_name or ""), addr_spec=one_line(addr_spec))


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None

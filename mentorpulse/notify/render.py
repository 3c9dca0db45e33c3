"""Rendering an outbox row into an email: Jinja2 templates, safe headers.

Names and program titles come from rosters and calendars, i.e. from people we do not
control, so nothing from the payload reaches a header with a line break in it (no header
injection) and the HTML part escapes every value. An admin may override any template
by dropping a file of the same name in ``template_dir``: ``<template>.subject.j2``,
``.txt.j2`` and ``.html.j2`` for ``reminder``, ``escalation``, ``resolved``, ``digest``
and ``report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache
from pathlib import Path

import jinja2

from mentorpulse.config.schema import check_address
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
    if item.get("last_met_display"):
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

    message = EmailMessage()
    message["From"] = _address(sender, None)
    message["To"] = _address(row.recipient, _text(payload.get("recipient_name")))
    message["Subject"] = subject
    message["Message-ID"] = one_line(row.message_id)
    if now is not None:
        message["Date"] = format_datetime(now)
    # RFC 3834: out-of-office robots must not answer us (no mail loops).
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    for attachment in _attachments(payload):
        message.add_attachment(
            attachment["text"],
            subtype=attachment["content_type"].partition("/")[2] or "plain",
            filename=one_line(attachment["filename"]),
        )
    message.as_bytes()  # what the email package cannot write fails here, not in a transport
    return message


def _attachments(payload: Mapping[str, object]) -> list[dict[str, str]]:
    """Text files the row carries (a scheduled report's CSV and HTML)."""
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

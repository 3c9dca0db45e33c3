"""One notion of a control character: what the roster refuses, a mail header and a stored
title never carry either (they used to be four regular expressions that disagreed)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mentorpulse.text import clean_text, has_control, local_time, one_line, rfc3339_utc

CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\ud800"]


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_layer_refuses_or_removes_the_same_characters(char: str) -> None:
    text = f"Ada{char}Lovelace"
    assert has_control(text)  # the roster and the config refuse it
    assert not has_control(one_line(text))  # a header carries a space instead
    assert not has_control(clean_text(text))  # a stored title drops it


def test_a_header_keeps_the_words_apart_and_on_one_line() -> None:
    assert one_line("Reminder\r\nBcc: victim@example.org") == "Reminder Bcc: victim@example.org"
    assert one_line("  two  spaces stay  ") == "two  spaces stay"


def test_titles_keep_word_breaks_as_spaces() -> None:
    assert clean_text("Mentoring\tsession\u2028with\x00 Ada") == "Mentoring session with Ada"


def test_moments_are_written_one_way() -> None:
    moment = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert rfc3339_utc(moment) == "2026-11-23T10:00:00Z"
    assert local_time(moment, ZoneInfo("Europe/Berlin")) == "2026-11-23 11:00 CET"
    assert local_time(None, UTC) == "\u2014"

"""The ``kind: caldav`` source as an admin writes it: secrets from the environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentorpulse.config import ConfigError, load_config
from mentorpulse.config.schema import CaldavSource

SECRET = "app-password-3f9a-never-shown"

GOOD = """\
sources:
  - id: nextcloud
    kind: caldav
    url: https://cloud.example.org/remote.php/dav/
    username: reader@example.org
    password: ${MP_TEST_CALDAV_PASSWORD}
    calendars:
      - url: /remote.php/dav/calendars/ana@example.org/personal/
        owner: Ana@Example.org
      - name: Mentoring
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_password_comes_from_the_environment_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_TEST_CALDAV_PASSWORD", SECRET)
    config = load_config(write(tmp_path, GOOD))
    [source] = config.sources
    assert isinstance(source, CaldavSource)
    assert source.password.get_secret_value() == SECRET
    assert source.sync == "auto"
    assert [(c.url, c.name) for c in source.calendars] == [
        ("/remote.php/dav/calendars/ana@example.org/personal/", None),
        (None, "Mentoring"),
    ]
    for shown in (repr(config), str(source), source.model_dump_json()):
        assert SECRET not in shown


def test_a_calendar_needs_exactly_one_of_url_and_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MP_TEST_CALDAV_PASSWORD", SECRET)
    text = GOOD.replace("      - name: Mentoring\n", "      - name: Mentoring\n        url: /x/\n")
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    [problem] = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'mentorpulse.yaml'}:10:")
    assert "give exactly one of url or name" in problem
    assert SECRET not in problem


def test_a_missing_password_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MP_TEST_CALDAV_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, GOOD))
    assert any("MP_TEST_CALDAV_PASSWORD is not set" in p for p in caught.value.problems)

"""The ``kind: exchange`` source as an admin writes it: errors with file:line, no clear text."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentorpulse.config import ConfigError, load_config
from mentorpulse.config.schema import ExchangeSource

SECRET = "Exchange-Service-Password-never-shown"

GOOD = """\
sources:
  - id: exchange
    kind: exchange
    url: https://mail.contoso.example/EWS/Exchange.asmx
    username: CONTOSO\\svc-mentorpulse
    password: ${MP_TEST_EXCHANGE_PASSWORD}
    mailboxes: [Ana@Contoso.example, ben@contoso.example]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mentorpulse.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problem_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    [problem] = caught.value.problems
    assert SECRET not in problem
    return problem


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_TEST_EXCHANGE_PASSWORD", SECRET)


def test_defaults_are_the_on_premises_ones_and_the_password_is_never_shown(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, GOOD))
    [source] = config.sources
    assert isinstance(source, ExchangeSource)
    assert (source.auth, source.access, source.version) == ("ntlm", "impersonation", None)
    assert source.username == "CONTOSO\\svc-mentorpulse"
    assert source.owners() == ("ana@contoso.example", "ben@contoso.example")
    for shown in (repr(config), str(source), source.model_dump_json()):
        assert SECRET not in shown


def test_an_http_endpoint_is_refused_unless_allowed(tmp_path: Path) -> None:
    insecure = GOOD.replace("https://", "http://")
    problem = problem_of(tmp_path, insecure)
    assert problem.startswith(f"{tmp_path / 'mentorpulse.yaml'}:4:")
    assert "allow_insecure: true" in problem
    allowed = insecure + "    allow_insecure: true\n"
    [source] = load_config(write(tmp_path, allowed)).sources
    assert isinstance(source, ExchangeSource)


def test_url_or_autodiscover_exactly_one(tmp_path: Path) -> None:
    both = GOOD + "    autodiscover: true\n"
    assert "exactly one of url or autodiscover" in problem_of(tmp_path, both)
    neither = GOOD.replace("    url: https://mail.contoso.example/EWS/Exchange.asmx\n", "")
    assert "exactly one of url or autodiscover" in problem_of(tmp_path, neither)
    discovered = neither + "    autodiscover: true\n    autodiscover_email: svc@contoso.example\n"
    [source] = load_config(write(tmp_path, discovered)).sources
    assert isinstance(source, ExchangeSource)
    assert source.autodiscover


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("    attendance: true\n", "unknown key 'attendance'"),
        ("    auth: kerberos\n", "auth"),
        ("    access: owner\n", "access"),
        ("    version: Exchange2010\n", "Exchange2016"),
    ],
)
def test_a_wrong_key_names_its_line(tmp_path: Path, line: str, said: str) -> None:
    problem = problem_of(tmp_path, GOOD + line)
    assert problem.startswith(f"{tmp_path / 'mentorpulse.yaml'}:8:"), problem
    assert said in problem


def test_a_mailbox_listed_twice_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    mailboxes: [Ana@Contoso.example, ben@contoso.example]\n",
        "    mailboxes:\n      - ana@contoso.example\n      - ANA@contoso.example\n",
    )
    problem = problem_of(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'mentorpulse.yaml'}:9:"), problem
    assert "duplicate mailbox" in problem

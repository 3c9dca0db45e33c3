"""Sign-in tokens are stored encrypted, and a wrong or missing key is one clear error."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mentorpulse.credentials import KEY_ENV, TokenStore, generate_key
from mentorpulse.errors import UserError

SECRET = "1//0refresh-token-that-must-not-leak"


def test_saved_token_comes_back_and_is_not_in_the_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json", key=generate_key())
    store.save("google:alice@example.org", SECRET)
    assert store.load("google:alice@example.org") == SECRET
    assert store.load("google:bob@example.org") is None
    assert SECRET not in (tmp_path / "tokens.json").read_text()
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600


def test_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, generate_key())
    TokenStore(tmp_path / "t.json").save("x", SECRET)
    assert TokenStore(tmp_path / "t.json").load("x") == SECRET


def test_rotated_keys_still_read_old_tokens(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    TokenStore(tmp_path / "t.json", key=old).save("x", SECRET)
    assert TokenStore(tmp_path / "t.json", key=f"{new},{old}").load("x") == SECRET


def test_wrong_key_is_a_clear_error_without_the_secret(tmp_path: Path) -> None:
    TokenStore(tmp_path / "t.json", key=generate_key()).save("x", SECRET)
    with pytest.raises(UserError, match="does not decrypt") as caught:
        TokenStore(tmp_path / "t.json", key=generate_key()).load("x")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("key", ["", "not-a-key"])
def test_missing_or_malformed_key_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(KEY_ENV, key)
    with pytest.raises(UserError, match=KEY_ENV):
        TokenStore(tmp_path / "t.json").save("x", SECRET)


def test_forget_removes_only_that_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json", key=generate_key())
    store.save("a", "1")
    store.save("b", "2")
    assert store.forget("a") is True
    assert store.forget("a") is False
    assert store.load("b") == "2"

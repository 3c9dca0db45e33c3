"""The house's signing key is made once per database and shared by every process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

from mentorpulse.errors import UserError
from mentorpulse.signing import ANSWER, Signer
from mentorpulse.storage.keys import KEY_ENV, signing_keys


def test_one_key_per_database_kept_across_processes(sessions: sessionmaker[Db]) -> None:
    with sessions.begin() as db:
        first = signing_keys(db)
    with sessions.begin() as db:  # another process opening the same database
        again = signing_keys(db)
    assert first == again
    assert len(first) == 1
    assert len(first[0]) >= 40  # 256 random bits, URL-safe base64
    token = Signer(first, ANSWER).sign({"session": 3})
    assert Signer(again, ANSWER).read(token, max_age=timedelta(days=1)) == {"session": 3}


def test_the_operator_key_replaces_the_stored_one(
    sessions: sessionmaker[Db], monkeypatch: pytest.MonkeyPatch
) -> None:
    with sessions.begin() as db:
        stored = signing_keys(db)
    older, newest = "older-secret-" + "o" * 32, "newest-secret-" + "n" * 32
    monkeypatch.setenv(KEY_ENV, f"{older}, {newest}")
    with sessions.begin() as db:
        assert signing_keys(db) == [older.encode(), newest.encode()]
    assert stored != [older.encode(), newest.encode()]


def test_a_rotation_is_seen_by_every_reader_at_once(
    sessions: sessionmaker[Db], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links and sessions read the keys one way (one cache): a token signed with the
    newest key verifies wherever the keys are read after the rotation."""
    old, new = "a" * 40, "b" * 40
    monkeypatch.setenv(KEY_ENV, old)
    with sessions.begin() as db:
        before = signing_keys(db)
    monkeypatch.setenv(KEY_ENV, f"{old},{new}")
    with sessions.begin() as db:
        after = signing_keys(db)
    assert after == [old.encode(), new.encode()]
    old_link = Signer(before, ANSWER).sign({"session": 1})
    assert Signer(after, ANSWER).read(old_link, max_age=timedelta(days=1)) == {"session": 1}


def test_a_short_operator_key_is_refused_without_showing_it(
    sessions: sessionmaker[Db], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "a" * 40 + ",hunter2")
    with sessions.begin() as db, pytest.raises(UserError) as refused:
        signing_keys(db)
    assert "key 2 of 2 is shorter than 32 characters" in refused.value.message
    assert "hunter2" not in refused.value.message

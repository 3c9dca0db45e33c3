"""The house's signing key is made once per database and shared by every process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import sessionmaker

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
    monkeypatch.setenv(KEY_ENV, "older-secret, newest-secret")
    with sessions.begin() as db:
        assert signing_keys(db) == [b"older-secret", b"newest-secret"]
    assert stored != [b"older-secret", b"newest-secret"]

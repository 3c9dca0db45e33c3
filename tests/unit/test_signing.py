"""Signed links: a token works for its own purpose and age, and says nothing of itself
when it is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from mentorpulse.signing import ANSWER, SIGN_IN, BadToken, Signer


def test_a_token_reads_back_within_its_age() -> None:
    signer = Signer([b"house-key"], ANSWER)
    token = signer.sign({"session": 7, "person": "ann@example.org"})
    assert signer.read(token, max_age=timedelta(days=7)) == {
        "session": 7,
        "person": "ann@example.org",
    }


def test_an_old_token_is_expired_not_invalid() -> None:
    signer = Signer([b"house-key"], ANSWER)
    with time_machine.travel("2026-03-01 10:00Z"):
        token = signer.sign({"session": 7})
    with time_machine.travel("2026-03-09 10:00Z"), pytest.raises(BadToken) as refused:
        signer.read(token, max_age=timedelta(days=7))
    assert refused.value.expired
    assert token not in str(refused.value)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # forged signature
        lambda t: "e30" + t[3:],  # another payload under the same signature
        lambda t: "x" * 5000,  # too long to parse
        lambda t: "",
    ],
)
def test_a_forged_token_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    signer = Signer([b"house-key"], ANSWER)
    token = tamper(signer.sign({"session": 7}))
    with pytest.raises(BadToken) as refused:
        signer.read(token, max_age=timedelta(days=7))
    assert not refused.value.expired


def test_a_token_for_one_purpose_is_refused_for_another() -> None:
    token = Signer([b"house-key"], ANSWER).sign({"email": "hr@example.org"})
    with pytest.raises(BadToken):
        Signer([b"house-key"], SIGN_IN).read(token, max_age=timedelta(minutes=15))


def test_rotated_keys_still_verify_what_the_old_key_signed() -> None:
    token = Signer([b"old"], ANSWER).sign({"session": 1})
    rotated = Signer([b"old", b"new"], ANSWER)
    assert rotated.read(token, max_age=timedelta(days=1)) == {"session": 1}
    with pytest.raises(BadToken):
        Signer([b"new"], ANSWER).read(token, max_age=timedelta(days=1))

"""A password is what a person types, whatever their keyboard or system makes of it: an
accented letter arrives composed from one browser and decomposed from another (the same
letter and a combining accent), a digit or letter from an East Asian input method in its
full-width form. Each is the same password, at registration, login, a change and a reset."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER

COMPOSED = unicodedata.normalize("NFC", "Crème brûlée à 7 €, s'il vous plaît")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def wide(text: str) -> str:
    """*text* in full-width forms, as an East Asian input method may type it."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


FULL_WIDTH = wide("password12345")


def test_the_forms_differ_as_bytes() -> None:
    """What the tests below rely on: the strings differ, as a browser would send them."""
    assert COMPOSED != DECOMPOSED
    assert COMPOSED.encode() != DECOMPOSED.encode()
    assert FULL_WIDTH != "password12345"
    assert unicodedata.normalize("NFKC", FULL_WIDTH) == "password12345"


@pytest.mark.parametrize(
    ("registered", "typed"),
    [(COMPOSED, DECOMPOSED), (DECOMPOSED, COMPOSED), (FULL_WIDTH, "password12345")],
    ids=["composed-then-decomposed", "decomposed-then-composed", "full-width"],
)
def test_login_takes_the_same_password_in_another_form(
    client: Any, accounts: Any, login: Any, registered: str, typed: str
) -> None:
    accounts.make("alice", password=registered)
    response = login(client, "alice", typed)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert client.get("/profile").status_code == 200


def test_a_registration_form_then_login_in_the_other_form(app: Any, client: Any, csrf: Any) -> None:
    response = csrf.post(
        client,
        "/register",
        {"username": "bob", "email": "bob@example.org", "password": DECOMPOSED},
        page="/register",
    )
    assert response.status_code in (200, 302, 303), response.get_data(as_text=True)
    from meta.models import User
    from sqlalchemy import select

    from srcore.db import UserType, utcnow

    with app.extensions["srcore"].db.transaction() as session:
        bob = session.scalar(select(User).where(User.username == "bob"))
        assert bob is not None
        bob.user_type, bob.email_confirmed_at = UserType.active, utcnow()
    response = csrf.post(client, "/login", {"login": "bob", "password": COMPOSED})
    assert response.status_code == 302, response.get_data(as_text=True)


def test_a_wrong_password_is_still_wrong(client: Any, accounts: Any, login: Any) -> None:
    accounts.make("alice", password=COMPOSED)
    other = COMPOSED.replace("è", "e")
    assert login(client, "alice", other).status_code == 400
    assert client.get("/profile").status_code == 302


def test_a_hash_made_from_the_raw_form_before_still_verifies() -> None:
    """Hashes stored before passwords were normalised were made from what was typed: that
    form still logs in."""
    from meta.logic import Passwords

    hasher = PasswordHasher(**FAST_HASHER)
    passwords = Passwords(hasher)
    legacy = hasher.hash(DECOMPOSED)
    assert passwords.verify(legacy, DECOMPOSED)
    assert not passwords.verify(legacy, "something else")
    assert passwords.verify(passwords.hash(DECOMPOSED), COMPOSED)


def test_length_rules_count_the_normal_form() -> None:
    from meta.logic import check_password

    # Five full-width letters are five letters; "ﬃ" (one ligature) is three.
    assert check_password("ﬃﬃﬃ", min_length=9) is None
    assert check_password("ﬃﬃ", min_length=9) is not None
    assert check_password(wide("ALICE"), min_length=3, username="alice") is not None

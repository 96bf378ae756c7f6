"""``/admin/users?q=``: srcore's search grammar over usernames and emails, and ``state:``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from srcore.db import UserType


@pytest.fixture
def admin_client(app: Any, accounts: Any, login: Any) -> Any:
    accounts.make("boss", user_type=UserType.admin)
    accounts.make("alice", email="alice@example.org")
    accounts.make("al_ice", email="other@example.org", user_type=UserType.suspended)
    accounts.make("bob", email="bob.100%@example.org")
    client = app.test_client()
    assert login(client, "boss").status_code == 302
    return client


def names(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    return re.findall(r'<td[^>]*><a href="/admin/users/\d+">([^<]*)</a></td>', page)


def test_words_keys_and_negation(admin_client: Any) -> None:
    search = lambda q: names(admin_client.get("/admin/users", query_string={"q": q}))  # noqa: E731
    assert search("") == ["bob", "al_ice", "alice", "boss"]
    assert search("ALICE") == ["alice"]
    assert search("al_") == ["al_ice"]  # _ is a character, not a wildcard
    assert search('"100%"') == ["bob"]
    assert search("state:suspended") == ["al_ice"]
    assert search("example.org !state:suspended !state:admin") == ["bob", "alice"]
    assert search("state:admin") == ["boss"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("state:gone", "In state:gone: use one of unconfirmed, active, admin, suspended."),
        ("role:admin", "Unknown key &#39;role&#39; in role:admin; known keys: state."),
        ('"alice', "is never closed"),
    ],
)
def test_bad_query_shows_its_message(admin_client: Any, query: str, says: str) -> None:
    response = admin_client.get("/admin/users", query_string={"q": query})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert says in page
    assert 'aria-invalid="true"' in page
    assert names(response) == []

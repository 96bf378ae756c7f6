"""Every list paste shows, to a user (or an attacker) with thousands of pastes: a page
holds a page's worth, its next link (or cursor) reaches the rest once each, searches
included, and nobody else's unlisted pastes show on any list.

Pastes are written straight to the database, a bounded number in one statement.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import pytest
from paste.logic import ALPHABET, Settings
from paste.models import SHORT_ID_LENGTH, Format, Paste, User, Visibility
from sqlalchemy import insert

from srcore.pagination import MAX_LIMIT
from srcore.settings import settings

PASTES = 1_500
_ITEM = re.compile(r'<a class="item-title" href="/p/([a-z0-9]+)">')
_NEXT = re.compile(r'<a class="page-link page-next" href="([^"]+)" rel="next">')


def _short_id(n: int) -> str:
    digits = []
    for _ in range(SHORT_ID_LENGTH):
        n, digit = divmod(n, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(digits)


def _pastes(app: Any, owner: User, count: int, offset: int) -> list[dict[str, Any]]:
    """*count* pastes of *owner*, a third of them unlisted; the newest first."""
    rows = [
        {
            "short_id": _short_id(offset + i),
            "owner_id": owner.id,
            "title": f"{owner.username} {'even' if i % 2 else 'odd'} {i}",
            "text": "print('hello')",
            "format": Format.plain,
            "visibility": Visibility.unlisted if i % 3 == 0 else Visibility.public,
        }
        for i in range(count)
    ]
    with app.extensions["srcore"].db.transaction() as session:
        session.execute(insert(Paste), rows)
    return rows[::-1]


@pytest.fixture
def bob(app: Any) -> User:
    from srcore.testing import create_user

    user: User = create_user(app, "bob")
    return user


@pytest.fixture
def rows(app: Any, user: User, bob: User) -> dict[str, list[dict[str, Any]]]:
    return {"alice": _pastes(app, user, PASTES, 0), "bob": _pastes(app, bob, 300, PASTES)}


def _walk(client: Any, url: str) -> Iterator[list[str]]:
    """Each page's pastes, following its next link until a page has none."""
    seen = set()
    next_url: str | None = url
    while next_url is not None:
        assert next_url not in seen
        seen.add(next_url)
        response = client.get(next_url)
        assert response.status_code == 200, (next_url, response.status_code)
        page = response.get_data(as_text=True)
        yield _ITEM.findall(page)
        found = _NEXT.search(page)
        next_url = html.unescape(found.group(1)) if found else None


def _ids(rows: list[dict[str, Any]], *, public_only: bool = False, word: str = "") -> list[str]:
    return [
        r["short_id"]
        for r in rows
        if (not public_only or r["visibility"] == Visibility.public) and word in r["title"]
    ]


def _per_page(app: Any) -> int:
    with app.app_context():
        return settings(Settings).pastes_per_page


def _check(pages: list[list[str]], per_page: int, expected: list[str]) -> None:
    assert all(0 < len(items) <= per_page for items in pages)
    assert [short_id for items in pages for short_id in items] == expected


def test_the_public_list_comes_a_page_at_a_time(app, client, rows):
    public = sorted(
        _ids(rows["alice"], public_only=True) + _ids(rows["bob"], public_only=True),
        key=lambda short_id: _id_order(rows)[short_id],
    )
    _check(list(_walk(client, "/")), _per_page(app), public)
    # A search pages the same way, through its matches alone.
    odd = [s for s in public if s in set(_ids(rows["alice"] + rows["bob"], word="odd"))]
    _check(list(_walk(client, "/?search=odd")), _per_page(app), odd)
    hidden = list(_walk(client, "/?search=visibility:unlisted"))
    assert hidden == [[]]


def _id_order(rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Newest first: bob's were written after alice's."""
    return {r["short_id"]: i for i, r in enumerate(rows["bob"] + rows["alice"])}


def test_your_pastes_come_a_page_at_a_time(app, user_client, rows):
    mine = list(_walk(user_client, "/mine"))
    _check(mine, _per_page(app), _ids(rows["alice"]))
    even = list(_walk(user_client, "/mine?search=even"))
    _check(even, _per_page(app), _ids(rows["alice"], word="even"))
    assert list(_walk(user_client, "/mine?search=owner:bob")) == [[]]


def test_the_api_lists_your_pastes_a_page_at_a_time(app, client, make_token, user, rows):
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}
    unasked = client.get("/api/pastes", headers=headers).get_json()
    assert len(unasked["results"]) == 25 and unasked["next"]
    too_many = client.get("/api/pastes", query_string={"limit": MAX_LIMIT + 1}, headers=headers)
    assert too_many.status_code == 400
    for search, expected in [("", _ids(rows["alice"])), ("odd", _ids(rows["alice"], word="odd"))]:
        got: list[str] = []
        cursor = None
        while True:
            query = {"limit": MAX_LIMIT, "search": search, **({"cursor": cursor} if cursor else {})}
            body = client.get("/api/pastes", query_string=query, headers=headers).get_json()
            assert 0 < len(body["results"]) <= MAX_LIMIT
            assert {p["owner"]["username"] for p in body["results"]} == {"alice"}
            got += [p["id"] for p in body["results"]]
            cursor = body["next"]
            if cursor is None:
                break
        assert got == expected

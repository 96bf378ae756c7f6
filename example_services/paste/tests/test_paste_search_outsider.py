"""Searching pastes as an outsider: a second user, hostile query bytes, odd parameters.

The front page searches public pastes only, whoever asks and whatever the query says;
``/mine`` and the API search the caller's own. Every answer is a 2xx or a 4xx naming
``search``, never a 500; a title or a query comes back escaped.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from paste import logic
from paste.models import Paste, Visibility
from sqlalchemy import select

from srcore.search import MAX_TEXT_LENGTH
from srcore.testing import create_user, log_in_client

HOSTILE = [
    '"',
    '""',
    'a"b',
    "NEAR(port 8080)",
    "port*",
    "^port",
    "text:port",
    "title:notes",
    "(port OR notes)",
    "port AND NOT notes",
    "-port",
    "\\",
    '"\\"',
    "%",
    "_",
    "/",
    "';--",
    "\u202eport",
    "\U0001f600",
    "\ufeff",
    "a" * 1000,
    "a " * 21,
    "x:" * 400,
    "!",
    "!!port",
    "lang:",
    "lang:../../etc/passwd",
    'lang:"c++"',
    "lang:" + "p" * 900,
    "visibility:private",
    "owner:" + "o" * 900,
    "\u0130",
    "\u3000port",
    "\x00",
    "\x1b[0m",
]


def add(app: Any, owner: Any, title: str, text: str = "hello", **values: Any) -> Paste:
    with app.extensions["srcore"].db.transaction() as session:
        paste = Paste(
            owner_id=owner.id, short_id=logic.new_short_id(), title=title, text=text, **values
        )
        session.add(paste)
    return paste


def titles(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    # A title is isolated in <bdi>, so its text cannot reorder what is around it.
    return re.findall(r'class="item-title" href="[^"]*">(?:<bdi>)?([^<]*)(?:</bdi>)?</a>', page)


@pytest.fixture
def bob(app: Any) -> Any:
    return create_user(app, "bob")


@pytest.fixture
def bob_client(app: Any, bob: Any) -> Any:
    return log_in_client(app.test_client(), bob)


@pytest.fixture
def pastes(app: Any, user: Any, bob: Any) -> None:
    add(app, user, "Config notes", "port = 8080")
    add(app, user, "Secret draft", "hunter2 do not share", visibility=Visibility.unlisted)
    add(app, bob, "Bob's public", "nothing to hide")


def test_hostile_queries_are_a_page_or_a_400(app, client, user_client, pastes):
    for who, path in ((client, "/"), (user_client, "/"), (user_client, "/mine")):
        for query in HOSTILE:
            response = who.get(path, query_string={"search": query})
            assert response.status_code in (200, 400), (path, query[:40], response.status_code)
            page = response.get_data(as_text=True)
            assert "Secret draft" not in page or path == "/mine"
            if response.status_code == 400:
                assert 'id="search-error"' in page or "control characters" in page, query[:40]


def test_hostile_queries_in_the_api_are_a_list_or_a_400_on_search(client, user, pastes, make_token):
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}
    for query in HOSTILE:
        response = client.get("/api/pastes", query_string={"search": query}, headers=headers)
        assert response.status_code in (200, 400), (query[:40], response.status_code)
        body = response.get_json()
        if response.status_code == 200:
            assert set(body) == {"results", "next"}
        else:
            [error] = body["errors"]
            assert error.get("field", "search") == "search", (query[:40], error)
            assert 0 < len(error["reason"]) < 300, (query[:40], error)


def test_nobody_finds_an_unlisted_paste_on_the_front_page(app, client, bob_client, user, pastes):
    for i in range(30):
        add(app, user, f"hidden {i}", "hunter2", visibility=Visibility.unlisted)
    for who in (client, bob_client, log_in_client(app.test_client(), user)):
        for query in ("hunter2", '"do not share"', "visibility:unlisted", "owner:alice hunter2"):
            response = who.get("/", query_string={"search": query})
            assert response.status_code == 200
            assert titles(response) == []
            page = response.get_data(as_text=True)
            assert "page=2" not in page  # not even a second page of nothing
        missing = who.get("/", query_string={"search": "zzzz-nowhere"}).get_data(as_text=True)
        found_nothing = who.get("/", query_string={"search": "hunter2"}).get_data(as_text=True)
        assert _without_noise(missing, "zzzz-nowhere") == _without_noise(found_nothing, "hunter2")


def _without_noise(page: str, query: str) -> str:
    """A page with its query, request id and CSRF token blanked: what else differs is a leak."""
    page = page.replace(query, "Q")
    page = re.sub(r'name="csrf_token" value="[^"]*"', "", page)
    page = re.sub(r'content="[0-9a-f]{16}"', "", page)
    return re.sub(r"[0-9a-f]{16}", "", page)


def test_search_follows_visibility_and_deletion(
    app, client, bob_client, user, user_client, csrf_token, pastes
):
    public = add(app, user, "Going dark", "launch codes")
    assert titles(bob_client.get("/", query_string={"search": "launch"})) == ["Going dark"]
    token = csrf_token(user_client, f"/p/{public.short_id}/edit")
    response = user_client.post(
        f"/p/{public.short_id}/edit",
        data={
            "title": "Going dark",
            "text": "launch codes",
            "format": "plain",
            "language": "",
            "visibility": "unlisted",
            "csrf_token": token,
        },
    )
    assert response.status_code == 302
    for who in (client, bob_client):
        assert titles(who.get("/", query_string={"search": "launch"})) == []
    assert titles(user_client.get("/mine", query_string={"search": "launch"})) == ["Going dark"]
    token = csrf_token(user_client, f"/p/{public.short_id}/delete")
    response = user_client.post(f"/p/{public.short_id}/delete", data={"csrf_token": token})
    assert response.status_code == 302
    assert titles(user_client.get("/mine", query_string={"search": "launch"})) == []
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(Paste).where(Paste.title == "Going dark")) is None


def test_bob_finds_only_his_own(app, client, bob, bob_client, user, pastes, make_token):
    for query in ("owner:alice", "visibility:unlisted", "hunter2", "port", ""):
        assert "Secret draft" not in titles(bob_client.get("/mine", query_string={"search": query}))
        assert "Config notes" not in titles(bob_client.get("/mine", query_string={"search": query}))
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=bob)}"}
    for query in ("owner:alice", "visibility:unlisted", "hunter2", "port", ""):
        response = client.get("/api/pastes", query_string={"search": query}, headers=headers)
        assert response.status_code == 200
        assert {p["title"] for p in response.get_json()["results"]} <= {"Bob's public"}


def test_alices_cursor_shows_bob_only_his_own(app, client, user, bob, make_token):
    for i in range(3):
        add(app, user, f"alice {i}", "shared word", visibility=Visibility.unlisted)
    add(app, bob, "bob's", "shared word")
    alice = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}
    first = client.get(
        "/api/pastes", query_string={"search": "shared", "limit": 1}, headers=alice
    ).get_json()
    assert first["next"]
    bobs = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=bob)}"}
    stolen = client.get(
        "/api/pastes", query_string={"search": "shared", "cursor": first["next"]}, headers=bobs
    )
    assert stolen.status_code in (200, 400)
    if stolen.status_code == 200:
        assert {p["title"] for p in stolen.get_json()["results"]} <= {"bob's"}


def test_a_long_self_similar_word_is_refused_with_a_reason(app, client, user, make_token):
    add(app, user, "Long", "a" * 100_000)
    fits = titles(client.get("/", query_string={"search": "a" * MAX_TEXT_LENGTH}))
    assert fits == ["Long"]
    too_long = "a" * (MAX_TEXT_LENGTH - 1) + "b " + "a" * 20
    page = client.get("/", query_string={"search": too_long})
    assert page.status_code == 400
    assert f"use at most {MAX_TEXT_LENGTH}," in page.get_data(as_text=True)
    assert titles(page) == []
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}
    response = client.get("/api/pastes", query_string={"search": too_long}, headers=headers)
    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["field"] == "search"


def test_a_repeated_search_lists_nothing(app, client, user, pastes, make_token):
    response = client.get("/?search=port&search=nothing")
    assert response.status_code == 400
    assert "more than once" in response.get_data(as_text=True)
    assert titles(response) == []
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}
    response = client.get("/api/pastes?search=port&search=x", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "search"


def test_titles_and_queries_come_back_escaped(app, client, user):
    add(app, user, "<script>alert(1)</script> notes", "<img src=x onerror=alert(1)>")
    for query in ("notes", "<script>", '"<img src=x onerror=alert(1)>"', '<b onclick=x>"x'):
        page = client.get("/", query_string={"search": query}).get_data(as_text=True)
        assert "<script>alert(1)" not in page
        assert "<img src=x" not in page
        assert "<b onclick" not in page
    found = client.get("/", query_string={"search": "<script>"}).get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; notes" in found

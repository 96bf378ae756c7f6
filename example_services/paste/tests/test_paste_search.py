"""Searching pastes: the public list, your pastes, and the API's ``?search=``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from paste import logic
from paste.models import Format, Paste, Visibility

from srcore.testing import create_user, log_in_client


def add(app: Any, owner: Any, title: str, text: str = "hello", **values: Any) -> None:
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Paste(
                owner_id=owner.id, short_id=logic.new_short_id(), title=title, text=text, **values
            )
        )


def titles(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    # A title is isolated in <bdi>, so its text cannot reorder what is around it.
    return re.findall(r'class="item-title" href="[^"]*">(?:<bdi>)?([^<]*)(?:</bdi>)?</a>', page)


@pytest.fixture
def bob(app: Any) -> Any:
    return create_user(app, "bob")


@pytest.fixture
def pastes(app: Any, user: Any, bob: Any) -> None:
    add(app, user, "Config notes", "port = 8080\n100% sure")
    add(app, user, "Secret draft", "do not share", visibility=Visibility.unlisted)
    add(app, bob, "Readme", "# Title\n\nsnake_case rules", format=Format.markdown)
    add(app, bob, "Bob's unlisted notes", "notes", visibility=Visibility.unlisted)


def test_front_page_search(client, pastes):
    search = lambda q: titles(client.get("/", query_string={"search": q}))  # noqa: E731
    assert search("") == ["Readme", "Config notes"]
    assert search("notes") == ["Config notes"]  # unlisted pastes stay off the front page
    assert search("8080") == ["Config notes"]
    assert search('"100%"') == ["Config notes"]
    assert search("snake_case") == ["Readme"]
    assert search("format:markdown") == ["Readme"]
    assert search("!format:markdown") == ["Config notes"]
    assert search("owner:ALICE") == ["Config notes"]
    assert search("visibility:unlisted") == []
    assert search("nothing-like-this") == []


def test_front_page_search_pages_keep_the_search(app, client, user):
    for i in range(27):
        add(app, user, f"note {i:02d}")
    add(app, user, "other")
    page = client.get("/", query_string={"search": "note"}).get_data(as_text=True)
    assert 'value="note"' in page
    assert "search=note" in page
    assert titles(client.get("/", query_string={"search": "note", "page": 2})) == [
        "note 01",
        "note 00",
    ]


def test_your_pastes_search(app, user, pastes):
    client = log_in_client(app.test_client(), user)
    search = lambda q: titles(client.get("/mine", query_string={"search": q}))  # noqa: E731
    assert search("visibility:unlisted") == ["Secret draft"]
    assert search("!visibility:unlisted") == ["Config notes"]
    assert search('"do not"') == ["Secret draft"]
    assert search("owner:bob") == []  # never anyone else's


@pytest.mark.parametrize(
    ("path", "query", "says"),
    [
        ("/", "visibility:secret", "In visibility:secret: use one of public, unlisted."),
        ("/", "colour:red", "Unknown key &#39;colour&#39; in colour:red"),
        ("/", '"unclosed', "is never closed"),
        ("/mine", "format:", "has no value"),
        ("/mine", "!", "A lone ! negates nothing"),
    ],
)
def test_bad_search_shows_the_message(app, user, pastes, path, query, says):
    client = log_in_client(app.test_client(), user)
    response = client.get(path, query_string={"search": query})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert says in page
    assert 'aria-invalid="true"' in page
    assert titles(response) == []


def test_api_search(client, app, user, pastes, make_token):
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=user)}"}

    def found(query: str) -> list[str]:
        response = client.get("/api/pastes", query_string={"search": query}, headers=headers)
        assert response.status_code == 200, response.get_json()
        return [p["title"] for p in response.get_json()["results"]]

    assert found("") == ["Secret draft", "Config notes"]
    assert found("visibility:unlisted") == ["Secret draft"]
    assert found("port") == ["Config notes"]
    assert found("owner:bob") == []
    response = client.get("/api/pastes", query_string={"search": "lang:x y:"}, headers=headers)
    assert response.status_code == 400
    assert response.get_json() == {
        "errors": [{"field": "search", "reason": "The term y: has no value after the colon."}]
    }


def test_search_by_language(app, client, user):
    add(app, user, "Script", "print(1)", language="python")
    add(app, user, "Styles", "a { }", language="css")
    add(app, user, "Plain", "words")
    search = lambda q: titles(client.get("/", query_string={"search": q}))  # noqa: E731
    assert search("lang:python") == ["Script"]
    assert search("lang:PY") == ["Script"]  # any alias, any case
    assert search("!lang:python") == ["Plain", "Styles"]  # no language is not python
    response = client.get("/", query_string={"search": "lang:nosuchlanguage"})
    assert response.status_code == 400
    assert "In lang:nosuchlanguage: no language is called that." in response.get_data(as_text=True)

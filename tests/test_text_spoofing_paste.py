"""paste: a title is one line with no bidirectional control; a paste's text keeps what it
holds; the page isolates the title and shows the code's hidden characters."""

from __future__ import annotations

from typing import Any

import pytest

TROJAN = 'if access_level != "user\u202e \u2066// Check if admin\u2069 \u2066":\n    ok()\n'


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "paste"


def _headers(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}"}


def _add(app: Any, owner: Any, **values: Any) -> str:
    from paste import logic
    from paste.models import Format, Paste, Visibility

    short_id = logic.new_short_id()
    with app.extensions["srcore"].db.transaction() as session:
        values.setdefault("format", Format.plain)
        values.setdefault("visibility", Visibility.public)
        session.add(Paste(owner_id=owner.id, short_id=short_id, **values))
    return short_id


@pytest.mark.parametrize("title", ["invoice\u202efdp.exe", "two\nlines", "a\u2067b"])
def test_api_refuses_a_title_that_reads_otherwise(
    client: Any, make_token: Any, user: Any, title: str
) -> None:
    response = client.post(
        "/api/pastes", json={"title": title, "text": "x"}, headers=_headers(make_token, user)
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.get_json()["errors"]] == ["title"]


def test_api_keeps_bidirectional_text_in_a_paste_and_rtl_titles(
    client: Any, make_token: Any, user: Any
) -> None:
    response = client.post(
        "/api/pastes",
        json={"title": "שלום עולם", "text": TROJAN, "language": "python"},
        headers=_headers(make_token, user),
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["text"] == TROJAN
    assert response.get_json()["title"] == "שלום עולם"


def test_page_isolates_the_title_and_shows_hidden_characters(
    app: Any, client: Any, user: Any
) -> None:
    # A row from before the rule: its title cannot reorder the page around it.
    short_id = _add(app, user, title="invoice\u202efdp.exe", text=TROJAN, language="python")
    page = client.get(f"/p/{short_id}").get_data(as_text=True)
    assert "<h1><bdi>invoice\u202efdp.exe</bdi></h1>" in page
    assert '<p class="code-note" role="note">' in page
    code = page[page.index('<pre class="code">') :]
    assert "\u202e" not in code and "\u2066" not in code
    assert "&lt;U+202E&gt;" in code
    listing = client.get("/").get_data(as_text=True)
    assert "><bdi>invoice\u202efdp.exe</bdi></a>" in listing
    raw = client.get(f"/p/{short_id}/raw")
    assert raw.get_data(as_text=True) == TROJAN

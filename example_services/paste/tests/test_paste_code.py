"""Paste's code view: a declared language, numbered lines, highlighting."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from paste import logic
from paste.models import Format, Paste
from sqlalchemy import select

from srcore.webhooks.models import OutboxRow

CODE = 'def greet(name):\n    return "<b>" + name\n\n\nprint(greet("x"))\n'


def pastes(app):
    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(select(Paste).order_by(Paste.id)))


def add(app, owner, text=CODE, **values):
    with app.extensions["srcore"].db.transaction() as session:
        paste = Paste(owner_id=owner.id, short_id=logic.new_short_id(), text=text, **values)
        session.add(paste)
    return paste


@pytest.fixture
def auth(make_token, user):
    return {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}"}


class CodeText(HTMLParser):
    """The text of ``<pre class="code">`` as a reader selecting it would copy it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.text: list[str] = []
        self.lines = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "pre" and attrs.get("class") == "code":
            self.depth = 1
        elif self.depth:
            self.depth += 1
            if tag == "span" and attrs.get("class") == "line":
                self.lines += 1

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.text.append(data)


def code_of(page: str) -> CodeText:
    parser = CodeText()
    parser.feed(page)
    parser.close()
    return parser


# -- the view -------------------------------------------------------------------------------


def test_code_is_highlighted_by_its_language_with_numbered_lines(app, client, user):
    paste = add(app, user, language="python")
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert '<span class="hl-k">def</span>' in page
    assert '<span class="hl-nf">greet</span>' in page
    code = code_of(page)
    # One numbered line per line of the paste, and the text copies back exactly: the
    # numbers are drawn by CSS, not written into the code.
    assert code.lines == 5
    assert "".join(code.text) == CODE
    assert "<b>" not in page.split('<pre class="code">', 1)[1]
    assert "Python" in page


def test_code_without_a_language_is_numbered_and_escaped(app, client, user):
    text = "<script>alert(1)</script>\n  indented *not em*"
    paste = add(app, user, text=text)
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    code = code_of(page)
    assert code.lines == 2
    assert "".join(code.text) == text + "\n"
    assert "<script>alert" not in page
    assert 'class="hl-' not in page


def test_a_stored_language_pygments_no_longer_knows_shows_plain_code(app, client, user):
    paste = add(app, user, language="gone-language")
    page = client.get(f"/p/{paste.short_id}")
    assert page.status_code == 200
    assert "".join(code_of(page.get_data(as_text=True)).text) == CODE


def test_markdown_pastes_ignore_the_language(app, client, user):
    paste = add(app, user, text="# Title\n\n- [x] done", format=Format.markdown, language="python")
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert 'id="user-content-title"' in page
    assert '<pre class="code">' not in page
    assert 'type="checkbox"' in page


def test_the_list_names_the_language(app, client, user):
    add(app, user, title="Snippet", language="rust")
    assert "Rust" in client.get("/").get_data(as_text=True)


# -- the form -------------------------------------------------------------------------------


def test_the_form_offers_languages_and_a_monospace_editor(user_client):
    page = user_client.get("/new").get_data(as_text=True)
    select_html = re.search(r'<select id="language".*?</select>', page, re.S)
    assert select_html
    options = re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)<', select_html.group(0))
    assert options[0] == ("", " selected", "Plain text")
    assert ("python", "", "Python") in options
    assert len(options) > 100
    assert re.search(r'<textarea id="text"[^>]*class="code-input"', page)
    assert 'class="card form-card form form-wide"' in page


def test_the_form_stores_the_canonical_language(app, user_client, csrf_token):
    response = user_client.post(
        "/new",
        data={"text": CODE, "language": "Py", "csrf_token": csrf_token(user_client, "/new")},
    )
    assert response.status_code == 302
    (paste,) = pastes(app)
    assert paste.language == "python"


@pytest.mark.parametrize("language", ["no-such-language", "x" * 300, "python!"])
def test_the_form_refuses_an_unknown_language(app, user_client, csrf_token, language):
    response = user_client.post(
        "/new",
        data={"text": CODE, "language": language, "csrf_token": csrf_token(user_client, "/new")},
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert re.search(r'<select id="language"[^>]*aria-invalid="true"', page)
    assert pastes(app) == []


def test_an_empty_language_is_plain_text(app, user_client, csrf_token):
    token = csrf_token(user_client, "/new")
    assert user_client.post("/new", data={"text": "x", "language": "", "csrf_token": token})
    (paste,) = pastes(app)
    assert paste.language is None


# -- the API --------------------------------------------------------------------------------


def test_the_api_takes_and_answers_the_language(app, client, auth):
    created = client.post("/api/pastes", json={"text": CODE, "language": "PYTHON3"}, headers=auth)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["language"] == "python"
    got = client.get(f"/api/pastes/{body['id']}", headers=auth).get_json()
    assert got["language"] == "python"
    with app.extensions["srcore"].db.transaction() as session:
        (row,) = session.scalars(select(OutboxRow))
        assert json.loads(row.payload)["language"] == "python"


def test_the_api_defaults_to_plain_text(client, auth):
    body = client.post("/api/pastes", json={"text": "x"}, headers=auth).get_json()
    assert body["language"] is None


@pytest.mark.parametrize("language", ["cobol-2099", 42, ["python"], {"a": 1}, "x" * 1000])
def test_the_api_refuses_an_unknown_language_with_400(app, client, auth, language):
    response = client.post("/api/pastes", json={"text": CODE, "language": language}, headers=auth)
    assert response.status_code == 400
    assert [e["field"] for e in response.get_json()["errors"]] == ["language"]
    assert pastes(app) == []
    with app.extensions["srcore"].db.transaction() as session:
        assert list(session.scalars(select(OutboxRow))) == []

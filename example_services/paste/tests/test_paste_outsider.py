"""Paste as an outsider sees it: a second user, strangers, forged requests and hostile
bytes against one user's pastes, through the pages and the API, on both databases.

Every probe ends with the same two checks: the answer is a clear 4xx (never a 500, never
a redirect to a paste made of something else than what was sent), and alice's rows and
events are as they were.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from paste import logic
from paste.models import Paste, Visibility
from sqlalchemy import select

from srcore.testing import create_user, log_in_client
from srcore.webhooks.models import OutboxRow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM = "application/x-www-form-urlencoded"


def add(app: Any, owner: Any, text: str = "alice's secret", **values: Any) -> Paste:
    with app.extensions["srcore"].db.transaction() as session:
        paste = Paste(owner_id=owner.id, short_id=logic.new_short_id(), text=text, **values)
        session.add(paste)
    return paste


def rows(app: Any) -> list[tuple[Any, ...]]:
    """Every paste as stored, and every event: what a probe must leave as it was."""
    with app.extensions["srcore"].db.transaction() as session:
        pastes = [
            (p.short_id, p.owner_id, p.title, p.text, p.format, p.language, p.visibility)
            for p in session.scalars(select(Paste).order_by(Paste.id))
        ]
        events = [(r.event, r.resource) for r in session.scalars(select(OutboxRow))]
    return [*pastes, *events]


def csrf(client: Any, path: str = "/new") -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


@pytest.fixture
def bearer(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}"}


def multipart(*parts: tuple[bytes, bytes, bytes | None]) -> bytes:
    """A multipart/form-data body (boundary ``b0undary``) of ``(name, value, filename)``."""
    body = b""
    for name, value, filename in parts:
        body += b'--b0undary\r\nContent-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            body += b'; filename="' + filename + b'"'
        body += b"\r\n\r\n" + value + b"\r\n"
    return body + b"--b0undary--\r\n"


MULTIPART = "multipart/form-data; boundary=b0undary"


# -- hostile bytes in forms and query strings -------------------------------------------------

#: Form bodies whose bytes are not UTF-8 text: Werkzeug kept them percent-encoded (stored
#: as the literal text "%ED%A0%80") or, raw, read the whole form as empty.
NOT_UTF8_FORMS = [
    b"text=%ED%A0%80",  # a lone surrogate, percent-encoded
    b"text=%FF%FE",
    b"text=ok&title=%C3",  # a sequence cut short
    b"text=ok&language=%C0%AF",  # an overlong encoding of "/"
    b"text=ok&ti%FFtle=x",  # in a name
    b"text=\xff",  # raw, not percent-encoded
]

#: Multipart bodies that are not UTF-8 text or not multipart at all: Werkzeug put U+FFFD
#: in place of a value's bytes, or read a broken body as an empty form.
NOT_UTF8_MULTIPART = [
    multipart((b"text", b"\xed\xa0\x80", None)),
    multipart((b"text", b"ok", None), (b"title", b"\xff\xfe", None)),
    multipart((b"te\xffxt", b"ok", None)),
    multipart((b"text", b"ok", None), (b"attachment", b"x", b"\xff.txt")),
]
MALFORMED_MULTIPART = [
    b'--b0undary\r\nContent-Disposition: form-data; name="text"\r\n\r\nno end',
    b"no boundary anywhere",
    b"--b0undary\r\nX-Nothing: here\r\n\r\nok\r\n--b0undary--\r\n",
]


def _page_form(client: Any, body: bytes, content_type: str) -> Any:
    """*body* posted to the new-paste page, with a valid CSRF token in front."""
    token = csrf(client).encode()
    if content_type == FORM:
        body = b"csrf_token=" + token + b"&" + body
    else:
        head = b'--b0undary\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        body = head + token + b"\r\n" + body
    return client.post("/new", data=body, content_type=content_type)


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [(b, FORM, "not UTF-8") for b in NOT_UTF8_FORMS]
    + [(b, MULTIPART, "not UTF-8") for b in NOT_UTF8_MULTIPART]
    + [(b, MULTIPART, "cannot be read") for b in MALFORMED_MULTIPART]
    + [(b"text=ok", "multipart/form-data", "cannot be read")],
)
def test_a_form_that_is_not_utf8_text_is_refused(
    app: Any,
    client: Any,
    user_client: Any,
    bearer: dict[str, str],
    body: bytes,
    content_type: str,
    says: str,
) -> None:
    before = rows(app)
    api = client.post("/api/pastes", data=body, content_type=content_type, headers=bearer)
    assert api.status_code == 400, api.get_data()
    reasons = [e["reason"] for e in api.get_json()["errors"]]
    assert len(reasons) == 1 and says in reasons[0], reasons
    page = _page_form(user_client, body, content_type)
    assert page.status_code == 400, page.get_data()
    assert says in page.get_data(as_text=True)
    assert rows(app) == before


def test_utf8_forms_still_work_both_ways(
    app: Any, client: Any, user_client: Any, bearer: Any
) -> None:
    body = b"text=caf%C3%A9+%F0%9F%98%80&title=%E2%82%AC"
    assert (
        client.post("/api/pastes", data=body, content_type=FORM, headers=bearer).status_code == 201
    )
    response = client.post(
        "/api/pastes",
        data=multipart((b"text", "café 😀".encode(), None), (b"title", "€".encode(), None)),
        content_type=MULTIPART,
        headers=bearer,
    )
    assert response.status_code == 201, response.get_data()
    assert _page_form(user_client, body, FORM).status_code == 302
    texts = {(p[2], p[3]) for p in rows(app) if len(p) == 7}
    assert texts == {("€", "café 😀")}


@pytest.mark.parametrize("query", ["search=%ED%A0%80", "search=%FF", "page=%C3", "%FF=1"])
@pytest.mark.parametrize("path", ["/", "/mine", "/api/pastes", "/new"])
def test_a_query_string_that_is_not_utf8_is_refused(
    app: Any, user_client: Any, bearer: dict[str, str], path: str, query: str
) -> None:
    add(app, create_user(app, "bob"), "%FF and %ED%A0%80 as text")
    response = user_client.get(f"{path}?{query}", headers=bearer)
    assert response.status_code == 400, (path, query, response.status_code)
    assert "not UTF-8" in response.get_data(as_text=True)
    assert "%ED%A0%80 as text" not in response.get_data(as_text=True)


def test_raw_bytes_in_the_query_string_are_a_400(app: Any, user_client: Any, bearer: Any) -> None:
    # Werkzeug's server hands such bytes to the app (gunicorn refuses them itself): reading
    # the query string raised UnicodeDecodeError, a 500.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    for path in ("/", "/mine", "/api/pastes", "/p/abcdefghjk"):
        response = user_client.get(
            path, environ_overrides={"QUERY_STRING": "search=\xff"}, headers=bearer
        )
        assert response.status_code == 400, (path, response.status_code)


#: A multipart part that is a file where a field is text: Werkzeug files it apart from the
#: form, so the field read as missing ("Text is required") or silently took its default.
FILE_FOR_TEXT = [
    ([(b"text", b"hello", b"a.txt")], "Text must be text, not a file."),
    ([(b"text", b"ok", None), (b"title", b"mine", b"a.txt")], "Title must be text, not a file."),
    (
        [(b"text", b"ok", None), (b"visibility", b"unlisted", b"v.txt")],
        "Visibility must be text, not a file.",
    ),
    ([(b"text", b"ok", None), (b"text", b"two", b"a.txt")], "Text must be text, not a file."),
]


@pytest.mark.parametrize(("parts", "says"), FILE_FOR_TEXT)
def test_a_file_where_text_is_expected_is_refused(
    app: Any, client: Any, user_client: Any, bearer: dict[str, str], parts: Any, says: str
) -> None:
    before = rows(app)
    body = multipart(*parts)
    api = client.post("/api/pastes", data=body, content_type=MULTIPART, headers=bearer)
    assert api.status_code == 400, api.get_data()
    assert says in [e["reason"] for e in api.get_json()["errors"]]
    page = _page_form(user_client, body, MULTIPART)
    assert page.status_code == 400
    assert says in page.get_data(as_text=True)
    assert rows(app) == before


# -- a second user, strangers and forged requests ----------------------------------------------


def test_bob_finds_nothing_of_alices_unlisted_paste_and_changes_nothing(
    app: Any, client: Any, user: Any, user_client: Any, make_token: Any
) -> None:
    """Bob lists, searches and pages with his session and his tokens, subscribes to her
    paste, and posts her forms with his own CSRF token: none of it names her unlisted
    paste, and her rows and events stay as they were."""
    secret = add(app, user, "zebra-unlisted", title="Zebra", visibility=Visibility.unlisted)
    bob = create_user(app, "bob")
    add(app, bob, "bob's own")
    before = rows(app)
    browser = log_in_client(app.test_client(), bob)
    reader = {"Authorization": f"Bearer {make_token('paste/pastes:RO', user=bob)}"}
    writer = {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=bob)}"}
    for query in ("", "zebra", "owner:alice", "visibility:unlisted owner:alice", "!owner:bob"):
        for answer in (
            browser.get("/", query_string={"search": query}),
            browser.get("/mine", query_string={"search": query}),
            client.get("/api/pastes", query_string={"search": query}, headers=reader),
            client.get("/", query_string={"search": query}),
        ):
            assert answer.status_code == 200, (query, answer.status_code)
            text = answer.get_data(as_text=True)
            assert secret.short_id not in text and "Zebra" not in text and "zebra-" not in text
    hook = {"url": "https://hooks.example.invalid/x", "events": ["paste:updated"]}
    refused = client.post(
        "/api/webhooks", json={**hook, "resource": f"paste:{secret.short_id}"}, headers=writer
    )
    missing = client.post(
        "/api/webhooks", json={**hook, "resource": "paste:abcdefghjk"}, headers=writer
    )
    assert refused.status_code == missing.status_code == 400
    assert refused.get_json()["errors"][0]["reason"].replace(secret.short_id, "X") == (
        missing.get_json()["errors"][0]["reason"].replace("abcdefghjk", "X")
    )
    token = csrf(browser)
    for action in ("edit", "delete"):
        path = f"/p/{secret.short_id}/{action}"
        answer = browser.post(path, data={"text": "bob was here", "csrf_token": token})
        assert answer.status_code == 403
        assert "zebra-" not in answer.get_data(as_text=True)
    # Her own session, but no token, a token in the query, or a method that is not POST.
    own = csrf(user_client)
    for method in ("HEAD", "OPTIONS", "GET", "PUT", "PATCH", "DELETE"):
        for action in ("edit", "delete"):
            path = f"/p/{secret.short_id}/{action}?csrf_token={own}&text=forged"
            assert user_client.open(path, method=method).status_code in (200, 405)
        assert user_client.open(
            f"/new?csrf_token={own}&text=forged", method=method
        ).status_code in (
            200,
            405,
        )
    assert user_client.post(f"/p/{secret.short_id}/delete").status_code == 400
    assert (
        user_client.post(f"/p/{secret.short_id}/delete", data={"csrf_token": "x"}).status_code
        == 400
    )
    assert rows(app) == before

"""A form the service cannot take for want of a session comes back with what was written;
pages made for a logged-in user are kept by no cache. (The browser's side of it, with meta
and todo, is in test_stale_forms_browser.py.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Response

from srcore.auth import login_required

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
LONG = "First line of a long comment.\nSecond line, & <b>not bold</b>."


def own_origin(app: Any) -> str:
    return str(app.extensions["srcore"].section["origin"])


def anonymous_token(client: Any) -> str:
    token: str = client.get("/form").get_json()["csrf"]
    return token


def test_a_form_from_the_services_page_comes_back_with_its_text(app: Any, client: Any) -> None:
    form = {"title": "Short", "text": LONG, "password": "hunter2", "csrf_token": "stale"}
    response = client.post("/form", data=form, headers={"Origin": own_origin(app)})
    assert response.status_code == 400
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "Not sent" in page
    assert 'name="title"' in page and 'value="Short"' in page
    assert (
        ">First line of a long comment.\nSecond line, &amp; &lt;b&gt;not bold&lt;/b&gt;.<" in page
    )
    # A password is typed again, never written into a page.
    assert "hunter2" not in page and "Not repeated here: password" in page
    # The form sent again carries this session's token, and is taken.
    fresh = _TOKEN.search(page)
    assert fresh is not None and fresh.group(1) != "stale"
    again = {"text": LONG, "csrf_token": fresh.group(1)}
    assert client.post("/form", data=again).get_json() == {"ok": True}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.invalid"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {},
    ],
)
def test_a_form_from_elsewhere_is_not_written_back(client: Any, headers: dict[str, str]) -> None:
    # Another site's form, answered with one holding a valid token, would need only a
    # click to be sent as the person: it gets the plain error page.
    response = client.post("/form", data={"text": LONG}, headers=headers)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "missing its security token" in page
    assert "First line" not in page and "csrf_token" not in page.split("<main", 1)[1]


def test_a_form_from_the_same_origin_without_an_origin_header_comes_back(client: Any) -> None:
    headers = {"Sec-Fetch-Site": "same-origin"}
    response = client.post("/form", data={"text": LONG}, headers=headers)
    assert response.status_code == 400 and "First line" in response.get_data(as_text=True)


def test_an_api_call_gets_the_plain_error_and_an_empty_form_no_form(app: Any, client: Any) -> None:
    origin = {"Origin": own_origin(app)}
    # A form with nothing to repeat (a button) is said to be not sent, and shown no form
    # that one click would send as whoever is logged in now (test_browser_tabs_outsider.py).
    for data in ({}, {"csrf_token": "x"}):
        page = client.post("/form", data=data, headers=origin).get_data(as_text=True)
        assert "Not sent" in page and "<form" not in page.split("<main", 1)[1]
    as_json = client.post(
        "/form", data={"text": LONG}, headers={**origin, "Accept": "application/json"}
    )
    assert as_json.status_code == 400 and as_json.is_json


def test_a_form_sent_after_the_session_ended_at_meta_comes_back(app: Any, client: Any) -> None:
    # meta ended the session after the form's page was opened: its token still matched the
    # cookie, but there is no user any more, and the login round trip would drop the text.
    app.add_url_rule("/note", "note", login_required(lambda: "sent"), methods=["POST"])
    form = {"text": LONG, "csrf_token": anonymous_token(client)}
    response = client.post("/note", data=form, headers={"Origin": own_origin(app)})
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "Not sent: you are logged out" in page and "First line" in page
    # From elsewhere, the usual login round trip.
    assert client.post("/note", data=form).status_code in (302, 503)


def test_pages_of_a_logged_in_user_are_kept_by_no_cache(
    app: Any, client: Any, user_client: Any
) -> None:
    @app.get("/cached")
    def cached() -> Response:
        from srcore.auth import current_user

        response = Response(f"hello {current_user.username}")
        response.headers["Cache-Control"] = "private, max-age=60"
        return response

    assert user_client.get("/private").headers["Cache-Control"] == "no-store"
    assert user_client.get("/").headers["Cache-Control"] == "no-store"
    # A view's own choice stands; an anonymous page is private, as before.
    assert user_client.get("/cached").headers["Cache-Control"] == "private, max-age=60"
    assert client.get("/form").headers["Cache-Control"] == "private"

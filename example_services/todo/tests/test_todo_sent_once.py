"""A form that creates something, sent twice with its one-time token, creates once.

Without JavaScript (or from a script) a double click or a resend after a slow answer
posts the same form again; the second POST is answered like the first, a 303 to what the
first made. A token of another session is refused as a CSRF token is.
"""

from __future__ import annotations

import re

from todo.models import Comment, Ticket

_FIELDS = re.compile(r'name="(csrf_token|form_once)" value="([^"]+)"')


def _form(client, path: str, *, form: str = "") -> dict[str, str]:
    page = client.get(path).get_data(as_text=True)
    if form:
        page = page[page.index(form) :]
    fields: dict[str, str] = {}
    for name, value in _FIELDS.findall(page):
        fields.setdefault(name, value)
    assert set(fields) == {"csrf_token", "form_once"}, fields
    return fields


def test_a_new_ticket_form_sent_twice_opens_one_ticket(user_client, tracker, make):
    form = {**_form(user_client, "/~alice/bugs/new"), "title": "Twice", "description": ""}
    first = user_client.post("/~alice/bugs/new", data=form)
    assert first.status_code in (302, 303)
    second = user_client.post("/~alice/bugs/new", data=form)
    assert second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"]
    assert make.count(Ticket) == 1
    # A new form has a new token: a second ticket is a second ticket.
    again = {**_form(user_client, "/~alice/bugs/new"), "title": "Another"}
    assert user_client.post("/~alice/bugs/new", data=again).status_code in (302, 303)
    assert make.count(Ticket) == 2


def test_a_comment_sent_twice_is_one_comment(user_client, tracker, ticket, make):
    page = f"/~alice/bugs/{ticket.number}"
    form = {**_form(user_client, page, form='id="comment-form"'), "text": "Me too."}
    first = user_client.post(f"{page}/comment", data=form)
    second = user_client.post(f"{page}/comment", data=form)
    assert second.status_code == 303
    assert second.headers["Location"] == first.headers["Location"]
    assert make.count(Comment) == 1


def test_a_form_sent_back_with_errors_frees_its_token(user_client, tracker, make):
    form = {**_form(user_client, "/~alice/bugs/new"), "title": ""}
    assert user_client.post("/~alice/bugs/new", data=form).status_code == 400
    form["title"] = "Fixed it"
    assert user_client.post("/~alice/bugs/new", data=form).status_code in (302, 303)
    assert make.count(Ticket) == 1


def test_another_sessions_token_is_refused(user_client, bob_client, tracker, make):
    alices = _form(user_client, "/~alice/bugs/new")
    bobs = _form(bob_client, "/~alice/bugs/new")
    # Bob's own CSRF token, Alice's one-time token: refused, nothing made.
    forged = {"csrf_token": bobs["csrf_token"], "form_once": alices["form_once"], "title": "x"}
    response = bob_client.post("/~alice/bugs/new", data=forged)
    assert response.status_code == 400
    garbage = {**bobs, "form_once": "\u00e9" * 500, "title": "x"}
    assert bob_client.post("/~alice/bugs/new", data=garbage).status_code == 400
    assert make.count(Ticket) == 0


def test_a_script_without_the_field_posts_as_before(user_client, tracker, make):
    form = {"csrf_token": _form(user_client, "/~alice/bugs/new")["csrf_token"], "title": "A"}
    assert user_client.post("/~alice/bugs/new", data=form).status_code in (302, 303)
    assert user_client.post("/~alice/bugs/new", data=form).status_code in (302, 303)
    assert make.count(Ticket) == 2

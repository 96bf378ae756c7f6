"""A paste's owner edits and deletes it through its pages; its page offers a copy-link
control. Everyone else may only read it."""

from __future__ import annotations

import json
import re
from typing import Any

from paste import logic
from paste.models import Format, Paste, Visibility
from sqlalchemy import select

from srcore.testing import create_user, log_in_client
from srcore.webhooks.models import OutboxRow


def stored(app: Any) -> list[Paste]:
    with app.extensions["srcore"].db.transaction() as session:
        found = list(session.scalars(select(Paste).order_by(Paste.id)))
        session.expunge_all()
        return found


def add(app: Any, owner: Any, text: str = "hello", **values: Any) -> Paste:
    with app.extensions["srcore"].db.transaction() as session:
        paste = Paste(owner_id=owner.id, short_id=logic.new_short_id(), text=text, **values)
        session.add(paste)
    return paste


def events(app: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.event, r.resource, json.loads(r.payload)) for r in rows]


def page(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return str(response.get_data(as_text=True))


def test_the_owner_edits_a_paste(app, user_client, user, csrf_token):
    paste = add(app, user, "print(1)", title="one.py", language="python")
    shown = page(user_client, f"/p/{paste.short_id}")
    assert f'href="/p/{paste.short_id}/edit"' in shown
    form = page(user_client, f"/p/{paste.short_id}/edit")
    assert 'value="one.py"' in form and "print(1)</textarea>" in form
    assert '<option value="python" selected' in form
    # Delete is not beside Save: it is a link to its own page, in a separate card.
    assert f'href="/p/{paste.short_id}/delete"' in form
    response = user_client.post(
        f"/p/{paste.short_id}/edit",
        data={
            "title": "two.md",
            "text": "# Two",
            "format": "markdown",
            "language": "",
            "visibility": "unlisted",
            "csrf_token": csrf_token(user_client, f"/p/{paste.short_id}/edit"),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/p/{paste.short_id}"
    (edited,) = stored(app)
    assert (edited.title, edited.text, edited.format, edited.language, edited.visibility) == (
        "two.md",
        "# Two",
        Format.markdown,
        None,
        Visibility.unlisted,
    )
    assert edited.short_id == paste.short_id  # the shared link keeps working
    after = page(user_client, f"/p/{paste.short_id}")
    assert "Paste saved." in after and ">Two<" in after  # rendered as markdown now


def test_an_invalid_edit_is_shown_again_with_the_reasons(app, user_client, user, csrf_token):
    paste = add(app, user, "keep me")
    response = user_client.post(
        f"/p/{paste.short_id}/edit",
        data={"text": "  ", "csrf_token": csrf_token(user_client, f"/p/{paste.short_id}/edit")},
    )
    assert response.status_code == 400
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    assert stored(app)[0].text == "keep me"


def test_the_owner_deletes_a_paste_after_confirming(app, user_client, user, csrf_token):
    paste = add(app, user, "gone soon")
    confirm = page(user_client, f"/p/{paste.short_id}/delete")
    assert "cannot be undone" in confirm
    response = user_client.post(
        f"/p/{paste.short_id}/delete",
        data={"csrf_token": csrf_token(user_client, f"/p/{paste.short_id}/delete")},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/mine"
    assert stored(app) == []
    assert "Paste deleted." in page(user_client, "/mine")
    assert user_client.get(f"/p/{paste.short_id}").status_code == 404


def test_nobody_else_may_edit_or_delete(app, user, csrf_token):
    paste = add(app, user, "alice's")
    bob = log_in_client(app.test_client(), create_user(app, "bob"))
    shown = page(bob, f"/p/{paste.short_id}")
    assert "/edit" not in shown and "/delete" not in shown
    token = csrf_token(bob, "/new")
    for path in (f"/p/{paste.short_id}/edit", f"/p/{paste.short_id}/delete"):
        assert bob.get(path).status_code == 403
        assert bob.post(path, data={"text": "bob's", "csrf_token": token}).status_code == 403
    assert [p.text for p in stored(app)] == ["alice's"]


def test_changes_need_the_csrf_token_and_a_login(app, client, user_client, user):
    paste = add(app, user, "safe")
    for path in (f"/p/{paste.short_id}/edit", f"/p/{paste.short_id}/delete"):
        assert user_client.post(path, data={"text": "x"}).status_code == 400
        # No meta in the test network: the login it would send to answers 503.
        assert client.get(path).status_code in (302, 503)
    assert [p.text for p in stored(app)] == ["safe"]


def test_the_paste_page_offers_its_link_to_copy(app, client, user):
    paste = add(app, user, "share me")
    shown = page(client, f"/p/{paste.short_id}")
    assert re.search(rf'<button [^>]*data-copy="https?://[^"/]+/p/{paste.short_id}"', shown)
    assert "copy.js" in shown


def edit(client: Any, paste: Paste, csrf_token: Any, **form: str) -> Any:
    path = f"/p/{paste.short_id}/edit"
    return client.post(path, data={**form, "csrf_token": csrf_token(client, path)})


def test_an_edit_emits_paste_updated_with_the_paste_as_it_is_now(
    app, user_client, user, csrf_token
):
    paste = add(app, user, "v1", visibility=Visibility.public)
    response = edit(user_client, paste, csrf_token, text="v2", visibility="unlisted")
    assert response.status_code == 302
    ((event, resource, payload),) = events(app)
    assert (event, resource) == ("paste:updated", f"paste:{paste.short_id}")
    assert (payload["id"], payload["text"], payload["visibility"]) == (
        paste.short_id,
        "v2",
        "unlisted",
    )
    assert payload["owner"]["id"] == user.id
    with app.extensions["srcore"].db.transaction() as session:
        (row,) = session.scalars(select(OutboxRow)).all()
        # Judged as it is now: an unlisted paste's event reaches its owner only.
        assert (row.owner_id, row.visibility) == (user.id, "unlisted")


def test_an_edit_that_changes_nothing_or_fails_emits_nothing(app, user_client, user, csrf_token):
    paste = add(app, user, "same", visibility=Visibility.public)
    assert edit(user_client, paste, csrf_token, text="same", visibility="public").status_code == 302
    assert edit(user_client, paste, csrf_token, text=" ").status_code == 400
    assert events(app) == []


def test_an_edit_keeps_what_it_leaves_out(app, user_client, user, csrf_token):
    """A form sent without some fields (another client, an old page) changes only the
    ones it has: an unlisted paste does not become public, nor lose its title."""
    paste = add(
        app,
        user,
        "v1",
        title="notes.md",
        format=Format.markdown,
        language="python",
        visibility=Visibility.unlisted,
    )
    assert edit(user_client, paste, csrf_token, text="v2").status_code == 302
    (kept,) = stored(app)
    assert kept.text == "v2"
    assert (kept.title, kept.format, kept.language) == ("notes.md", Format.markdown, "python")
    assert kept.visibility == Visibility.unlisted
    assert paste.short_id not in page(user_client, "/")
    # Sent empty, a title or language is cleared: only what is missing is kept.
    edit(user_client, paste, csrf_token, text="v3", title="", language="")
    (cleared,) = stored(app)
    assert (cleared.title, cleared.language, cleared.visibility) == (
        None,
        None,
        Visibility.unlisted,
    )


def test_a_delete_emits_paste_deleted_with_the_paste_as_it_was(app, user_client, user, csrf_token):
    paste = add(app, user, "last words", title="bye")
    path = f"/p/{paste.short_id}/delete"
    response = user_client.post(path, data={"csrf_token": csrf_token(user_client, path)})
    assert response.status_code == 302
    ((event, resource, payload),) = events(app)
    assert (event, resource) == ("paste:deleted", f"paste:{paste.short_id}")
    assert (payload["id"], payload["title"], payload["text"]) == (
        paste.short_id,
        "bye",
        "last words",
    )
    assert stored(app) == []

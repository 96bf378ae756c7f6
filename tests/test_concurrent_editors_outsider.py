"""Two people (or one in two tabs) editing the same thing at once: a save from a form
opened before someone else's save does not overwrite that save unseen. It comes back with
the person's text and says what happened; sent again, it replaces the other knowingly.
A form sent without its version (a script, an older page) saves as before."""

from __future__ import annotations

import re
from typing import Any

import pytest

from srcore.testing import create_user, log_in_client

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_WAS = re.compile(r'name="was" value="([^"]*)"')


@pytest.fixture(scope="module", params=["todo", "paste", "meta"])
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def _opened(client: Any, page: str) -> dict[str, str]:
    """The hidden fields of the edit form at *page*, as a browser tab keeps them."""
    response = client.get(page)
    assert response.status_code == 200, (page, response.status_code)
    html = _text(response)
    token = _CSRF.search(html)
    was = _WAS.search(html)
    assert token is not None, f"no CSRF token on {page}"
    fields = {"csrf_token": token.group(1)}
    if was is not None:
        fields["was"] = was.group(1)
    return fields


def _was(html: str) -> str:
    found = _WAS.search(html)
    assert found is not None, "the form carries no version"
    return found.group(1)


# -- todo: a tracker's settings ---------------------------------------------------------------


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_tracker_settings_from_an_older_tab_do_not_overwrite_a_later_save(app: Any) -> None:
    from todo.models import Tracker, Visibility

    alice = create_user(app, "alice")
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        made = Tracker(owner_id=alice.id, name="bugs", visibility=Visibility.public)
        made.description = "Old words."
        session.add(made)
    tab1 = log_in_client(app.test_client(), alice)
    tab2 = log_in_client(app.test_client(), alice)
    page = "/~alice/bugs/settings"
    first, second = _opened(tab1, page), _opened(tab2, page)
    saved = tab1.post(
        page,
        data={
            **first,
            "name": "bugs",
            "description": "Tab one's long text.",
            "visibility": "private",
        },
    )
    assert saved.status_code == 302, _text(saved)[:400]
    late = tab2.post(
        page,
        data={**second, "name": "bugs", "description": "Tab two's words.", "visibility": "public"},
    )
    html = _text(late)
    assert late.status_code == 400, html[:400]
    assert "Someone changed this tracker" in html
    assert "Tab two&#39;s words.</textarea>" in html or "Tab two's words.</textarea>" in html
    with db.transaction() as session:
        kept = session.get(Tracker, made.id)
        assert (kept.description, kept.visibility) == ("Tab one's long text.", Visibility.private)
    again = tab2.post(
        page,
        data={
            **second,
            "was": _was(html),
            "name": "bugs",
            "description": "Tab two's words.",
            "visibility": "public",
        },
    )
    assert again.status_code == 302, _text(again)[:400]
    with db.transaction() as session:
        kept = session.get(Tracker, made.id)
        assert (kept.description, kept.visibility) == ("Tab two's words.", Visibility.public)
    # Without a version (a script), the form saves as it did.
    plain = tab2.post(
        page, data={"csrf_token": second["csrf_token"], "name": "bugs", "description": "Plain"}
    )
    assert plain.status_code == 302


# -- paste: a paste's edit form ---------------------------------------------------------------


def _paste_fields(text: str, **more: str) -> dict[str, str]:
    return {"title": "Notes", "text": text, "format": "plain", "language": "", **more}


@pytest.mark.parametrize("srcore_service", ["paste"], indirect=True)
def test_a_paste_saved_from_an_older_tab_does_not_overwrite_a_later_save(app: Any) -> None:
    from paste.models import Paste, Visibility

    alice = create_user(app, "alice")
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        made = Paste(owner_id=alice.id, short_id="abcdefgh23", title="Notes", text="v0")
        made.visibility = Visibility.public
        session.add(made)
    tab1 = log_in_client(app.test_client(), alice)
    tab2 = log_in_client(app.test_client(), alice)
    page = "/p/abcdefgh23/edit"
    first, second = _opened(tab1, page), _opened(tab2, page)
    saved = tab1.post(page, data={**first, **_paste_fields("Tab one: an hour of work")})
    assert saved.status_code == 302, _text(saved)[:400]
    late = tab2.post(page, data={**second, **_paste_fields("Tab two: a typo fixed")})
    html = _text(late)
    assert late.status_code == 400, html[:400]
    assert "This paste was changed" in html
    assert "Tab two: a typo fixed</textarea>" in html
    with db.transaction() as session:
        assert session.get(Paste, made.id).text == "Tab one: an hour of work"
    again = tab2.post(page, data={**second, "was": _was(html), **_paste_fields("Tab two")})
    assert again.status_code == 302, _text(again)[:400]
    with db.transaction() as session:
        assert session.get(Paste, made.id).text == "Tab two"
    plain = {"csrf_token": second["csrf_token"], **_paste_fields("A script's")}
    assert tab2.post(page, data=plain).status_code == 302


# -- meta: the profile ------------------------------------------------------------------------


@pytest.mark.parametrize("srcore_service", ["meta"], indirect=True)
def test_a_profile_saved_from_an_older_tab_does_not_overwrite_a_later_save(app: Any) -> None:
    from meta.models import User

    carol = create_user(app, "carol", password_hash="!")
    db = app.extensions["srcore"].db
    tab1 = log_in_client(app.test_client(), carol)
    tab2 = log_in_client(app.test_client(), carol)
    first, second = _opened(tab1, "/profile"), _opened(tab2, "/profile")
    saved = tab1.post("/profile", data={**first, "location": "", "bio": "A bio written with care."})
    assert saved.status_code == 302, _text(saved)[:400]
    late = tab2.post("/profile", data={**second, "location": "Lisbon", "bio": ""})
    html = _text(late)
    assert late.status_code == 400, html[:400]
    assert "Your profile was changed" in html
    assert 'value="Lisbon"' in html
    with db.transaction() as session:
        kept = session.get(User, carol.id)
        assert (kept.location, kept.bio) == (None, "A bio written with care.")
    again = tab2.post("/profile", data={**second, "was": _was(html), "location": "Lisbon"})
    assert again.status_code == 302, _text(again)[:400]
    with db.transaction() as session:
        assert session.get(User, carol.id).location == "Lisbon"


# -- webhooks: a subscription on its page and through the API ---------------------------------

HOOK = "https://hooks.example.org/todo"


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_a_webhook_edited_on_its_page_and_through_the_api_at_once(
    app: Any, make_token: Any, clean_webhooks: None
) -> None:
    from srcore.webhooks.models import Subscription

    alice = create_user(app, "alice")
    token = make_token("todo/trackers:RW todo/tickets:RW", user=alice)
    api = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    made = api.post(
        "/api/webhooks", json={"url": HOOK, "events": ["ticket:created"]}, headers=bearer
    )
    assert made.status_code == 201, made.get_json()
    sid = made.get_json()["id"]
    where = f"/api/webhooks/{sid}"
    seen = api.get(where, headers=bearer)
    etag = seen.headers.get("ETag")
    assert etag, "the API gives a webhook no ETag"
    # The owner opens the page; meanwhile a script adds an event.
    tab = log_in_client(app.test_client(), alice)
    page = f"/webhooks/{sid}/edit"
    opened = _opened(tab, page)
    script = api.patch(
        where, json={"events": ["ticket:created", "comment:created"]}, headers=bearer
    )
    assert script.status_code == 200, script.get_json()
    # A second script, still holding the first tag, is refused rather than laid over it.
    stale = api.patch(
        where, json={"events": ["ticket:updated"]}, headers={**bearer, "If-Match": etag}
    )
    assert stale.status_code == 412, stale.get_json()
    gone = api.delete(where, headers={**bearer, "If-Match": etag})
    assert gone.status_code == 412, gone.status_code
    # The page's save, from before the script's change, comes back with its text.
    other = "https://hooks.example.org/elsewhere"
    late = tab.post(page, data={**opened, "url": other, "events": ["ticket:created"]})
    html = _text(late)
    assert late.status_code == 400, html[:400]
    assert "This webhook was changed" in html
    assert f'value="{other}"' in html
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, sid)
        assert (sub.url, sub.events) == (HOOK, "comment:created ticket:created")
    again = tab.post(
        page, data={**opened, "was": _was(html), "url": other, "events": ["ticket:created"]}
    )
    assert again.status_code == 302, _text(again)[:400]
    fresh = api.get(where, headers=bearer)
    assert fresh.get_json()["url"] == other
    current = {**bearer, "If-Match": fresh.headers["ETag"]}
    assert api.patch(where, json={"enabled": False}, headers=current).status_code == 200


# -- an edit of something deleted meanwhile -----------------------------------------------------

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_a_comment_on_a_tracker_deleted_in_another_tab_is_given_back(app: Any) -> None:
    from todo import logic
    from todo.models import Tracker, Visibility

    alice = create_user(app, "alice")
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        made = Tracker(owner_id=alice.id, name="bugs", visibility=Visibility.public)
        session.add(made)
        session.flush()
        logic.create_ticket(session, made, session.merge(alice), {"title": "It crashes"})
    tab1 = log_in_client(app.test_client(), alice)
    tab2 = log_in_client(app.test_client(), alice)
    opened = _opened(tab1, "/~alice/bugs/1")
    deleting = _opened(tab2, "/~alice/bugs/delete")
    deleted = tab2.post("/~alice/bugs/delete", data={**deleting, "confirm": "bugs"})
    assert deleted.status_code == 302
    words = "A long comment,\nwritten over an hour, that must not vanish."
    late = tab1.post("/~alice/bugs/1/comment", data={**opened, "text": words}, headers=SAME_ORIGIN)
    html = _text(late)
    assert late.status_code == 404, html[:400]
    assert "was not saved" in html
    assert "written over an hour, that must not vanish.</textarea>" in html
    assert "Send again" not in html  # sent again, it would meet the same 404


@pytest.mark.parametrize("srcore_service", ["paste"], indirect=True)
def test_an_edit_of_a_paste_deleted_in_another_tab_is_given_back(app: Any) -> None:
    from paste.models import Paste

    alice = create_user(app, "alice")
    with app.extensions["srcore"].db.transaction() as session:
        session.add(Paste(owner_id=alice.id, short_id="abcdefgh23", title="Notes", text="v0"))
    tab1 = log_in_client(app.test_client(), alice)
    tab2 = log_in_client(app.test_client(), alice)
    opened = _opened(tab1, "/p/abcdefgh23/edit")
    deleting = _opened(tab2, "/p/abcdefgh23/delete")
    assert tab2.post("/p/abcdefgh23/delete", data=deleting).status_code == 302
    late = tab1.post(
        "/p/abcdefgh23/edit",
        data={**opened, **_paste_fields("An hour of edits\nto keep")},
        headers=SAME_ORIGIN,
    )
    html = _text(late)
    assert late.status_code == 404, html[:400]
    assert "was not saved" in html
    assert "An hour of edits\nto keep</textarea>" in html
    # An API client or another site's form gets the plain error, nothing repeated.
    plain = tab1.post("/p/abcdefgh23/edit", data={**opened, **_paste_fields("Elsewhere")})
    assert plain.status_code == 404
    assert "Elsewhere" not in _text(plain)


@pytest.mark.parametrize("srcore_service", ["paste"], indirect=True)
def test_a_button_for_a_paste_deleted_in_another_tab_offers_nothing_to_copy(app: Any) -> None:
    from paste.models import Paste

    alice = create_user(app, "alice")
    with app.extensions["srcore"].db.transaction() as session:
        session.add(Paste(owner_id=alice.id, short_id="abcdefgh24", title="Notes", text="v0"))
    tab1 = log_in_client(app.test_client(), alice)
    tab2 = log_in_client(app.test_client(), alice)
    first = _opened(tab1, "/p/abcdefgh24/delete")
    assert (
        tab2.post("/p/abcdefgh24/delete", data=_opened(tab2, "/p/abcdefgh24/delete")).status_code
        == 302
    )
    late = tab1.post("/p/abcdefgh24/delete", data=first, headers=SAME_ORIGIN)
    html = _text(late)
    assert late.status_code == 404, html[:400]
    assert "was not saved" in html
    # A button sent nothing of the person's: no promise of something below, no form.
    assert "to copy" not in html and "<textarea" not in html and "Send again" not in html


# -- todo: a ticket's status ------------------------------------------------------------------


@pytest.mark.parametrize("srcore_service", ["todo"], indirect=True)
def test_a_resolve_from_a_stale_page_does_not_replace_a_resolution_given_meanwhile(
    app: Any,
) -> None:
    from todo import logic
    from todo.models import Resolution, Ticket, TicketStatus, Tracker, Visibility

    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        made = Tracker(owner_id=alice.id, name="bugs", visibility=Visibility.public)
        session.add(made)
        session.flush()
        ticket = logic.create_ticket(session, made, session.merge(bob), {"title": "It crashes"})
    owner = log_in_client(app.test_client(), alice)
    submitter = log_in_client(app.test_client(), bob)
    page = "/~alice/bugs/1"
    hers, his = _opened(owner, page), _opened(submitter, page)
    status = "/~alice/bugs/1/status"
    first = owner.post(status, data={**hers, "status": "resolved", "resolution": "duplicate"})
    assert first.status_code == 302, _text(first)[:400]
    late = submitter.post(status, data={**his, "status": "resolved", "resolution": "wont_fix"})
    html = _text(late)
    assert late.status_code == 400, html[:400]
    assert "Someone changed this ticket&#39;s status" in html or "status since you" in html
    assert "resolved (duplicate)" in html
    with db.transaction() as session:
        kept = session.get(Ticket, ticket.id)
        assert (kept.status, kept.resolution) == (TicketStatus.resolved, Resolution.duplicate)
    # From the page as it now is, a Reopen goes through.
    again = submitter.post(status, data={**his, "was": _was(html), "status": "open"})
    assert again.status_code == 302, _text(again)[:400]
    with db.transaction() as session:
        assert session.get(Ticket, ticket.id).status == TicketStatus.open


def test_the_tutorial_names_the_edit_form_helpers_srcore_exports() -> None:
    from pathlib import Path

    import srcore.conditional

    tutorial = (Path(__file__).parents[1] / "docs" / "tutorial.md").read_text(encoding="utf-8")
    for name in ("form_version", "opened_version_holds"):
        assert f"`{name}" in tutorial
        assert name in srcore.conditional.__all__


@pytest.mark.parametrize("srcore_service", ["meta"], indirect=True)
def test_a_profile_save_racing_another_judges_the_row_it_holds(app: Any) -> None:
    """The other save commits after this request read the account and just before it
    writes: the version is checked against the row as held, not as first read."""
    from meta.models import User
    from sqlalchemy import update

    from srcore.testing import races

    dave = create_user(app, "dave", password_hash="!")
    db = app.extensions["srcore"].db
    tab = log_in_client(app.test_client(), dave)
    opened = _opened(tab, "/profile")

    def other_tab() -> None:
        with db.transaction() as session:
            session.execute(update(User).where(User.id == dave.id).values(bio="Theirs."))

    with races.before_first_write(app) as change_meanwhile:
        change_meanwhile(other_tab)
        late = tab.post("/profile", data={**opened, "location": "Porto", "bio": "Mine."})
    assert late.status_code == 400, _text(late)[:400]
    assert "Mine.</textarea>" in _text(late)
    with db.transaction() as session:
        assert session.get(User, dave.id).bio == "Theirs."

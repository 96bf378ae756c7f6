"""The HTML pages: trackers, tickets and comments, through the forms a browser posts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from todo.models import Comment, Resolution, Ticket, TicketStatus, Tracker, Visibility


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def test_anonymous_front_page_lists_public_trackers_and_a_log_in_prompt(client, make, user, bob):
    make.tracker(user, "visible")
    make.tracker(user, "unlisted-one", visibility=Visibility.unlisted)
    make.tracker(bob, "bobsecret", visibility=Visibility.private)
    response = client.get("/")
    assert response.status_code == 200
    page = text(response)
    assert "~alice/visible" in page
    assert "unlisted-one" not in page
    assert "bobsecret" not in page
    assert 'id="log-in-prompt"' in page
    assert "/login?next=" in page


def test_front_page_lists_own_trackers_of_every_visibility(user_client, make, user, bob):
    make.tracker(user, "mine-private", visibility=Visibility.private)
    make.tracker(bob, "bobs-public")
    make.tracker(bob, "bobs-private", visibility=Visibility.private)
    page = text(user_client.get("/"))
    assert "~alice/mine-private" in page
    assert "~bob/bobs-public" in page
    assert "bobs-private" not in page
    assert "log-in-prompt" not in page


def test_front_page_paginates_public_trackers(client, make, bob):
    for i in range(27):
        make.tracker(bob, f"t{i:02d}")
    first = text(client.get("/"))
    assert "~bob/t26" in first and "~bob/t02" in first and "~bob/t01" not in first
    second = text(client.get("/?page=2"))
    assert "~bob/t01" in second and "~bob/t00" in second and "~bob/t26" not in second
    assert client.get("/?page=nope").status_code == 400


def test_create_tracker(user_client, csrf, make):
    assert user_client.get("/create").status_code == 200
    response = csrf.post(
        user_client,
        "/create",
        {"name": "my-project", "description": "About *it*", "visibility": "unlisted"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/~alice/my-project"
    page = text(user_client.get("/~alice/my-project"))
    assert "Tracker my-project created." in page
    assert "<em>it</em>" in page
    assert make.count(Tracker) == 1


def test_create_tracker_requires_login(client, make):
    response = client.get("/create")
    assert response.status_code in (302, 401, 503)
    assert make.count(Tracker) == 0


def test_invalid_tracker_form_is_re_rendered_with_errors(user_client, csrf, make, tracker):
    response = csrf.post(
        user_client, "/create", {"name": "Bad Name!", "description": "kept", "visibility": "x"}
    )
    assert response.status_code == 400
    page = text(response)
    assert 'class="field has-error"' in page
    assert "lower-case letters" in page
    assert "Must be one of: public, unlisted, private." in page
    assert 'value="Bad Name!"' in page
    assert ">kept</textarea>" in page
    response = csrf.post(user_client, "/create", {"name": "bugs"})
    assert response.status_code == 400
    assert "You already have a tracker with this name." in text(response)
    response = csrf.post(user_client, "/create", {"name": ""})
    assert response.status_code == 400
    assert "Name is required." in text(response)
    assert make.count(Tracker) == 1


def test_tracker_page_lists_tickets_by_status(client, make, tracker, user, bob):
    for i in range(3):
        make.ticket(tracker, bob, f"open ticket {i}")
    make.ticket(
        tracker, user, "done ticket", status=TicketStatus.resolved, resolution=Resolution.fixed
    )
    page = text(client.get("/~alice/bugs"))
    assert "open ticket 0" in page and "open ticket 2" in page
    assert "done ticket" not in page
    assert "badge badge-open" in page
    assert "<em>broken</em>" in page
    resolved = text(client.get("/~alice/bugs?status=resolved"))
    assert "done ticket" in resolved and "open ticket" not in resolved
    assert "badge badge-resolved" in resolved
    everything = text(client.get("/~alice/bugs?status=all"))
    assert "done ticket" in everything and "open ticket 1" in everything
    assert client.get("/~alice/bugs?status=closed").status_code == 400
    assert client.get("/~alice/bugs?page=0").status_code == 400


def test_tracker_page_paginates(client, make, tracker, bob):
    for i in range(1, 28):
        make.ticket(tracker, bob, f"ticket number {i:02d}")
    first = text(client.get("/~alice/bugs"))
    assert "ticket number 27" in first and "ticket number 03" in first
    assert "ticket number 02" not in first
    assert 'class="pagination"' in first
    second = text(client.get("/~alice/bugs?page=2"))
    assert "ticket number 02" in second and "ticket number 01" in second
    assert "ticket number 03" not in second
    assert "No open tickets" in text(client.get("/~alice/bugs?page=9"))


def test_submit_ticket_comment_resolve_and_reopen(bob_client, user_client, csrf, tracker, make):
    page = "/~alice/bugs/new"
    response = csrf.post(
        bob_client, page, {"title": "Crash on start", "description": "It **crashes**"}, page=page
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/~alice/bugs/1"
    ticket_page = text(bob_client.get("/~alice/bugs/1"))
    assert "Crash on start" in ticket_page
    assert "<strong>crashes</strong>" in ticket_page
    assert "opened by <strong>bob</strong>" in ticket_page

    response = csrf.post(
        user_client, "/~alice/bugs/1/comment", {"text": "Confirmed, *thanks*."}, page=page
    )
    assert response.status_code == 302
    ticket_page = text(user_client.get("/~alice/bugs/1"))
    assert "<em>thanks</em>" in ticket_page

    response = csrf.post(
        bob_client,
        "/~alice/bugs/1/status",
        {"status": "resolved", "resolution": "duplicate"},
        page=page,
    )
    assert response.status_code == 302
    with make.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == TicketStatus.resolved
        assert ticket.resolution == Resolution.duplicate
        assert session.scalars(select(Comment)).one().text == "Confirmed, *thanks*."
    assert "Duplicate" in text(user_client.get("/~alice/bugs/1"))

    response = csrf.post(user_client, "/~alice/bugs/1/status", {"status": "open"}, page=page)
    assert response.status_code == 302
    with make.db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == TicketStatus.open
        assert ticket.resolution is None


def test_invalid_ticket_and_comment_forms_are_re_rendered(user_client, csrf, tracker, ticket, make):
    page = "/~alice/bugs/new"
    response = csrf.post(user_client, page, {"title": "  ", "description": "keep me"}, page=page)
    assert response.status_code == 400
    assert "Title is required." in text(response)
    assert ">keep me</textarea>" in text(response)
    response = csrf.post(user_client, page, {"title": "x" * 257}, page=page)
    assert response.status_code == 400
    assert "Must be at most 256 characters." in text(response)

    response = csrf.post(user_client, "/~alice/bugs/1/comment", {"text": ""}, page=page)
    assert response.status_code == 400
    assert "Comment is required." in text(response)
    response = csrf.post(
        user_client, "/~alice/bugs/1/status", {"status": "resolved", "resolution": "??"}, page=page
    )
    assert response.status_code == 400
    assert "Must be one of" in text(response)
    assert make.count(Ticket) == 1
    assert make.count(Comment) == 0


def test_only_owner_and_submitter_change_status(bob_client, csrf, tracker, ticket, make, app):
    page = "/~alice/bugs/new"
    assert 'id="resolve-form"' not in text(bob_client.get("/~alice/bugs/1"))
    response = csrf.post(bob_client, "/~alice/bugs/1/status", {"status": "resolved"}, page=page)
    assert response.status_code == 403
    assert make.get(Ticket, ticket.id).status == TicketStatus.open


def test_settings_rename_and_visibility(user_client, csrf, tracker, make):
    page = "/~alice/bugs/settings"
    form = text(user_client.get(page))
    assert 'value="bugs"' in form
    response = csrf.post(
        user_client,
        page,
        {"name": "issues", "description": "", "visibility": "private"},
        page=page,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/~alice/issues"
    renamed = make.get(Tracker, tracker.id)
    assert renamed.name == "issues"
    assert renamed.visibility == Visibility.private
    assert renamed.description is None
    response = csrf.post(user_client, page, {"name": "-no", "visibility": "public"})
    assert response.status_code == 404  # the old address is gone
    page = "/~alice/issues/settings"
    response = csrf.post(user_client, page, {"name": "-no", "visibility": "public"}, page=page)
    assert response.status_code == 400
    assert make.get(Tracker, tracker.id).name == "issues"


def test_settings_rename_onto_another_tracker_is_refused(user_client, csrf, tracker, make, user):
    make.tracker(user, "other")
    page = "/~alice/bugs/settings"
    response = csrf.post(user_client, page, {"name": "other"}, page=page)
    assert response.status_code == 400
    assert "You already have a tracker with this name." in text(response)
    assert make.get(Tracker, tracker.id).name == "bugs"


def test_only_the_owner_reaches_settings_and_delete(bob_client, csrf, tracker, make, bob):
    assert bob_client.get("/~alice/bugs/settings").status_code == 403
    assert bob_client.get("/~alice/bugs/delete").status_code == 403
    response = csrf.post(bob_client, "/~alice/bugs/delete", {"confirm": "bugs"})
    assert response.status_code == 403
    assert make.count(Tracker) == 1


def test_delete_tracker_needs_confirmation(user_client, csrf, tracker, ticket, make, user):
    make.comment(ticket, user)
    page = "/~alice/bugs/delete"
    assert "cannot be undone" in text(user_client.get(page))
    response = csrf.post(user_client, page, {"confirm": "bug"}, page=page)
    assert response.status_code == 400
    assert "Type the tracker&#39;s name exactly" in text(response)
    assert make.count(Tracker) == 1
    response = csrf.post(user_client, page, {"confirm": "bugs"}, page=page)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert (make.count(Tracker), make.count(Ticket), make.count(Comment)) == (0, 0, 0)
    assert user_client.get("/~alice/bugs").status_code == 404


def test_unknown_and_malformed_addresses_are_404(client, tracker, ticket):
    assert client.get("/~alice/nope").status_code == 404
    assert client.get("/~nobody/bugs").status_code == 404
    assert client.get("/~alice/bugs/2").status_code == 404
    assert client.get("/~alice/bugs/0").status_code == 404
    assert client.get("/~alice/bugs/99999999999999999999").status_code == 404
    assert client.get("/~alice/b%00gs").status_code == 400  # NUL: refused before routing
    assert client.get("/~al%00ice/bugs").status_code == 400
    assert client.get("/~alice/" + "b" * 300).status_code == 404


def test_tracker_lists_show_a_plain_text_summary_of_the_description(
    user_client, client, make, user
):
    make.tracker(
        user,
        "md",
        description="It **crashes** on `start`, see [the log](https://x.invalid/)\n\n# More",
    )
    for page in (text(client.get("/")), text(user_client.get("/"))):
        assert "It crashes on start, see the log More" in page
        assert "**crashes**" not in page and "[the log]" not in page and "# More" not in page


def test_front_page_public_list_includes_the_viewers_own_public_trackers(user_client, make, user):
    make.tracker(user, "mine-public")
    page = text(user_client.get("/"))
    public = page[page.index('id="public-trackers"') :]
    assert "~alice/mine-public" in public
    assert "No public trackers yet" not in page


def test_last_breadcrumb_is_the_current_page_not_a_link(client, tracker, ticket):
    page = text(client.get("/~alice/bugs"))
    crumbs = page[
        page.index('class="breadcrumbs"') : page.index("</nav>", page.index('class="breadcrumbs"'))
    ]
    assert 'href="/~alice/bugs"' not in crumbs
    assert '<span aria-current="page">~alice/bugs</span>' in crumbs
    page = text(client.get("/~alice/bugs/1"))
    assert '<span aria-current="page">#1</span>' in page


def test_resolve_control_has_a_visible_label_and_no_preset_resolution(user_client, tracker, ticket):
    page = text(user_client.get("/~alice/bugs/1"))
    form = page[
        page.index('id="resolve-form"') : page.index("</form>", page.index('id="resolve-form"'))
    ]
    assert '<label for="resolution">Resolution</label>' in form
    assert "visually-hidden" not in form
    assert '<option value="" selected disabled>Choose…</option>' in form
    assert "required" in form


def test_settings_keep_delete_in_a_separate_danger_zone(user_client, tracker):
    page = text(user_client.get("/~alice/bugs/settings"))
    form = page[page.index("<form") : page.index("</form>")]
    assert "Delete tracker" not in form
    zone = page[page.index('id="danger-zone"') :]
    assert "Danger zone" in zone and 'href="/~alice/bugs/delete"' in zone

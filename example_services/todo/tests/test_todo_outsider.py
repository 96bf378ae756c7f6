"""An outsider against todo's trackers, tickets and comments: writes that race a change
of the tracker, requests in methods no route takes, hostile bytes at the columns' limits.

The races are made deterministic: a listener on the app's sessions runs the other
request's change (deleting the tracker, making it private) in its own committed
transaction just before the request under test writes anything, which is the widest
window a real concurrent request could hit. Threaded runs of the same races follow.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from todo.models import Base, Comment, Ticket, Tracker, Visibility

from srcore.testing import log_in_client, races
from srcore.webhooks.models import OutboxRow, WebhookBase


def outbox(app: Any) -> list[tuple[str, str | None, str | None]]:
    """The events written so far: (event, resource, recorded visibility)."""
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(row.event, row.resource, row.visibility) for row in rows]


def snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    with app.extensions["srcore"].db.transaction() as session:
        return {
            table.name: [
                tuple(row) for row in session.execute(select(table).order_by(*table.primary_key))
            ]
            for table in [*Base.metadata.sorted_tables, *WebhookBase.metadata.sorted_tables]
        }


@pytest.fixture
def before_first_write(app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    """``before_first_write(change)``: run *change* once, in a transaction of its own,
    just before the next request's first INSERT, UPDATE, DELETE or flush."""
    with races.before_first_write(app) as change_meanwhile:
        yield change_meanwhile


def change_tracker(app: Any, tracker: Tracker, what: str) -> Callable[[], None]:
    def change() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            if what == "deleted":
                session.execute(delete(Tracker).where(Tracker.id == tracker.id))
            else:
                session.execute(
                    update(Tracker)
                    .where(Tracker.id == tracker.id)
                    .values(visibility=Visibility.private)
                )

    return change


#: (name, who sends it, method, path, body): every write to an existing tracker. The
#: pages are bob's where bob may write (alice's public tracker, his own ticket #1), the
#: owner's where only the owner may; the API is always the owner's.
WRITES = [
    ("comment", "bob", "POST", "/~alice/bugs/1/comment", {"text": "Me too."}),
    ("status", "bob", "POST", "/~alice/bugs/1/status", {"status": "resolved"}),
    ("edit", "bob", "POST", "/~alice/bugs/1/edit", {"title": "It still crashes"}),
    ("new", "bob", "POST", "/~alice/bugs/new", {"title": "Another crash"}),
    ("settings", "alice", "POST", "/~alice/bugs/settings", {"description": "changed"}),
    ("delete", "alice", "POST", "/~alice/bugs/delete", {"confirm": "bugs"}),
    ("api-comment", "token", "POST", "/api/trackers/bugs/tickets/1/comments", {"text": "x"}),
    ("api-ticket", "token", "PATCH", "/api/trackers/bugs/tickets/1", {"status": "resolved"}),
    ("api-new", "token", "POST", "/api/trackers/bugs/tickets", {"title": "Another"}),
    ("api-tracker", "token", "PATCH", "/api/trackers/bugs", {"description": "changed"}),
    ("api-delete", "token", "DELETE", "/api/trackers/bugs", None),
]
BOBS_PAGES = [write for write in WRITES if write[1] == "bob"]
OWNERS = [write for write in WRITES if write[1] != "bob"]


@pytest.fixture
def send(app: Any, user: Any, bob: Any, tracker: Tracker, make: Any, csrf: Any, auth: Any) -> Any:
    """``send(write)``: a write of :data:`WRITES` as its sender would send it (a page's
    CSRF token read beforehand); bob submitted ticket #1 of alice's public ``bugs``."""
    make.ticket(tracker, bob, "bob's crash")
    clients = {
        "alice": log_in_client(app.test_client(), user),
        "bob": log_in_client(app.test_client(), bob),
    }
    tokens = {who: csrf.token(client, "/~alice/bugs/1") for who, client in clients.items()}

    def send_write(write: tuple[str, str, str, str, dict[str, str] | None]) -> Any:
        _name, who, method, path, body = write
        if who == "token":
            return app.test_client().open(path, method=method, json=body, headers=auth())
        data = {**(body or {}), "csrf_token": tokens[who]}
        return clients[who].open(path, method=method, data=data)

    return send_write


@pytest.mark.parametrize("write", WRITES, ids=[write[0] for write in WRITES])
def test_a_write_to_a_tracker_deleted_meanwhile_is_a_404(
    app: Any, send: Any, tracker: Tracker, before_first_write: Any, write: Any
) -> None:
    before_first_write(change_tracker(app, tracker, "deleted"))
    response = send(write)
    assert response.status_code == 404, response.get_data(as_text=True)[:300]
    with app.extensions["srcore"].db.transaction() as session:
        for model in (Tracker, Ticket, Comment):
            assert session.scalar(select(func.count()).select_from(model)) == 0
    # The deletion's own event is the other request's to emit: this one emitted nothing
    # (before, a second deletion emitted tracker:deleted again).
    assert outbox(app) == []


@pytest.mark.parametrize("write", BOBS_PAGES, ids=[write[0] for write in BOBS_PAGES])
def test_a_write_to_a_tracker_made_private_meanwhile_is_a_404(
    app: Any, send: Any, tracker: Tracker, before_first_write: Any, write: Any
) -> None:
    """Bob read the tracker public; it turned private before he wrote: his comment, status,
    edit or ticket does not land in it, nor reach every subscriber as a public event."""
    before = snapshot(app)
    before_first_write(change_tracker(app, tracker, "private"))
    response = send(write)
    assert response.status_code == 404
    after = snapshot(app)
    assert after["tracker"][0] != before["tracker"][0]  # the other request's change
    assert {k: v for k, v in after.items() if k != "tracker"} == {
        k: v for k, v in before.items() if k != "tracker"
    }


@pytest.mark.parametrize("write", OWNERS, ids=[write[0] for write in OWNERS])
def test_the_owners_events_record_the_visibility_made_meanwhile(
    app: Any, send: Any, tracker: Tracker, before_first_write: Any, write: Any
) -> None:
    """The owner still writes; the event records the tracker as private, as it is when the
    write commits, so it reaches the owner only (it was recorded public and reached all)."""
    before_first_write(change_tracker(app, tracker, "private"))
    response = send(write)
    assert response.status_code in (200, 201, 204, 302)
    events = outbox(app)
    assert len(events) == 1
    assert events[0][1:] == (f"tracker:{tracker.id}", "private")


def _at_once(count: int, request: Callable[[int], Any]) -> list[Any]:
    """Send *count* requests from as many threads released together; bounded in time."""
    barrier = threading.Barrier(count, timeout=30)
    answers: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            answers[i] = request(i)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    return answers


@pytest.mark.parametrize("via", ["page", "api"])
def test_a_tracker_deleted_twice_at_once_is_deleted_once(
    app: Any, user: Any, make: Any, csrf: Any, auth: Any, via: str
) -> None:
    for round_ in range(3):
        tracker = make.tracker(user, f"gone{round_}")
        make.ticket(tracker, user)
        clients = [log_in_client(app.test_client(), user) for _ in range(2)]
        tokens = [csrf.token(client) for client in clients]
        path = f"/~alice/gone{round_}/delete"

        def request(i: int, path: str = path, name: str = tracker.name) -> int:
            if via == "api":
                return int(
                    app.test_client().delete(f"/api/trackers/{name}", headers=auth()).status_code
                )
            data = {"confirm": name, "csrf_token": tokens[i]}
            return int(clients[i].post(path, data=data).status_code)

        answers = _at_once(2, request)
        done = 204 if via == "api" else 302
        # A 503 is SQLite's busy timeout on a loaded machine: refused, nothing half-done.
        assert sorted(answers) in ([done, 404], [done, 503]), answers
        deleted = [e for e in outbox(app) if e[1] == f"tracker:{tracker.id}"]
        assert [e[0] for e in deleted] == ["tracker:deleted"]


def test_comments_racing_a_deletion_are_a_404_or_deleted_with_it(
    app: Any, user: Any, bob: Any, make: Any, csrf: Any
) -> None:
    for round_ in range(3):
        tracker = make.tracker(user, f"race{round_}")
        make.ticket(tracker, user)
        owner = log_in_client(app.test_client(), user)
        commenter = log_in_client(app.test_client(), bob)
        owner_token = csrf.token(owner)
        bob_token = csrf.token(commenter)
        base = f"/~alice/race{round_}"

        def request(i: int, base: str = base, name: str = tracker.name) -> int:
            if i == 0:
                data = {"confirm": name, "csrf_token": owner_token}
                return int(owner.post(f"{base}/delete", data=data).status_code)
            data = {"text": "Me too.", "csrf_token": bob_token}
            return int(commenter.post(f"{base}/1/comment", data=data).status_code)

        deleted, commented = _at_once(2, request)
        assert deleted in (302, 503)
        assert commented in (302, 404, 503)
        with app.extensions["srcore"].db.transaction() as session:
            orphans = session.scalar(
                select(func.count())
                .select_from(Comment)
                .join(Ticket)
                .where(Ticket.tracker_id == tracker.id)
            )
        assert orphans == (0 if deleted == 302 else int(commented == 302))


@pytest.mark.parametrize("state", ["unconfirmed", "suspended"])
def test_every_api_call_refuses_an_inactive_accounts_token_alike(
    app: Any, user: Any, tracker: Tracker, make: Any, make_token: Any, routes: Any, state: str
) -> None:
    """A token minted while the account was active, used after it was suspended or went
    back to unconfirmed: every call that needs a user answers the same 403, the one
    query of ``GET .../tickets/N`` too (it answered an unconfirmed account's ticket)."""
    from todo.models import User

    from srcore.db import UserType

    make.comment(make.ticket(tracker, user), user)
    with app.extensions["srcore"].db.transaction() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.user_type = UserType(state)
    token = make_token("todo/trackers:RW todo/tickets:RW", user=user)
    client = app.test_client()
    before = snapshot(app)
    checked = set()
    for endpoint, method, path in routes:
        if not endpoint.startswith("api."):
            continue
        body = {"title": "x", "text": "x", "description": "x"}
        response = client.open(
            path, method=method, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403, (method, path, response.status_code)
        reason = response.get_json()["errors"][0]["reason"]
        assert ("suspended" if state == "suspended" else "not confirmed") in reason
        checked.add(endpoint)
    assert {"api.get_ticket", "api.list_tickets", "api.update_ticket"} <= checked
    assert snapshot(app) == before


def test_an_event_carries_the_ticket_as_committed_after_a_change_made_meanwhile(
    app: Any, send: Any, before_first_write: Any
) -> None:
    """Bob resolves his ticket while alice retitles it: both changes stand, and bob's
    ticket:updated carries the ticket as it is, not the title he read before hers."""

    def retitle() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            session.execute(update(Ticket).values(title="Retitled by alice"))

    before_first_write(retitle)
    assert send(WRITES[1]).status_code == 302  # bob's status change
    with app.extensions["srcore"].db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.title, ticket.status.value) == ("Retitled by alice", "resolved")
        payload = session.scalars(select(OutboxRow.payload)).one()
    data = json.loads(payload)
    assert (data["title"], data["status"]) == ("Retitled by alice", "resolved")


#: Headers some frameworks read as the method to run instead of the one sent.
OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def test_no_other_method_nor_an_override_runs_a_write(
    app: Any, user: Any, tracker: Tracker, make: Any, csrf: Any, auth: Any, routes: Any
) -> None:
    """HEAD, OPTIONS, PUT, TRACE and an unknown method on every route of todo's, with a
    body every form and API call would accept, a valid CSRF token and a full token, and
    GETs and POSTs naming another method in a header or ``?_method=``: nothing changes."""
    make.comment(make.ticket(tracker, user), user)
    client = log_in_client(app.test_client(), user)
    token = csrf.token(client)
    body = {
        "name": "bugs",
        "description": "changed",
        "visibility": "private",
        "title": "changed",
        "text": "added",
        "status": "resolved",
        "confirm": "bugs",
        "csrf_token": token,
    }
    headers = {**auth(), "X-CSRFToken": token}
    before = snapshot(app)
    paths = sorted({path for endpoint, _, path in routes if endpoint.startswith(("todo.", "api."))})
    for path in paths:
        for method in ("HEAD", "OPTIONS", "PUT", "TRACE", "PROPFIND"):
            for sent in ({"data": body}, {"json": body}):
                response = client.open(path, method=method, headers=headers, **sent)
                assert response.status_code in (200, 204, 302, 400, 404, 405), (method, path)
        for name in OVERRIDES:
            for method in ("DELETE", "PATCH", "PUT"):
                overridden = {**headers, name: method}
                client.get(f"{path}?_method={method}", headers=overridden)
                # A POST without its form's fields: what it would do is refused as input.
                client.post(
                    f"{path}?_method={method}", headers=overridden, data={"csrf_token": token}
                )
        assert snapshot(app) == before, path


def test_tickets_submitted_at_once_get_distinct_numbers_and_one_event_each(
    app: Any, tracker: Tracker, auth: Any
) -> None:
    headers = auth()

    def submit(i: int) -> Any:
        client = app.test_client()
        return client.post("/api/trackers/bugs/tickets", json={"title": f"t{i}"}, headers=headers)

    answers = _at_once(6, submit)
    created = [a.get_json()["number"] for a in answers if a.status_code == 201]
    # A 503 is SQLite's busy timeout on a loaded machine: refused, nothing half-done.
    assert all(a.status_code in (201, 503) for a in answers)
    assert sorted(created) == list(range(1, len(created) + 1))
    with app.extensions["srcore"].db.transaction() as session:
        numbers = sorted(session.scalars(select(Ticket.number)))
        payloads = session.scalars(
            select(OutboxRow.payload).where(OutboxRow.event == "ticket:created")
        )
        announced = sorted(json.loads(payload)["number"] for payload in payloads)
    assert numbers == announced == sorted(created)


def test_ids_of_a_deleted_trackers_tickets_and_comments_are_never_given_again(
    app: Any, user: Any, bob: Any, make: Any, auth: Any
) -> None:
    """Events and the API name tickets and comments by id: on SQLite too, a ticket or
    comment deleted with its tracker never lends its id to a new one (bob's, here)."""
    gone = make.tracker(user, "gone")
    old_ticket = make.ticket(gone, user)
    old_comment = make.comment(old_ticket, user)
    assert app.test_client().delete("/api/trackers/gone", headers=auth()).status_code == 204
    kept = make.tracker(bob, "kept")
    new_ticket = make.ticket(kept, bob)
    new_comment = make.comment(new_ticket, bob)
    assert new_ticket.id > old_ticket.id
    assert new_comment.id > old_comment.id


def test_one_name_claimed_at_once_goes_to_one_tracker(
    app: Any, user: Any, make: Any, auth: Any
) -> None:
    """Creations and renames racing for one name: one wins, the others get the 409 that
    says so, and only the winner's event is written."""
    make.tracker(user, "a")
    make.tracker(user, "b")
    headers = auth()

    def claim(i: int) -> Any:
        client = app.test_client()
        if i < 2:
            return client.post("/api/trackers", json={"name": "wanted"}, headers=headers)
        return client.patch(
            f"/api/trackers/{'ab'[i - 2]}", json={"name": "wanted"}, headers=headers
        )

    answers = _at_once(4, claim)
    codes = sorted(a.status_code for a in answers)
    won = [c for c in codes if c in (200, 201)]
    assert len(won) == 1 and all(c in (409, 503) for c in codes if c not in (200, 201)), codes
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).where(Tracker.name == "wanted")) == 1
    assert len(outbox(app)) == 1


def test_a_status_change_is_judged_against_the_ticket_as_it_now_is(
    app: Any, user: Any, tracker: Tracker, make: Any, auth: Any, before_first_write: Any
) -> None:
    """The ticket was resolved when the call read it and reopened before it wrote: a new
    resolution for it is refused, not stored on an open ticket."""
    make.ticket(tracker, user, status="resolved", resolution="fixed")

    def reopen() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            session.execute(update(Ticket).values(status="open", resolution=None))

    before_first_write(reopen)
    answer = app.test_client().patch(
        "/api/trackers/bugs/tickets/1", json={"resolution": "duplicate"}, headers=auth()
    )
    assert answer.status_code == 400
    assert answer.get_json()["errors"][0]["field"] == "resolution"
    with app.extensions["srcore"].db.transaction() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status.value, ticket.resolution) == ("open", None)
    assert outbox(app) == []


def test_a_ticket_submitted_to_a_tracker_renamed_meanwhile_names_it_as_it_now_is(
    app: Any, send: Any, tracker: Tracker, before_first_write: Any
) -> None:
    def rename() -> None:
        with app.extensions["srcore"].db.transaction() as session:
            session.execute(update(Tracker).values(name="renamed"))

    before_first_write(rename)
    answer = send(WRITES[3])  # bob submits a ticket on /~alice/bugs/new
    assert answer.status_code == 302
    assert answer.headers["Location"].endswith("/~alice/renamed/2")
    with app.extensions["srcore"].db.transaction() as session:
        payload = session.scalars(select(OutboxRow.payload)).one()
    assert json.loads(payload)["tracker"]["name"] == "renamed"


def test_the_lock_a_comment_takes_leaves_the_trackers_time_alone(
    app: Any, send: Any, tracker: Tracker, make: Any
) -> None:
    before = make.get(Tracker, tracker.id).updated
    assert send(WRITES[0]).status_code == 302  # bob's comment
    assert make.get(Tracker, tracker.id).updated == before

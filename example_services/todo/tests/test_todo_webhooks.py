"""Todo's webhook events: one outbox row per change, in the change's transaction, with the
API's JSON shape; who receives them (scopes, visibility); and one delivery end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from todo.models import Tracker, Visibility

from srcore.testing import log_in_client, serving
from srcore.webhooks import verify
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Delivery, OutboxRow, Subscription

HOOK = "https://hooks.example.org/todo"
TICKET_EVENTS = ["ticket:created", "ticket:updated", "comment:created"]


def outbox(app: Any) -> list[tuple[str, str | None, Any]]:
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
        return [(r.event, r.resource, json.loads(r.payload)) for r in rows]


def take(app: Any) -> list[tuple[str, str | None, Any]]:
    """The outbox rows written so far, then an empty outbox."""
    rows = outbox(app)
    with app.extensions["srcore"].db.transaction() as session:
        session.execute(OutboxRow.__table__.delete())
    return rows


# -- each change emits exactly one event -----------------------------------------------------


def test_api_changes_emit_one_event_each_with_the_api_shape(app, client, auth, user):
    headers = auth()
    created = client.post("/api/trackers", json={"name": "bugs"}, headers=headers)
    assert created.status_code == 201
    tracker = created.get_json()
    assert take(app) == [("tracker:created", f"tracker:{tracker['id']}", tracker)]
    resource = f"tracker:{tracker['id']}"

    updated = client.patch("/api/trackers/bugs", json={"description": "new"}, headers=headers)
    assert take(app) == [("tracker:updated", resource, updated.get_json())]
    # the same values again are no change: no event
    client.patch("/api/trackers/bugs", json={"description": "new"}, headers=headers)
    assert take(app) == []

    ticket = client.post("/api/trackers/bugs/tickets", json={"title": "Hi"}, headers=headers)
    assert ticket.status_code == 201
    assert take(app) == [("ticket:created", resource, ticket.get_json())]

    changed = client.patch(
        "/api/trackers/bugs/tickets/1", json={"status": "resolved"}, headers=headers
    )
    assert take(app) == [("ticket:updated", resource, changed.get_json())]

    comment = client.post(
        "/api/trackers/bugs/tickets/1/comments", json={"text": "Done."}, headers=headers
    )
    assert comment.status_code == 201
    assert take(app) == [("comment:created", resource, comment.get_json())]

    last = client.get("/api/trackers/bugs", headers=headers).get_json()
    assert client.delete("/api/trackers/bugs", headers=headers).status_code == 204
    assert take(app) == [("tracker:deleted", resource, last)]


def test_form_changes_emit_one_event_each(app, user_client, csrf, user):
    response = csrf.post(user_client, "/create", {"name": "bugs", "visibility": "public"})
    assert response.status_code == 302
    [(event, resource, data)] = take(app)
    assert (event, data["name"], data["owner"]["username"]) == ("tracker:created", "bugs", "alice")
    assert resource == f"tracker:{data['id']}"

    csrf.post(user_client, "/~alice/bugs/settings", {"name": "bugs", "description": "x"})
    assert [e for e, _, _ in take(app)] == ["tracker:updated"]
    csrf.post(user_client, "/~alice/bugs/new", {"title": "Broken"})
    [(event, _, data)] = take(app)
    assert (event, data["number"], data["title"]) == ("ticket:created", 1, "Broken")
    csrf.post(user_client, "/~alice/bugs/1/comment", {"text": "More"})
    [(event, _, data)] = take(app)
    assert (event, data["text"], data["ticket"]) == ("comment:created", "More", 1)
    csrf.post(user_client, "/~alice/bugs/1/status", {"status": "resolved"})
    [(event, _, data)] = take(app)
    assert (event, data["status"], data["resolution"]) == ("ticket:updated", "resolved", "fixed")
    csrf.post(user_client, "/~alice/bugs/delete", {"confirm": "bugs"})
    assert [e for e, _, _ in take(app)] == ["tracker:deleted"]


def test_refused_changes_emit_nothing(app, client, auth, tracker):
    headers = auth()
    assert client.post("/api/trackers", json={"name": "bugs"}, headers=headers).status_code == 409
    assert client.post("/api/trackers", json={"name": "Bad!"}, headers=headers).status_code == 400
    assert client.post("/api/trackers/bugs/tickets", json={}, headers=headers).status_code == 400
    assert outbox(app) == []


def test_a_rolled_back_change_emits_nothing(app, client, auth, tracker, monkeypatch):
    """The name check is skipped, so the unique constraint fails at flush, after the event
    was written in the same transaction: the rollback takes the event with it."""
    from todo import logic

    monkeypatch.setattr(logic, "name_taken", lambda *args, **kwargs: False)
    response = client.post("/api/trackers", json={"name": "bugs"}, headers=auth())
    assert response.status_code == 409
    assert outbox(app) == []
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(Tracker.id).where(Tracker.name == "bugs")) == tracker.id


# -- who receives what -----------------------------------------------------------------------


def subscribe(client, headers, **body) -> Any:
    payload = {"url": HOOK, "events": TICKET_EVENTS, **body}
    return client.post("/api/webhooks", json=payload, headers=headers)


def fan_out_all(app: Any) -> dict[int, list[str]]:
    """Fan out every outbox row; returns the events each subscription got."""
    got: dict[int, list[str]] = {}
    st = app.extensions["srcore"]
    with st.db.session() as session:
        for outbox_id in session.scalars(select(OutboxRow.id).order_by(OutboxRow.id)).all():
            fan_out(session, [outbox_id], manifest=st.manifest)  # as the worker does
        for sub_id, event in session.execute(
            select(Delivery.subscription_id, OutboxRow.event)
            .join(OutboxRow, Delivery.outbox_id == OutboxRow.id)
            .order_by(Delivery.id)
        ):
            got.setdefault(sub_id, []).append(event)
    return got


def test_ticket_events_need_the_tickets_scope(app, client, auth):
    response = subscribe(client, auth("todo/trackers:RW"))
    assert response.status_code == 403
    assert "todo/tickets:RW" in response.get_json()["errors"][0]["reason"]
    ok = subscribe(client, auth("todo/trackers:RW"), events=["tracker:created"])
    assert ok.status_code == 201


def test_a_subscription_without_the_scope_never_receives_the_event(app, client, auth, user):
    """Even a row that lists ticket events (say, written before a scope was narrowed) gets
    none of them unless its stored scopes cover them."""
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Subscription(
                owner_id=user.id,
                url=HOOK,
                events="ticket:created tracker:created",
                scopes="todo/trackers:RO",
                secret="whsec_MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz",
            )
        )
    headers = auth()
    client.post("/api/trackers", json={"name": "bugs"}, headers=headers)
    client.post("/api/trackers/bugs/tickets", json={"title": "Hi"}, headers=headers)
    assert list(fan_out_all(app).values()) == [["tracker:created"]]


def test_only_those_who_can_see_the_tracker_receive_its_events(app, client, auth, user, bob, make):
    mine = subscribe(client, auth()).get_json()["id"]
    theirs = subscribe(client, auth(who=bob)).get_json()["id"]
    public = make.tracker(user, "public")
    private = make.tracker(user, "secret", visibility=Visibility.private)
    headers = auth()
    for name in (public.name, private.name):
        response = client.post(
            f"/api/trackers/{name}/tickets", json={"title": "x"}, headers=headers
        )
        assert response.status_code == 201
    got = fan_out_all(app)
    assert got[mine] == ["ticket:created", "ticket:created"]
    assert got[theirs] == ["ticket:created"]  # the public tracker's only


def test_a_tracker_made_private_stops_reaching_others(app, client, auth, user, bob, tracker):
    theirs = subscribe(client, auth(who=bob), resource=f"tracker:{tracker.id}").get_json()["id"]
    headers = auth()
    client.patch("/api/trackers/bugs", json={"visibility": "private"}, headers=headers)
    client.post("/api/trackers/bugs/tickets", json={"title": "x"}, headers=headers)
    assert theirs not in fan_out_all(app)


def test_subscribing_to_a_tracker_one_cannot_see_is_refused(client, auth, bob, make, user):
    private = make.tracker(user, "secret", visibility=Visibility.private)
    response = subscribe(client, auth(who=bob), resource=f"tracker:{private.id}")
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "resource"
    assert subscribe(client, auth(), resource=f"tracker:{private.id}").status_code == 201


@pytest.mark.parametrize("visibility", [Visibility.unlisted, Visibility.private])
def test_another_users_hidden_tracker_is_refused_as_one_that_does_not_exist(
    client, auth, bob, make, user, visibility
):
    """Bob cannot tell which tracker ids are alice's unlisted (or private) trackers: a
    tracker's id is no link to it, and their events would reach alice only anyway."""
    hidden = make.tracker(user, "hidden", visibility=visibility)
    refused = subscribe(client, auth(who=bob), resource=f"tracker:{hidden.id}")
    missing = subscribe(client, auth(who=bob), resource=f"tracker:{hidden.id + 100}")
    named = refused.get_data(as_text=True).replace(f"tracker:{hidden.id} ", "tracker:N ")
    unnamed = missing.get_data(as_text=True).replace(f"tracker:{hidden.id + 100} ", "tracker:N ")
    assert (refused.status_code, named) == (missing.status_code, unnamed) == (400, unnamed)
    assert "tracker:N that you can see" in named
    assert subscribe(client, auth(), resource=f"tracker:{hidden.id}").status_code == 201


def test_tracker_deleted_reaches_those_who_could_see_it(app, client, auth, user, bob, tracker):
    events = ["tracker:deleted"]
    theirs = subscribe(client, auth(who=bob), events=events).get_json()["id"]
    client.delete("/api/trackers/bugs", headers=auth())
    assert fan_out_all(app) == {theirs: ["tracker:deleted"]}


# -- the pages -------------------------------------------------------------------------------


def test_tracker_settings_link_to_webhooks_for_the_tracker(user_client, tracker):
    page = user_client.get("/~alice/bugs/settings").get_data(as_text=True)
    target = f"/webhooks/new?resource=tracker:{tracker.id}"
    assert target in page
    form = user_client.get(target).get_data(as_text=True)
    assert f'value="tracker:{tracker.id}"' in form
    assert "A ticket was submitted." in form


def test_subscribing_through_the_page(app, user_client, csrf, tracker):
    token = csrf.token(user_client, "/webhooks/new")
    response = user_client.post(
        "/webhooks/new",
        data={
            "csrf_token": token,
            "url": HOOK,
            "events": ["ticket:created", "comment:created"],
            "resource": f"tracker:{tracker.id}",
        },
    )
    assert response.status_code == 201
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.scalars(select(Subscription)).one()
        assert sub.events == "comment:created ticket:created"
        assert sub.scopes == "todo/tickets:RO todo/trackers:RO"
        assert sub.secret in response.get_data(as_text=True)


def test_bob_cannot_subscribe_to_alices_private_tracker_through_the_page(
    app, bob_client, csrf, make, user
):
    private = make.tracker(user, "secret", visibility=Visibility.private)
    token = csrf.token(bob_client, "/webhooks/new")
    response = bob_client.post(
        "/webhooks/new",
        data={
            "csrf_token": token,
            "url": HOOK,
            "events": "ticket:created",
            "resource": f"tracker:{private.id}",
        },
    )
    assert response.status_code == 400
    assert "that you can see" in response.get_data(as_text=True)


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Any]:
    """An HTTP server on 127.0.0.1 that records what it receives."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            self.server.received.append((dict(self.headers), body))  # type: ignore[attr-defined]
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.received = []  # type: ignore[attr-defined]
    with serving(server):
        yield server


@pytest.fixture
def loopback_app(app, srcore_database, tmp_path) -> Iterator[Any]:
    """todo on the same database, with ``allow-private-webhook-targets = 127.0.0.0/8``."""
    import todo

    text = srcore_database.config_path.read_text(encoding="utf-8")
    config = tmp_path / "loopback.ini"
    config.write_text(
        text.replace("[global]\n", "[global]\nallow-private-webhook-targets = 127.0.0.0/8\n", 1),
        encoding="utf-8",
    )
    built = todo.create_app(config=config, token_verifier=app.extensions["srcore"].token_verifier)
    built.config["TESTING"] = True
    try:
        yield built
    finally:
        built.extensions["srcore"].db.dispose()


def test_subscribe_emit_deliver_verify(loopback_app, receiver, auth, user, tracker):
    from srcore.webhooks.worker import Worker

    client = loopback_app.test_client()
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    made = client.post(
        "/api/webhooks", json={"url": url, "events": ["ticket:created"]}, headers=auth()
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    secret = made.get_json()["secret"]
    ticket = client.post("/api/trackers/bugs/tickets", json={"title": "Hook me"}, headers=auth())
    assert ticket.status_code == 201

    worker = Worker(loopback_app)
    try:
        assert worker.drain() == 2  # one event fanned out, one delivery recorded
    finally:
        worker.close()
    [(headers, body)] = receiver.received
    message = verify(secret, headers, body)
    assert message["type"] == "ticket:created"
    assert message["data"] == ticket.get_json()

    log = client.get(f"/api/webhooks/{made.get_json()['id']}/deliveries", headers=auth())
    [delivery] = log.get_json()["results"]
    assert delivery["status"] == "delivered"
    assert delivery["message_id"] == headers["webhook-id"]
    assert delivery["attempts"][0]["response"]["status"] == 204
    assert "webhook-signature" not in {
        k.lower() for k in delivery["attempts"][0]["request"]["headers"]
    }

    # a user page shows the same log
    page = log_in_client(loopback_app.test_client(), user).get(f"/webhooks/{made.get_json()['id']}")
    assert "Delivered" in page.get_data(as_text=True)


def test_each_test_starts_with_empty_webhook_tables(app):
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(Subscription.id)) is None
        assert session.scalar(select(OutboxRow.id)) is None


@pytest.mark.parametrize("number", ["0", "2147483648", "9999999999", "٣"])
def test_a_tracker_id_past_the_column_is_refused_not_a_500(client, auth, user, number):
    """An id the tracker table can never hold names no tracker: a 400 naming the field
    (PostgreSQL used to raise out of range, a 500)."""
    response = subscribe(client, auth(), resource=f"tracker:{number}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["errors"][0]["field"] == "resource"


@pytest.mark.parametrize("spelling", ["0{}", "00{}", "+{}"])
def test_a_tracker_named_in_another_spelling_is_refused(client, auth, tracker, spelling):
    """Events name a tracker as ``tracker:12``: a subscription to ``tracker:012`` would be
    accepted for tracker 12 and then never match one of its events."""
    response = subscribe(client, auth(), resource=f"tracker:{spelling.format(tracker.id)}")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["errors"][0]["field"] == "resource"
    assert subscribe(client, auth(), resource=f"tracker:{tracker.id}").status_code == 201

"""The webhook API and pages as an outsider sees them: bodies the server must read as sent
(chunked, or with no Content-Type), methods that must never change anything, and ids
that name nothing.

The sample service declares one event, ``thing:created``, needing ``sample/things``.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from srcore.outbound.targets import set_resolver
from srcore.testing import create_user, log_in_client
from srcore.webhooks.models import Attempt, Delivery, Subscription, WebhookBase
from srcore.webhooks.outbox import insert_event

SCOPES = "sample/things:RW"
HOOK = "https://hooks.example.invalid/sample"


@pytest.fixture(autouse=True)
def _webhooks(app: Any) -> Any:
    """No name is looked up; the webhook tables are emptied after the test."""
    set_resolver(app, lambda host, port, timeout: None)
    yield
    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(table.delete())


@pytest.fixture
def alice(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(SCOPES, user=user)}"}


def subscribe(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    made = client.post(
        "/api/webhooks", json={"url": HOOK, "events": ["thing:created"]}, headers=headers
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    body: dict[str, Any] = made.get_json()
    return body


def stored(app: Any) -> list[tuple[Any, ...]]:
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.execute(select(Subscription.__table__).order_by(Subscription.id))
        return [tuple(row) for row in rows]


# -- a body is read as it was sent -----------------------------------------------------------


def test_a_chunked_rotation_keeps_its_overlap(app: Any, client: Any, alice: Any) -> None:
    """A JSON body sent chunked (no Content-Length) still says ``overlap: 0``: the old
    secret, leaked perhaps, must stop signing now, not in a day."""
    sid = subscribe(client, alice)["id"]
    for overlap, kept in ((0, False), (3600, True)):
        response = client.post(
            f"/api/webhooks/{sid}/rotate",
            input_stream=io.BytesIO(json.dumps({"overlap": overlap}).encode()),
            content_type="application/json",
            headers={**alice, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},  # as gunicorn and werkzeug set it
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        assert (response.get_json()["previous_secret_expires"] is not None) is kept, overlap
    refused = client.post(
        f"/api/webhooks/{sid}/rotate",
        input_stream=io.BytesIO(b'{"overlap": -1}'),
        content_type="application/json",
        headers={**alice, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert refused.status_code == 400
    assert refused.get_json()["errors"] == [{"field": "overlap", "reason": "Must be at least 0."}]


def test_a_body_without_a_content_type_is_refused_not_ignored(
    app: Any, client: Any, alice: Any
) -> None:
    """JSON sent with no Content-Type used to be read as an empty form: a rotation then took
    the day's overlap for the ``0`` it was sent, a PATCH answered 200 having done nothing."""
    sub = subscribe(client, alice)
    sid = sub["id"]
    before = stored(app)
    for method, path, body in [
        ("POST", f"/api/webhooks/{sid}/rotate", {"overlap": 0}),
        ("PATCH", f"/api/webhooks/{sid}", {"enabled": False}),
        ("POST", "/api/webhooks", {"url": HOOK, "events": ["thing:created"]}),
    ]:
        response = client.open(path, method=method, data=json.dumps(body), headers=alice)
        assert response.status_code == 400, (method, path, response.status_code)
        reasons = [e["reason"] for e in response.get_json()["errors"]]
        assert "The request body has no Content-Type; send a form or JSON." in reasons
    assert stored(app) == before
    # Still: no body at all is an empty form, and a rotation then keeps the old secret a day.
    rotated = client.post(f"/api/webhooks/{sid}/rotate", headers=alice)
    assert rotated.status_code == 200
    assert rotated.get_json()["previous_secret_expires"] is not None
    # And a form is read as a form.
    form = client.post(f"/api/webhooks/{sid}/rotate", data={"overlap": "0"}, headers=alice)
    assert form.status_code == 200
    assert form.get_json()["previous_secret_expires"] is None


def test_a_bad_overlap_is_a_400_and_rotates_nothing(app: Any, client: Any, alice: Any) -> None:
    """An overlap that is no whole number of seconds within a week is refused, naming the
    field, and the secret stays as it was (nothing half-written)."""
    sid = subscribe(client, alice)["id"]
    before = stored(app)
    path = f"/api/webhooks/{sid}/rotate"
    for overlap in [-1, 1.5, 2**63, 2**64, "1e9", "86400", True, [], {}, 7 * 24 * 3600 + 1]:
        response = client.post(path, json={"overlap": overlap}, headers=alice)
        assert response.status_code == 400, overlap
        assert [e["field"] for e in response.get_json()["errors"]] == ["overlap"], overlap
    for overlap in ["-1", "1e9", "1.5", "\u0663", "9" * 50]:
        response = client.post(path, data={"overlap": overlap}, headers=alice)
        assert response.status_code == 400, overlap
        assert [e["field"] for e in response.get_json()["errors"]] == ["overlap"], overlap
    assert stored(app) == before


HOSTILE_BODIES = [
    b'{"url": "https://hooks.example.invalid/\\ud800", "events": ["thing:created"]}',
    b'{"url": "https://hooks.example.invalid/\xff", "events": ["thing:created"]}',
    b'{"url": "https://a.example.invalid/", "url": "https://b.example.invalid/"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"url": 1' + b"0" * 5000 + b"}",
    b'{"url": NaN}',
    b'["https://hooks.example.invalid/"]',
    json.dumps({"url": HOOK, "events": ["thing:created"] * 10_000}).encode(),
    json.dumps({"url": [HOOK], "events": "thing:created"}).encode(),
    json.dumps(
        {"url": HOOK, "events": ["thing:created"], "resource": "thing:" + "1" * 191}
    ).encode(),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_json_is_a_400_that_stores_nothing(
    app: Any, client: Any, alice: Any, body: bytes
) -> None:
    response = client.post(
        "/api/webhooks", data=body, content_type="application/json", headers=alice
    )
    assert response.status_code == 400
    assert response.get_json()["errors"], response.get_data(as_text=True)
    assert stored(app) == []


# -- nothing but a POST changes anything ------------------------------------------------------


def test_head_and_options_never_run_a_form(app: Any, client: Any, alice: Any, user: Any) -> None:
    """HEAD is answered as GET (a form page, its query string never a submission) and OPTIONS
    by its Allow header: neither makes, changes nor deletes a webhook, logged in or not."""
    sid = subscribe(client, alice)["id"]
    browser = log_in_client(app.test_client(), user)
    app.config["WTF_CSRF_ENABLED"] = False  # not what stops them
    query = {"url": HOOK + "/other", "events": "thing:created", "overlap": "0", "enabled": "0"}
    before = stored(app)
    for path in [
        "/webhooks/new",
        f"/webhooks/{sid}/edit",
        f"/webhooks/{sid}/rotate",
        f"/webhooks/{sid}/disable",
        f"/webhooks/{sid}/delete",
        f"/webhooks/{sid}/ping",
    ]:
        for method in ("HEAD", "OPTIONS"):
            response = browser.open(path, method=method, query_string=query)
            assert response.status_code in (200, 405), (method, path, response.status_code)
            assert not response.get_data() or method == "OPTIONS"
    for path in ["/api/webhooks", f"/api/webhooks/{sid}", f"/api/webhooks/{sid}/rotate"]:
        for method in ("HEAD", "OPTIONS"):
            response = client.open(path, method=method, query_string=query, headers=alice)
            assert response.status_code in (200, 405), (method, path, response.status_code)
    assert stored(app) == before


# -- ids that name nothing, or another's -----------------------------------------------------


#: Other spellings of the id *n*, and numbers no row can have.
SPELLINGS = [
    "0{n}", "+{n}", "-{n}", "{n}.0", "{n}e0", "0x{n}", "{n} ", "%20{n}", "{n}%20",
    "0", str(2**31), str(2**63 - 1), str(2**63), "9" * 20,
]  # fmt: skip
#: Where the digits of other scripts start (Arabic-Indic, Devanagari, fullwidth).
DIGITS = [0x660, 0x966, 0xFF10]


def test_an_id_in_another_spelling_names_nothing(
    app: Any, client: Any, alice: Any, user: Any
) -> None:
    """Only the one spelling of an id names a webhook: leading zeros, signs, other digits
    and numbers past the column are a 404, never another row nor a 500."""
    sid = subscribe(client, alice)["id"]
    browser = log_in_client(app.test_client(), user)
    idents = [spelling.format(n=sid) for spelling in SPELLINGS]
    idents += [quote("".join(chr(zero + int(d)) for d in str(sid))) for zero in DIGITS]
    for ident in idents:
        for path in (f"/api/webhooks/{ident}", f"/api/webhooks/{ident}/deliveries"):
            assert client.get(path, headers=alice).status_code == 404, path
        path = f"/api/webhooks/{sid}/deliveries/{ident}/redeliver"
        assert client.post(path, headers=alice).status_code == 404, path
        assert browser.get(f"/webhooks/{ident}").status_code == 404, ident
    assert client.get(f"/api/webhooks/{sid}", headers=alice).status_code == 200


def test_a_second_user_and_a_client_see_each_others_webhooks_as_nothing(
    app: Any, client: Any, alice: Any, make_token: Any
) -> None:
    """A user's token, another user's and a client's (no user) each list only their own, and
    each other's ids answer 404 for every method, the API's and the pages' alike."""
    bob = create_user(app, "bob")
    as_bob = {"Authorization": f"Bearer {make_token(SCOPES, user=bob)}"}
    as_client = {"Authorization": f"Bearer {make_token(SCOPES, client_id='builds')}"}
    mine, bobs, clients = (subscribe(client, h)["id"] for h in (alice, as_bob, as_client))
    owners = {mine: alice, bobs: as_bob, clients: as_client}
    for sid, owner in owners.items():
        for headers in owners.values():
            listed = [
                s["id"] for s in client.get("/api/webhooks", headers=headers).get_json()["results"]
            ]
            got = client.get(f"/api/webhooks/{sid}", headers=headers).status_code
            if headers is owner:
                assert (listed, got) == ([sid], 200)
            else:
                assert sid not in listed and got == 404
    bob_browser = log_in_client(app.test_client(), bob)
    assert bob_browser.get(f"/webhooks/{mine}").status_code == 404
    assert bob_browser.get(f"/webhooks/{clients}").status_code == 404
    assert bob_browser.get(f"/webhooks/{bobs}").status_code == 200


# -- a token reads and resends only the events its scopes cover -------------------------------


@pytest.fixture
def todo(_srcore_database_pool: Any, srcore_backend: str, srcore_signing_key: Any) -> Iterator[Any]:
    """todo's app (its events need two scopes, ``todo/trackers`` and ``todo/tickets``),
    built as the ``app`` fixture builds the sample service's."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.testing.databases import _clean
    from srcore.testing.users import TEST_ISSUER

    database = _srcore_database_pool.get("todo", srcore_backend)
    keys = StaticKeySource(KeySet([srcore_signing_key]))
    verifier = TokenVerifier(keys=keys, issuer=TEST_ISSUER, audience="todo")
    todo_app = importlib.import_module("todo").create_app(
        config=database.config_path, token_verifier=verifier
    )
    todo_app.config["TESTING"] = True
    set_resolver(todo_app, lambda host, port, timeout: None)
    try:
        yield todo_app
    finally:
        _clean(todo_app)
        todo_app.extensions["srcore"].db.dispose()


def test_a_token_sees_and_resends_only_deliveries_its_scopes_cover(
    todo: Any, srcore_signing_key: Any
) -> None:
    """A webhook's log keeps the deliveries of events it no longer receives: a token that
    may not receive those (it lacks their scope) neither reads their payloads in the log
    nor has them sent again, to a URL it may have just changed."""
    from srcore.testing.users import mint_token

    client = todo.test_client()
    alice = create_user(todo, "alice")

    def bearer(scopes: str) -> dict[str, str]:
        token = mint_token(srcore_signing_key, audience="todo", scopes=scopes, user_id=alice.id)
        return {"Authorization": f"Bearer {token}"}

    both = bearer("todo/tickets:RW todo/trackers:RW")
    made = client.post(
        "/api/webhooks", json={"url": HOOK, "events": ["ticket:created"]}, headers=both
    )
    sid = made.get_json()["id"]
    with todo.extensions["srcore"].db.transaction() as session:
        secret = {"id": 7, "title": "a private ticket"}
        outbox_id = insert_event(session, "ticket:created", secret, resource="tracker:1")
        delivery = Delivery(subscription_id=sid, outbox_id=outbox_id, status="failed", attempts=1)
        session.add(delivery)
        session.flush()
        session.add(
            Attempt(
                delivery_id=delivery.id,
                request_headers=json.dumps({"webhook-id": delivery.message_id}),
                request_body=json.dumps({"type": "ticket:created", "data": secret}),
                response_status=500,
                response_headers="{}",
                response_body="",
                duration_ms=1,
            )
        )
        did = delivery.id
    # It now receives tracker events only (a change its tickets scope allowed).
    changed = client.patch(
        f"/api/webhooks/{sid}", json={"events": ["tracker:created"]}, headers=both
    )
    assert changed.status_code == 200
    trackers = bearer("todo/trackers:RW")
    log = client.get(f"/api/webhooks/{sid}/deliveries", headers=trackers)
    assert log.status_code == 200
    assert log.get_json()["results"] == []
    assert "a private ticket" not in log.get_data(as_text=True)
    moved = client.patch(
        f"/api/webhooks/{sid}", json={"url": HOOK + "/elsewhere"}, headers=trackers
    )
    assert moved.status_code == 200
    resent = client.post(f"/api/webhooks/{sid}/deliveries/{did}/redeliver", headers=trackers)
    assert resent.status_code == 404
    with todo.extensions["srcore"].db.transaction() as session:
        assert session.get(Delivery, did).status == "failed"
    # The token holding the tickets scope still sees it, and the owner's pages do.
    assert [
        d["id"]
        for d in client.get(f"/api/webhooks/{sid}/deliveries", headers=both).get_json()["results"]
    ] == [did]
    browser = log_in_client(todo.test_client(), alice)
    assert "a private ticket" in browser.get(f"/webhooks/{sid}").get_data(as_text=True)

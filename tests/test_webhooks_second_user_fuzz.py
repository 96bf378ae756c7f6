"""A second user (Bob), strangers, and tokens that must not reach them, against a first
user's (Alice's) webhooks and delivery log: through the API and the pages, on SQLite and
PostgreSQL, with hostile ids, query strings, bodies, methods and headers.

Asserted: never a 5xx nor a traceback; nothing of Alice's (her URLs, payloads, receiver
answers, message ids, secrets, ids in a listing) in any answer; each of her ids answered
exactly as an id that names nothing (status, body, headers); her rows as they were.

The sample service declares one event, ``thing:created``, needing ``sample/things``. Every
URL is a ``.invalid`` name, and no worker runs: nothing is sent anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from srcore.outbound.targets import set_resolver
from srcore.pagination import encode_cursor
from srcore.signatures import generate_secret
from srcore.testing import create_user, log_in_client
from srcore.testing.users import mint_token
from srcore.webhooks.models import Attempt, Delivery, OutboxRow, Subscription, WebhookBase
from srcore.webhooks.outbox import insert_event
from tests.test_webhooks_outsider_api import todo

__all__ = ["todo"]  # a fixture, used by name

SCOPES = "sample/things:RW"
EVENT = "thing:created"
#: What only Alice's rows hold: none of it may reach anyone else.
ALICE_URL = "https://alice-receiver.example.invalid/hooks/alice-api-7f3e"
ALICE_PAGE_URL = "https://alice-receiver.example.invalid/hooks/alice-page-91c2"
ALICE_PAYLOAD = "alice-private-thing-5d1a"
ALICE_ANSWER = "alice-receiver-answer-b2e0"
BOB_URL = "https://bob-receiver.example.invalid/hooks/bob"
#: Why the test apps (with no account service configured) log no visitor in, on a page.
NO_LOGIN = "account service"
_REQUEST_ID = re.compile(r"request <code>[0-9a-f]+</code>")
#: The session's CSRF token, signed with the second it was signed in.
_CSRF_TOKEN = re.compile(r'name="csrf_token" value="[^"]*"')
BROWSERS = ["bob's browser", "anonymous browser"]

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class World:
    """Alice's webhooks and deliveries, Bob's, and everyone who knocks."""

    app: Any
    api: Any
    bob_browser: Any
    anon_browser: Any
    alice_sids: list[int]
    alice_dids: list[int]
    bob_sid: int
    bob_did: int
    absent_sid: int
    absent_did: int
    deleted_sid: int
    #: The Authorization header of each API caller that is not Alice with her own client.
    callers: dict[str, dict[str, str]]
    secrets: list[str]

    def alice_rows(self) -> list[tuple[Any, ...]]:
        """Every column of every row of Alice's: webhooks, deliveries, attempts, events."""
        sids, dids = self.alice_sids, self.alice_dids
        with self.app.extensions["srcore"].db.transaction() as session:
            queries = [
                select(Subscription.__table__).where(Subscription.id.in_(sids)),
                select(Delivery.__table__).where(Delivery.subscription_id.in_(sids)),
                select(Attempt.__table__).where(Attempt.delivery_id.in_(dids)),
                select(OutboxRow.__table__).where(
                    OutboxRow.id.in_(select(Delivery.outbox_id).where(Delivery.id.in_(dids)))
                ),
            ]
            return [tuple(row) for query in queries for row in session.execute(query)]


def _delivery(app: Any, sid: int, payload: str, answer: str) -> tuple[int, str]:
    """A failed delivery of a ``thing:created`` to *sid*, with one logged attempt."""
    with app.extensions["srcore"].db.transaction() as session:
        outbox_id = insert_event(session, EVENT, {"id": 7, "name": payload})
        delivery = Delivery(subscription_id=sid, outbox_id=outbox_id, status="failed", attempts=1)
        session.add(delivery)
        session.flush()
        session.add(
            Attempt(
                delivery_id=delivery.id,
                request_headers=json.dumps({"webhook-id": delivery.message_id}),
                request_body=json.dumps({"type": EVENT, "data": {"id": 7, "name": payload}}),
                response_status=500,
                response_headers=json.dumps({"x-receiver": answer}),
                response_body=answer,
                duration_ms=3,
            )
        )
        return delivery.id, delivery.message_id


class _Stranger:
    """A user meta vouches for whom this service has never seen."""

    id = 987_654_321


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def world(app: Any, make_token: Any, user: Any) -> Iterator[World]:
    set_resolver(app, lambda host, port, timeout: None)  # no name is looked up
    api = app.test_client()
    alice = _bearer(make_token(SCOPES, user=user))
    made = api.post("/api/webhooks", json={"url": ALICE_URL, "events": [EVENT]}, headers=alice)
    assert made.status_code == 201, made.get_data(as_text=True)
    sid, secret = made.get_json()["id"], made.get_json()["secret"]
    with app.extensions["srcore"].db.transaction() as session:  # one made on the pages
        page = Subscription(owner_id=user.id, url=ALICE_PAGE_URL, events=EVENT)
        page.secret, page.scopes = generate_secret(), "sample/things:RO"
        session.add(page)
        session.flush()
        page_sid, page_secret = page.id, page.secret
    gone = api.post("/api/webhooks", json={"url": ALICE_URL, "events": [EVENT]}, headers=alice)
    deleted_sid = gone.get_json()["id"]
    assert api.delete(f"/api/webhooks/{deleted_sid}", headers=alice).status_code == 204
    alice_dids, messages = [], []
    for target in (sid, page_sid):
        did, message = _delivery(app, target, ALICE_PAYLOAD, ALICE_ANSWER)
        alice_dids.append(did)
        messages.append(message)

    bob = create_user(app, "bob")
    as_bob = _bearer(make_token(SCOPES, user=bob))
    bobs = api.post("/api/webhooks", json={"url": BOB_URL, "events": [EVENT]}, headers=as_bob)
    bob_sid = bobs.get_json()["id"]
    bob_did, _ = _delivery(app, bob_sid, "bob-thing", "bob-answer")
    callers = {
        "bob": as_bob,
        "bob read-only": _bearer(make_token("sample/things:RO", user=bob)),
        "bob through another client": _bearer(make_token(SCOPES, user=bob, client_id="other")),
        "alice through another client": _bearer(
            make_token(SCOPES, user=user, client_id="other-app")
        ),
        "alice's client on its own": _bearer(make_token(SCOPES, client_id="srcore-test-client")),
        "another service's scope": _bearer(make_token("other/things:RW", user=bob)),
        "a stranger": _bearer(make_token(SCOPES, user=_Stranger())),
        "alice expired": _bearer(make_token(SCOPES, user=user, expires_in=-3600)),
        "garbage": _bearer("x" * 300),
        "anonymous": {},
    }
    bob_browser = log_in_client(app.test_client(), bob)
    app.config["WTF_CSRF_ENABLED"] = False  # so the views run: CSRF has its own test below
    world = World(
        app=app,
        api=api,
        bob_browser=bob_browser,
        anon_browser=app.test_client(),
        alice_sids=[sid, page_sid],
        alice_dids=alice_dids,
        bob_sid=bob_sid,
        bob_did=bob_did,
        absent_sid=max(sid, page_sid, bob_sid, deleted_sid) + 100_000,
        absent_did=max(*alice_dids, bob_did) + 100_000,
        deleted_sid=deleted_sid,
        callers=callers,
        secrets=[
            *(ALICE_URL, ALICE_PAGE_URL, "alice-api-7f3e", "alice-page-91c2"),
            *(ALICE_PAYLOAD, ALICE_ANSWER, secret, page_secret, secret[-12:], page_secret[-12:]),
            *messages,
        ],
    )
    try:
        yield world
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
        with app.extensions["srcore"].db.transaction() as session:
            for table in reversed(WebhookBase.metadata.sorted_tables):
                session.execute(table.delete())


# -- what every answer must be ----------------------------------------------------------------


def routes(app: Any) -> list[tuple[str, frozenset[str]]]:
    """Every webhook route as a template (``{sid}``, ``{did}``) with the methods it takes."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("srcore_webhooks.", "srcore_webhooks_api.")):
            path = re.sub(r"<[^>]*subscription_id>", "{sid}", rule.rule)
            path = re.sub(r"<[^>]*delivery_id>", "{did}", path)
            found.append((path, frozenset(rule.methods or ())))
    assert len(found) >= 18, found  # the API's and the pages' routes
    return sorted(found)


def check_answer(world: World, who: str, path: str, response: Any) -> None:
    """No 5xx, no traceback, nothing of Alice's; a JSON error says what is wrong, and a
    listing lists none of her rows."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    text = headers + "\n" + response.get_data().decode("utf-8", "replace")
    status = response.status_code
    if who == "anonymous browser" and status == 503:
        # The test apps have no account service: a page says so instead of sending to a login.
        assert NO_LOGIN in text.lower() or response.request.method == "HEAD", text
    else:
        assert status < 500, (who, path, text[-2000:])
    assert "Traceback" not in text and 'File "' not in text, (who, path, text)
    for secret in world.secrets:
        assert secret not in text, (who, path, secret, text[-2000:])
    if response.mimetype != "application/json" or not response.get_data():
        return
    body = response.get_json()
    if status >= 400:
        reasons = [e["reason"] for e in body["errors"]]
        assert reasons and all(isinstance(r, str) and r.strip() for r in reasons), body
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        listed = {item.get("id") for item in body["results"] if isinstance(item, dict)}
        hers = world.alice_dids if "/deliveries" in path else world.alice_sids
        assert not listed & set(hers), (path, body)


def normalized(response: Any, *ids: int) -> tuple[Any, ...]:
    """An answer less what differs between any two requests (its request id, the second in
    its CSRF token), with each of *ids* written in a path or as ``#id`` made the same."""
    body = _REQUEST_ID.sub("request <code>…</code>", response.get_data(as_text=True))
    body = _CSRF_TOKEN.sub('name="csrf_token" value="…"', body)
    for ident in ids:
        body = re.sub(rf"(?<=[/#]){ident}(?![0-9])", "{id}", body)
    headers = {
        k: re.sub(r"[0-9]+", "N", v) if k == "Location" else v
        for k, v in response.headers.items()
        if k not in ("X-Request-Id", "Set-Cookie", "Content-Length", "Date")
    }
    return response.status_code, body, sorted(headers.items())


def encoded(pairs: list[tuple[str, str]]) -> str:
    """*pairs* percent-encoded as a browser sends them, keys repeated as they come; a lone
    surrogate as the UTF-8 bytes it would be (which no decoder accepts)."""

    def one(text: str) -> str:
        return quote(text.encode("utf-8", "surrogatepass"), safe="")

    return "&".join(f"{one(key)}={one(value)}" for key, value in pairs)


def send(
    world: World,
    who: str,
    method: str,
    path: str,
    query: Any = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """One request as *who*: an API caller by name, Bob's browser or a visitor's. *body* is
    ``("json", value)``, ``("form", pairs)`` or ``(content_type, bytes)``."""
    headers = dict(headers or {})
    if who in world.callers:
        headers.update(world.callers[who])
        client = world.api
    else:
        client = world.bob_browser if who == "bob's browser" else world.anon_browser
        with client.session_transaction() as session:  # what an earlier answer flashed
            session.pop("_flashes", None)
    options: dict[str, Any] = {"headers": headers, "query_string": encoded(query or [])}
    if body is not None:
        kind, value = body
        if kind == "json":
            options["json"] = value
        elif kind == "form":
            options["data"] = encoded(value)
            options["content_type"] = "application/x-www-form-urlencoded"
        else:
            options["data"] = value
            if kind:
                options["content_type"] = kind
    return client.open(path, method=method, **options)


# -- hostile values ---------------------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOSTILE_IDS = [
    "0", "-1", "+1", "01", "1.0", "1e3", "0x1", "%201", "1%20", str(2**31 - 1), str(2**31),
    str(2**63 - 1), str(2**63), str(2**64), "9" * 400, "abc", "%00", "1%00", "%ff",
    "%ED%A0%80", "%D9%A1", "%EF%BC%91", "1%2F1", "%2e%2e", "1;1", "null", "[1]",
]  # fmt: skip
FIELDS = [
    "url", "events", "resource", "enabled", "overlap", "cursor", "limit", "page", "after",
    "status", "form_token", "secret_hint", "csrf_token",
]  # fmt: skip
WORDS = [
    BOB_URL, EVENT, "thing:1", "true", "false", "0", "-1", "1", "50", "51", "86400", "9" * 40,
    "", "\x00", "a\x00b", "\ud800", "\udfff", "\u00e9", "\u0661", "http://127.0.0.1:1/",
    "https://x.invalid/" + "a" * 3000, "W10", "WzFd", "=" * 8, "eyJpZCI6IDF9", "a" * 2000,
    "ping", "*",
]  # fmt: skip
#: Text of any script, without the control characters that srcore refuses in an address or
#: a query string before any view runs (WORDS holds some), nor lone surrogates.
_printable = st.characters(blacklist_categories=("Cc", "Cs"))
path_ids = st.one_of(
    st.sampled_from(HOSTILE_IDS), st.text(_printable, max_size=24).map(lambda t: quote(t, ""))
)
strings = st.one_of(st.sampled_from(WORDS), st.text(_printable, max_size=30))
keys = st.one_of(st.sampled_from(FIELDS), st.text(_printable, max_size=6))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=False),
    strings,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=10,
)
#: A query string's (or a form's) pairs: a key may come more than once.
pairs = st.lists(st.tuples(keys, strings), max_size=5)
RAW_JSON = [
    b'{"url": "a", "url": "b", "events": ["thing:created"], "events": "x"}',
    b'{"events": ["thing:created"], "url": "https://x.invalid/\\ud800"}',
    b'{"enabled": false, "enabled": true, "overlap": 0}',
    b'{"cursor": null, "limit": 1e309}',
    b"[" * 5000 + b"]" * 5000,
    b'"\\u0000"',
    b"\xff\xfe{}",
]
CONTENT_TYPES = [
    "application/json", "application/json; charset=latin-1", "text/plain", "",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
]  # fmt: skip
bodies = st.one_of(
    st.none(),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("form"), pairs),
    st.tuples(st.sampled_from(CONTENT_TYPES), st.binary(max_size=64)),
    st.tuples(st.just("application/json"), st.sampled_from(RAW_JSON)),
)
extra_headers = st.fixed_dictionaries(
    {},
    optional={
        "Origin": st.sampled_from(["https://evil.invalid", "null", "http://127.0.0.1:1"]),
        "Accept": st.sampled_from(["application/json", "text/html", "*/*"]),
        "X-HTTP-Method-Override": st.sampled_from(["DELETE", "PATCH"]),
    },
)


# -- the tests --------------------------------------------------------------------------------


def test_every_route_answers_alices_ids_as_ids_that_name_nothing(world: World) -> None:
    """Each caller, at each webhook route with each method it takes (and HEAD, OPTIONS and
    PUT), gets for Alice's webhooks (made through the API, or on the pages), a deleted one
    of hers, and her deliveries put in Bob's own webhook's path, exactly the answer it gets
    for an id never used: same status, body and headers. Nothing of hers changes."""
    before = world.alice_rows()
    cases = [(sid, world.absent_did) for sid in (*world.alice_sids, world.deleted_sid)]
    absent = {"sid": world.absent_sid, "did": world.absent_did}
    compared = 0
    for template, methods in routes(world.app):
        if "{sid}" not in template:
            continue
        callers = BROWSERS if template.startswith("/webhooks") else list(world.callers)
        theirs = [{"sid": sid, "did": did} for sid, did in cases]
        if "{did}" in template:  # her delivery in Bob's webhook, beside one never made
            theirs += [{"sid": world.bob_sid, "did": did} for did in world.alice_dids]
        for values in theirs:
            never = absent if values["sid"] != world.bob_sid else {**absent, "sid": world.bob_sid}
            for method in sorted(methods | {"HEAD", "OPTIONS", "PUT"}):
                for who in callers:
                    answers = []
                    for asked in (values, never):
                        path = template.format(**asked)
                        response = send(world, who, method, path)
                        check_answer(world, who, path, response)
                        answers.append(normalized(response, asked["sid"], asked["did"]))
                    assert answers[0] == answers[1], (who, method, template, values, answers)
                    compared += 1
    assert compared > 300
    assert world.alice_rows() == before


def test_hostile_requests_reveal_and_change_nothing_of_alices(world: World) -> None:
    """Random callers, methods, ids, query strings, bodies and headers: never a 5xx nor a
    traceback, nothing of Alice's in an answer or a listing, her rows as they were; and her
    ids answered as an id that names nothing is, whatever came with them."""
    before = world.alice_rows()
    named = {
        "alice": world.alice_sids[0],
        "alice's page-made": world.alice_sids[1],
        "deleted": world.deleted_sid,
        "absent": world.absent_sid,
        "bob": world.bob_sid,
    }
    deliveries = {"alice": world.alice_dids[0], "absent": world.absent_did, "bob": world.bob_did}
    past_hers = [("cursor", encode_cursor([max(world.alice_dids) + 1])), ("limit", "50")]

    @EXAMPLES
    @given(
        route=st.sampled_from(routes(world.app)),
        data=st.data(),
        sid=st.one_of(st.sampled_from(sorted(named)), path_ids),
        did=st.one_of(st.sampled_from(sorted(deliveries)), path_ids),
        query=st.one_of(pairs, st.just(past_hers)),
        body=bodies,
        headers=extra_headers,
    )
    def run(route: Any, data: Any, sid: str, did: str, query: Any, body: Any, headers: Any) -> None:
        template, takes = route
        # Mostly a method the route takes (so its view runs), else any.
        own = sorted(takes - {"HEAD", "OPTIONS"})
        method = data.draw(st.one_of(st.sampled_from(own), st.sampled_from(METHODS)))
        callers = BROWSERS if template.startswith("/webhooks") else sorted(world.callers)
        who = data.draw(st.sampled_from(callers))
        path = template.format(sid=named.get(sid, sid), did=deliveries.get(did, did))
        response = send(world, who, method, path, query, body, headers)
        check_answer(world, who, path, response)
        hers = sid in ("alice", "alice's page-made", "deleted") and "{sid}" in template
        if hers and not ("{did}" in template and did == "bob"):
            # The same request at a webhook that never was: the same answer.
            other = template.format(sid=world.absent_sid, did=deliveries.get(did, did))
            again = send(world, who, method, other, query, body, headers)
            check_answer(world, who, other, again)
            ids = (named[sid], world.absent_sid)
            assert normalized(response, *ids) == normalized(again, *ids), (who, method, path)
        assert world.alice_rows() == before, (who, method, path, query, body)

    run()


def test_forms_without_their_csrf_token_do_nothing_whatever_the_origin(world: World) -> None:
    """With CSRF checked (as it is outside these fuzzers), Bob's browser posting each form,
    to his webhook, Alice's and one that never was, from another origin or none, with no
    token, a forged one or another session's, is refused with a 400 saying the form has
    expired; Alice's rows are as they were."""
    world.app.config["WTF_CSRF_ENABLED"] = True
    before = world.alice_rows()
    carol = log_in_client(world.app.test_client(), create_user(world.app, "carol"))
    carols = _CSRF_TOKEN.search(carol.get("/webhooks/new").get_data(as_text=True))
    assert carols is not None
    foreign = carols.group(0).split('value="')[1].rstrip('"')
    forms = [t for t, m in routes(world.app) if t.startswith("/webhooks") and "POST" in m]
    assert len(forms) == 8, forms
    for template in forms:
        for sid in (*world.alice_sids, world.bob_sid, world.absent_sid):
            path = template.format(sid=sid, did=world.bob_did)
            for token in (None, "forged", foreign):
                for origin in (None, "https://evil.invalid", "null"):
                    form = {"url": BOB_URL, "events": EVENT, "overlap": "0"}
                    if token is not None:
                        form["csrf_token"] = token
                    headers = {"Origin": origin} if origin else {}
                    response = world.bob_browser.post(path, data=form, headers=headers)
                    check_answer(world, "bob's browser", path, response)
                    assert response.status_code == 400, (path, token, origin)
                    assert "missing its security token" in response.get_data(as_text=True)
    assert world.alice_rows() == before


def test_the_api_takes_no_cookie_and_lets_no_other_origin_read_with_one(world: World) -> None:
    """Bob's session cookie is no credential for the API (a page of another origin could
    make his browser send it): 401 at every API route but the public catalog, Alice's ids
    and his own alike. The API's CORS answers never allow credentials; the pages send no
    CORS headers at all."""
    for template, methods in routes(world.app):
        if not template.startswith("/api") or template == "/api/webhooks/events":
            continue
        for method in sorted(methods - {"OPTIONS", "HEAD"}):
            for sid in (world.alice_sids[0], world.absent_sid, world.bob_sid):
                path = template.format(sid=sid, did=world.bob_did)
                origin = {"Origin": "https://evil.invalid"}
                response = world.bob_browser.open(path, method=method, headers=origin)
                check_answer(world, "bob's browser", path, response)
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.headers["Access-Control-Allow-Origin"] == "*"
                assert "Access-Control-Allow-Credentials" not in response.headers
    page = world.bob_browser.get("/webhooks", headers={"Origin": "https://evil.invalid"})
    assert page.status_code == 200
    assert not [k for k, _ in page.headers.items() if k.startswith("Access-Control-")]


def test_bobs_own_listings_never_reach_alices_rows(world: World) -> None:
    """Bob's list and delivery log, paged with cursors he made up to point past Alice's
    rows (or anywhere), list only his own rows; so do his pages."""
    top = max(*world.alice_sids, *world.alice_dids, world.bob_sid, world.bob_did) + 1
    cursors = [encode_cursor([n]) for n in (top, 2**31 - 1, 2**62, 0, -1)]
    for path in ("/api/webhooks", f"/api/webhooks/{world.bob_sid}/deliveries"):
        for cursor in cursors:
            response = send(world, "bob", "GET", path, [("cursor", cursor)])
            check_answer(world, "bob", path, response)
            assert response.status_code in (200, 400), (path, cursor)
            if response.status_code == 200:
                ids = {item["id"] for item in response.get_json()["results"]}
                assert ids <= {world.bob_sid, world.bob_did}, (path, cursor, ids)
    for path in ("/webhooks", f"/webhooks/{world.bob_sid}"):
        for cursor in cursors:
            response = send(world, "bob's browser", "GET", path, [("cursor", cursor)])
            check_answer(world, "bob's browser", path, response)
            assert response.status_code in (200, 400), (path, cursor)


def test_the_edit_form_refuses_a_resource_saying_why(world: World) -> None:
    """A webhook's resource is fixed, and its edit form has no field for one. A resource
    sent to that form anyway (by hand, or by a script) was read as on a new webhook: a bad
    one answered 400 asking to "correct the highlighted field below", with no such field
    nor any reason on the page; a good one answered "Webhook saved." and was dropped. Each
    is refused saying that the resource cannot change, as a PATCH is, and nothing is saved."""
    path = f"/webhooks/{world.bob_sid}/edit"
    bobs = select(Subscription.__table__).where(Subscription.id == world.bob_sid)

    def row() -> tuple[Any, ...]:
        with world.app.extensions["srcore"].db.transaction() as session:
            return tuple(session.execute(bobs).one())

    before = row()
    reason = "<strong>A webhook&#39;s resource cannot change; make a new webhook.</strong>"
    for resource in ["thing:1", "not a resource", "thing:" + "1" * 300, "", ["thing:1"] * 2]:
        form = {"url": BOB_URL + "/moved", "events": EVENT, "resource": resource}
        response = world.bob_browser.post(path, data=form)
        check_answer(world, "bob's browser", path, response)
        assert response.status_code == 400, (resource, response.status_code)
        assert reason in response.get_data(as_text=True), resource
        assert row() == before, resource
    # Without one, the same form is saved.
    form = {"url": BOB_URL + "/moved", "events": EVENT}
    assert world.bob_browser.post(path, data=form).status_code == 302
    assert row() != before


# -- a service with two scopes and a resource filter: todo ------------------------------------


def test_todo_bob_learns_nothing_of_alices_private_tracker_nor_of_her_webhook(
    todo: Any, srcore_signing_key: Any
) -> None:
    """On todo: Bob's tokens (either scope or both, read-only or read-write, his client or
    another) get for Alice's webhook, limited to her private tracker, the answers of a
    webhook that never was; a webhook of his limited to her private tracker is answered as
    one limited to a tracker that never was; her rows stay as they were."""
    api = todo.test_client()
    alice, bob = create_user(todo, "alice"), create_user(todo, "bob")

    def bearer(scopes: str, who: Any, client: str = "srcore-test-client") -> dict[str, str]:
        return _bearer(
            mint_token(
                srcore_signing_key, audience="todo", scopes=scopes, user_id=who.id,
                client_id=client,
            )
        )  # fmt: skip

    both = "todo/trackers:RW todo/tickets:RW"
    body = {"name": "alice-private", "visibility": "private"}
    made = api.post("/api/trackers", json=body, headers=bearer(both, alice))
    assert made.status_code == 201, made.get_data(as_text=True)
    private = made.get_json()["id"]
    never = private + 100_000
    body = {"url": ALICE_URL, "events": ["ticket:created"], "resource": f"tracker:{private}"}
    hook = api.post("/api/webhooks", json=body, headers=bearer(both, alice))
    assert hook.status_code == 201, hook.get_data(as_text=True)
    sid = hook.get_json()["id"]
    world = World(
        app=todo, api=api, bob_browser=None, anon_browser=None, alice_sids=[sid],
        alice_dids=[], bob_sid=0, bob_did=0, absent_sid=sid + 100_000, absent_did=0,
        deleted_sid=0, callers={}, secrets=[ALICE_URL, hook.get_json()["secret"]],
    )  # fmt: skip
    before = world.alice_rows()
    events_asked = [["ticket:created"], ["tracker:updated"], ["tracker:updated", "ticket:created"]]
    her_paths = [
        ("GET", "/api/webhooks/{sid}"), ("GET", "/api/webhooks/{sid}/deliveries"),
        ("PATCH", "/api/webhooks/{sid}"), ("DELETE", "/api/webhooks/{sid}"),
        ("POST", "/api/webhooks/{sid}/ping"), ("POST", "/api/webhooks/{sid}/rotate"),
    ]  # fmt: skip
    for scopes in ("todo/trackers:RW", "todo/tickets:RW", "todo/tickets:RO", both):
        for client in ("srcore-test-client", "other-app"):
            headers = bearer(scopes, bob, client)
            for events in events_asked:
                answers = []
                for tracker in (private, never):
                    body = {"url": BOB_URL, "events": events, "resource": f"tracker:{tracker}"}
                    response = api.post("/api/webhooks", json=body, headers=headers)
                    check_answer(world, scopes, "/api/webhooks", response)
                    assert response.status_code in (400, 403), response.get_data(as_text=True)
                    text = response.get_data(as_text=True).replace(f"tracker:{tracker}", "…")
                    answers.append((response.status_code, text))
                assert answers[0] == answers[1], (scopes, events, answers)
            for method, path in her_paths:
                answers = []
                for ident in (sid, world.absent_sid):
                    json_body = {"enabled": False} if method == "PATCH" else None
                    asked = path.format(sid=ident)
                    response = api.open(asked, method=method, json=json_body, headers=headers)
                    check_answer(world, scopes, asked, response)
                    answers.append(normalized(response, ident))
                assert answers[0] == answers[1], (scopes, method, path, answers)
                assert answers[0][0] == 404, answers
    assert world.alice_rows() == before

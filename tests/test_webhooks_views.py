"""The subscription side of webhooks, on the sample service: the API under /api/webhooks
and the pages under /webhooks (every service gets both from srcore.create_app).

The sample service declares one event, ``thing:created``, needing ``sample/things``.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from srcore.db import utcnow
from srcore.openapi.views import document_of
from srcore.outbound.policy import AddressPolicy
from srcore.outbound.targets import set_resolver, target_problem
from srcore.signatures import SECRET_PREFIX
from srcore.testing import create_user, log_in_client
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.outbox import insert_event

SCOPES = "sample/things:RW"
HOOK = "https://hooks.example.org/sample"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _empty_webhook_tables(app: Any) -> Any:
    """The plugin empties the service's own tables after a test, not srcore's; these go too."""
    yield
    from srcore.webhooks.models import WebhookBase

    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(table.delete())


class Names:
    """A resolver that never leaves the machine: the names it was asked, and the
    addresses of those it knows (every other name resolves to nothing, which a subscribe
    check accepts)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.known: dict[str, str] = {}

    def __call__(self, host: str, port: int, timeout: float) -> Any:
        import ipaddress

        self.asked.append(host)
        return [ipaddress.ip_address(self.known[host])] if host in self.known else None


@pytest.fixture(autouse=True)
def names(app: Any) -> Names:
    """Subscribing checks the URL's host: here with no DNS query off this machine."""
    resolver = Names()
    set_resolver(app, resolver)
    return resolver


@pytest.fixture
def bearer(make_token: Any, user: Any) -> Any:
    def headers(scopes: str = SCOPES, who: Any = "alice", **options: Any) -> dict[str, str]:
        person = user if who == "alice" else who
        return {"Authorization": f"Bearer {make_token(scopes, user=person, **options)}"}

    return headers


@pytest.fixture
def bob(app: Any) -> Any:
    return create_user(app, "bob")


def subscribe(client: Any, headers: dict[str, str], **body: Any) -> Any:
    payload = {"url": HOOK, "events": ["thing:created"], **body}
    return client.post("/api/webhooks", json=payload, headers=headers)


def errors(response: Any) -> dict[str | None, str]:
    return {e.get("field"): e["reason"] for e in response.get_json()["errors"]}


def make_delivery(app: Any, subscription_id: int, *, status: str = "failed") -> int:
    """An outbox row, a delivery of it and one failed attempt, as the worker leaves them."""
    with app.extensions["srcore"].db.transaction() as session:
        outbox_id = insert_event(session, "thing:created", {"id": 7, "name": "seven"})
        delivery = Delivery(
            subscription_id=subscription_id,
            outbox_id=outbox_id,
            status=status,
            attempts=1,
            last_status_code=500,
        )
        session.add(delivery)
        session.flush()
        session.add(
            Attempt(
                delivery_id=delivery.id,
                request_headers=json.dumps({"webhook-id": delivery.message_id}),
                request_body=json.dumps({"type": "thing:created", "data": {"id": 7}}),
                response_status=500,
                response_headers=json.dumps({"content-type": "text/plain"}),
                response_body="it broke",
                duration_ms=12,
                error=None,
            )
        )
        return delivery.id


def csrf_token(client: Any, path: str = "/webhooks/new") -> str:
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


# -- pure logic ----------------------------------------------------------------------------


def test_events_are_a_json_list_or_form_names(client: Any, bearer: Any) -> None:
    form = {"url": HOOK, "events": "thing:created, thing:created"}
    response = client.post("/api/webhooks", data=form, headers=bearer())
    assert response.status_code == 201 and response.get_json()["events"] == ["thing:created"]
    for bad in ("thing:created", [], [1], {"a": 1}, None, ["nope:never"]):
        response = subscribe(client, bearer(), events=bad)
        assert response.status_code == 400 and "events" in errors(response), bad


def test_target_problem_refuses_internal_addresses() -> None:
    policy = AddressPolicy()
    no_dns = None
    for url in (
        "http://127.0.0.1/hook",
        "http://10.0.0.5/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8000/",
        "http://printer.local/",
        "http://0.0.0.0/",
    ):
        assert target_problem(url, policy, resolve=no_dns) is not None, url
    assert target_problem("https://93.184.215.14/hook", policy, resolve=no_dns) is None
    assert target_problem("https://hooks.example.org/", policy, resolve=no_dns) is None
    allowed = AddressPolicy.from_networks(["127.0.0.0/8"])
    assert target_problem("http://127.0.0.1:9000/hook", allowed, resolve=no_dns) is None
    assert target_problem("http://localhost:9000/hook", allowed, resolve=no_dns) is None
    assert target_problem("http://10.0.0.5/", allowed, resolve=no_dns) is not None


def test_target_problem_checks_what_a_name_resolves_to() -> None:
    import ipaddress

    def resolve(host: str, port: int, timeout: float) -> Any:
        return [ipaddress.ip_address("10.1.2.3")] if host == "inside.example" else None

    policy = AddressPolicy()
    problem = target_problem("https://inside.example/", policy, resolve=resolve)
    assert problem is not None and "10.1.2.3" in problem
    # a name that does not resolve now is left to the delivery's own check
    assert target_problem("https://unknown.example/", policy, resolve=resolve) is None


def test_subscribing_looks_the_host_up_with_the_apps_resolver(
    client: Any, bearer: Any, names: Names, user_client: Any
) -> None:
    names.known["inside.example.invalid"] = "10.1.2.3"
    response = subscribe(client, bearer(), url="https://inside.example.invalid/hook")
    assert response.status_code == 400
    assert "10.1.2.3" in errors(response)["url"]
    assert subscribe(client, bearer()).status_code == 201
    token = csrf_token(user_client)
    page = user_client.post(
        "/webhooks/new",
        data={
            "csrf_token": token,
            "url": "https://inside.example.invalid/",
            "events": "thing:created",
        },
    )
    assert page.status_code == 400 and "10.1.2.3" in page.get_data(as_text=True)
    assert names.asked == ["inside.example.invalid", "hooks.example.org", "inside.example.invalid"]


# -- API: create, list, get ----------------------------------------------------------------


def test_create_shows_the_secret_once(client: Any, bearer: Any, user: Any) -> None:
    response = subscribe(client, bearer())
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["secret"].startswith(SECRET_PREFIX)
    assert body["url"] == HOOK
    assert body["events"] == ["thing:created"]
    assert body["scopes"] == [SCOPES]
    assert body["enabled"] is True
    assert body["secret_hint"] == "whsec_…" + body["secret"][-4:]
    assert response.headers["Location"] == f"/api/webhooks/{body['id']}"

    again = client.get(response.headers["Location"], headers=bearer())
    assert again.status_code == 200
    assert "secret" not in again.get_json()
    assert again.get_json()["secret_hint"] == body["secret_hint"]


def test_create_stores_owner_and_scopes(app: Any, client: Any, bearer: Any, user: Any) -> None:
    response = subscribe(client, bearer("sample/things:RW"), resource="thing:7")
    assert response.status_code == 201
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, response.get_json()["id"])
        assert sub is not None
        assert (sub.owner_id, sub.owner_client) == (user.id, None)
        assert sub.scopes == "sample/things:RW"
        assert sub.resource == "thing:7"
        assert sub.secret == response.get_json()["secret"]


def test_a_form_body_works_too(client: Any, bearer: Any) -> None:
    response = client.post(
        "/api/webhooks", data={"url": HOOK, "events": "thing:created"}, headers=bearer()
    )
    assert response.status_code == 201
    assert response.get_json()["events"] == ["thing:created"]


def test_list_is_cursor_paginated(client: Any, bearer: Any) -> None:
    made = [subscribe(client, bearer()).get_json()["id"] for _ in range(3)]
    first = client.get("/api/webhooks?limit=2", headers=bearer()).get_json()
    assert [s["id"] for s in first["results"]] == sorted(made, reverse=True)[:2]
    assert all("secret" not in s for s in first["results"])
    second = client.get(f"/api/webhooks?limit=2&cursor={first['next']}", headers=bearer())
    assert [s["id"] for s in second.get_json()["results"]] == [min(made)]
    assert second.get_json()["next"] is None
    bad = client.get("/api/webhooks?cursor=forged", headers=bearer())
    assert bad.status_code == 400 and "cursor" in errors(bad)
    assert client.get("/api/webhooks?limit=1000", headers=bearer()).status_code == 400


# -- API: validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["thing:created"]}, "url"),
        ({"url": "ftp://example.org/", "events": ["thing:created"]}, "url"),
        ({"url": "not a url", "events": ["thing:created"]}, "url"),
        ({"url": HOOK}, "events"),
        ({"url": HOOK, "events": []}, "events"),
        ({"url": HOOK, "events": "thing:created"}, "events"),
        ({"url": HOOK, "events": ["ticket:created"]}, "events"),
        ({"url": HOOK, "events": [None]}, "events"),
        ({"url": HOOK, "events": ["thing:created"], "resource": "not a resource"}, "resource"),
        ({"url": HOOK, "events": ["thing:created"], "resource": 12}, "resource"),
        ({"url": "http://127.0.0.1:8080/", "events": ["thing:created"]}, "url"),
        ({"url": "http://10.0.0.5/", "events": ["thing:created"]}, "url"),
        ({"url": "http://169.254.169.254/", "events": ["thing:created"]}, "url"),
        ({"url": "http://localhost/", "events": ["thing:created"]}, "url"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    client: Any, bearer: Any, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/webhooks", json=body, headers=bearer())
    assert response.status_code == 400, response.get_data(as_text=True)
    assert field in errors(response)


def test_unknown_event_names_what_the_service_sends(client: Any, bearer: Any) -> None:
    response = subscribe(client, bearer(), events=["ticket:created"])
    assert "thing:created" in errors(response)["events"]


def test_ssrf_refusal_says_why(client: Any, bearer: Any) -> None:
    response = subscribe(client, bearer(), url="http://10.0.0.5/hook")
    assert "private" in errors(response)["url"]


def test_malformed_json_is_a_400(client: Any, bearer: Any) -> None:
    response = client.post(
        "/api/webhooks", data=b"{nope", content_type="application/json", headers=bearer()
    )
    assert response.status_code == 400
    assert None in errors(response)


# -- API: who may do what ------------------------------------------------------------------


def test_no_token_is_a_401(client: Any) -> None:
    for method, path in [("GET", "/api/webhooks"), ("POST", "/api/webhooks")]:
        response = client.open(path, method=method, json={})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_without_this_services_scopes_is_a_403(client: Any, bearer: Any) -> None:
    response = client.get("/api/webhooks", headers=bearer("meta/profile:RO"))
    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["WWW-Authenticate"]


def test_subscribing_needs_the_events_scope(app: Any, client: Any, bearer: Any) -> None:
    response = subscribe(client, bearer("sample/stuff:RW"))
    assert response.status_code == 403
    assert "sample/things:RW" in errors(response)["events"]
    assert 'scope="sample/things:RW"' in response.headers["WWW-Authenticate"]
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(Subscription.id)) is None


def test_another_users_subscription_is_a_404(app: Any, client: Any, bearer: Any, bob: Any) -> None:
    mine = subscribe(client, bearer()).get_json()["id"]
    delivery = make_delivery(app, mine)
    theirs = bearer(who=bob)
    assert client.get("/api/webhooks", headers=theirs).get_json()["results"] == []
    for method, path in [
        ("GET", f"/api/webhooks/{mine}"),
        ("PATCH", f"/api/webhooks/{mine}"),
        ("DELETE", f"/api/webhooks/{mine}"),
        ("POST", f"/api/webhooks/{mine}/rotate"),
        ("GET", f"/api/webhooks/{mine}/deliveries"),
        ("POST", f"/api/webhooks/{mine}/deliveries/{delivery}/redeliver"),
        ("POST", f"/api/webhooks/{mine}/ping"),
    ]:
        response = client.open(path, method=method, json={"enabled": False}, headers=theirs)
        assert response.status_code == 404, (method, path)
    assert client.get(f"/api/webhooks/{mine}", headers=bearer()).get_json()["enabled"] is True
    # Nor through a webhook of their own: the delivery must belong to the webhook named.
    own = subscribe(client, theirs).get_json()["id"]
    path = f"/api/webhooks/{own}/deliveries/{delivery}/redeliver"
    assert client.post(path, headers=theirs).status_code == 404


def test_a_client_credentials_token_owns_its_own_subscriptions(
    app: Any, client: Any, bearer: Any
) -> None:
    service = bearer(who=None, client_id="builds")
    other = bearer(who=None, client_id="lists")
    made = subscribe(client, service)
    assert made.status_code == 201
    sid = made.get_json()["id"]
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, sid)
        assert sub is not None and (sub.owner_id, sub.owner_client) == (None, "builds")
    assert client.get(f"/api/webhooks/{sid}", headers=service).status_code == 200
    assert client.get(f"/api/webhooks/{sid}", headers=other).status_code == 404
    assert client.get(f"/api/webhooks/{sid}", headers=bearer()).status_code == 404
    assert client.get("/api/webhooks", headers=bearer()).get_json()["results"] == []


def test_a_read_only_token_reads_but_does_not_manage_webhooks(
    app: Any, client: Any, bearer: Any
) -> None:
    made = subscribe(client, bearer()).get_json()
    sid, secret = made["id"], made["secret"]
    delivery = make_delivery(app, sid)
    read_only = bearer("sample/things:RO")
    for path in ("/api/webhooks", f"/api/webhooks/{sid}", f"/api/webhooks/{sid}/deliveries"):
        assert client.get(path, headers=read_only).status_code == 200, path
    for method, path, body in [
        ("POST", "/api/webhooks", {"url": HOOK, "events": ["thing:created"]}),
        ("PATCH", f"/api/webhooks/{sid}", {"url": "https://elsewhere.example.org/"}),
        ("PATCH", f"/api/webhooks/{sid}", {"enabled": False}),
        ("POST", f"/api/webhooks/{sid}/rotate", {}),
        ("POST", f"/api/webhooks/{sid}/deliveries/{delivery}/redeliver", {}),
        ("DELETE", f"/api/webhooks/{sid}", None),
    ]:
        response = client.open(path, method=method, json=body, headers=read_only)
        assert response.status_code == 403, (method, path, response.get_data(as_text=True))
        assert "secret" not in (response.get_json() or {})
        assert 'scope="sample/things:RW"' in response.headers["WWW-Authenticate"]
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1
        sub = session.get(Subscription, sid)
        assert sub is not None and sub.enabled and sub.url == HOOK and sub.secret == secret
        found = session.get(Delivery, delivery)
        assert found is not None and found.status == "failed"


# -- API: change, rotate, delete -----------------------------------------------------------


def test_patch_changes_url_and_enabled(client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    path = f"/api/webhooks/{sid}"
    response = client.patch(path, json={"url": HOOK + "/v2", "enabled": False}, headers=bearer())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["url"] == HOOK + "/v2"
    assert response.get_json()["enabled"] is False
    assert response.get_json()["disabled_reason"]
    response = client.patch(path, json={"enabled": True}, headers=bearer())
    assert response.get_json()["enabled"] is True
    assert response.get_json()["disabled_reason"] is None
    response = client.patch(path, json={"events": ["thing:created"]}, headers=bearer())
    assert response.status_code == 200


def test_patch_validates(client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    path = f"/api/webhooks/{sid}"
    for body, field in [
        ({"url": "http://127.0.0.1/"}, "url"),
        ({"events": []}, "events"),
        ({"events": ["nope:never"]}, "events"),
        ({"enabled": "maybe"}, "enabled"),
        ({"resource": "thing:1"}, "resource"),
    ]:
        response = client.patch(path, json=body, headers=bearer())
        assert response.status_code == 400, body
        assert field in errors(response), body
    assert client.get(path, headers=bearer()).get_json()["url"] == HOOK


def test_patch_needs_the_scope_of_the_events(client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    response = client.patch(
        f"/api/webhooks/{sid}", json={"url": HOOK + "/x"}, headers=bearer("sample/stuff:RW")
    )
    assert response.status_code == 403


def test_delete(client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    assert client.delete(f"/api/webhooks/{sid}", headers=bearer()).status_code == 204
    assert client.get(f"/api/webhooks/{sid}", headers=bearer()).status_code == 404
    assert client.delete(f"/api/webhooks/{sid}", headers=bearer()).status_code == 404


def test_rotate_keeps_the_previous_secret_for_an_overlap(
    app: Any, client: Any, bearer: Any
) -> None:
    made = subscribe(client, bearer()).get_json()
    response = client.post(f"/api/webhooks/{made['id']}/rotate", headers=bearer())
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["secret"].startswith(SECRET_PREFIX) and body["secret"] != made["secret"]
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, made["id"])
        assert sub is not None
        assert sub.previous_secret_expires is not None
        left = sub.previous_secret_expires - utcnow()
        assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)
        # Deliveries are signed with both while the overlap lasts (test_webhooks_delivery's
        # test_rotation_sends_both_signatures): the new secret, and the old one kept.
        assert (sub.secret, sub.previous_secret) == (body["secret"], made["secret"])
    assert body["previous_secret_expires"] is not None

    response = client.post(
        f"/api/webhooks/{made['id']}/rotate", json={"overlap": 0}, headers=bearer()
    )
    assert response.get_json()["previous_secret_expires"] is None
    response = client.post(
        f"/api/webhooks/{made['id']}/rotate", json={"overlap": 10**9}, headers=bearer()
    )
    assert response.status_code == 400 and "overlap" in errors(response)


# -- API: the delivery log -----------------------------------------------------------------


def test_deliveries_show_attempts(app: Any, client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    first = make_delivery(app, sid)
    second = make_delivery(app, sid, status="delivered")
    response = client.get(f"/api/webhooks/{sid}/deliveries?limit=1", headers=bearer())
    assert response.status_code == 200
    page = response.get_json()
    assert [d["id"] for d in page["results"]] == [second]
    delivery = page["results"][0]
    assert delivery["event"] == "thing:created"
    assert delivery["message_id"].startswith("msg_")
    attempt = delivery["attempts"][0]
    assert attempt["response"] == {
        "status": 500,
        "headers": {"content-type": "text/plain"},
        "body": "it broke",
    }
    assert attempt["request"]["headers"]["webhook-id"] == delivery["message_id"]
    assert attempt["duration_ms"] == 12
    rest = client.get(
        f"/api/webhooks/{sid}/deliveries?limit=1&cursor={page['next']}", headers=bearer()
    ).get_json()
    assert [d["id"] for d in rest["results"]] == [first]


def test_a_delivery_shows_its_newest_attempts_and_how_many_the_log_holds(
    app: Any, client: Any, bearer: Any, user: Any
) -> None:
    """Redeliveries by hand have no limit: a delivery redelivered a thousand times must not
    load and show a thousand attempts on each view of its log."""
    from srcore.webhooks.subscriptions import ATTEMPTS_SHOWN

    sid = subscribe(client, bearer()).get_json()["id"]
    delivery_id = make_delivery(app, sid)
    logged = ATTEMPTS_SHOWN * 3 + 1
    with app.extensions["srcore"].db.transaction() as session:
        session.add_all(
            Attempt(
                delivery_id=delivery_id,
                request_headers="{}",
                request_body=f"attempt {n}",
                response_status=503,
                response_headers="{}",
                response_body="",
                duration_ms=1,
            )
            for n in range(2, logged + 1)
        )
    page = client.get(f"/api/webhooks/{sid}/deliveries", headers=bearer()).get_json()
    [delivery] = page["results"]
    assert delivery["attempts_logged"] == logged
    shown = [a["request"]["body"] for a in delivery["attempts"]]
    assert shown == [f"attempt {n}" for n in range(logged, logged - ATTEMPTS_SHOWN, -1)]
    text = log_in_client(app.test_client(), user).get(f"/webhooks/{sid}").get_data(as_text=True)
    assert f"{logged} attempts" in text
    assert f"and {logged - ATTEMPTS_SHOWN} older attempts, not shown" in text
    assert text.count('class="attempt"') == ATTEMPTS_SHOWN


def test_redeliver_makes_the_delivery_due_again(app: Any, client: Any, bearer: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    did = make_delivery(app, sid)
    response = client.post(f"/api/webhooks/{sid}/deliveries/{did}/redeliver", headers=bearer())
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["status"] == "pending"
    with app.extensions["srcore"].db.transaction() as session:
        delivery = session.get(Delivery, did)
        assert delivery is not None
        assert delivery.status == DeliveryStatus.pending.value
        assert delivery.next_attempt_at <= utcnow()
    other = subscribe(client, bearer()).get_json()["id"]
    response = client.post(f"/api/webhooks/{other}/deliveries/{did}/redeliver", headers=bearer())
    assert response.status_code == 404
    client.patch(f"/api/webhooks/{sid}", json={"enabled": False}, headers=bearer())
    response = client.post(f"/api/webhooks/{sid}/deliveries/{did}/redeliver", headers=bearer())
    assert response.status_code == 409


# -- the pages -----------------------------------------------------------------------------


def test_pages_need_a_login(client: Any) -> None:
    for path in ("/webhooks", "/webhooks/new", "/webhooks/1"):
        response = client.get(path)
        assert response.status_code in (302, 503), path  # 503: no meta in this config


def test_index_and_new_render(user_client: Any) -> None:
    index = user_client.get("/webhooks")
    assert index.status_code == 200
    assert "No webhooks yet" in index.get_data(as_text=True)
    page = user_client.get("/webhooks/new?resource=thing:7")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'value="thing:created"' in text
    assert "A thing was created" in text
    assert 'value="thing:7"' in text


def test_create_through_the_form_shows_the_secret_once(app: Any, user_client: Any) -> None:
    token = csrf_token(user_client)
    response = user_client.post(
        "/webhooks/new", data={"csrf_token": token, "url": HOOK, "events": "thing:created"}
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.scalars(select(Subscription)).one()
        secret, sid = sub.secret, sub.id
        assert sub.scopes == "sample/things:RO"  # what receiving needs
    assert secret in text
    detail = user_client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert secret not in detail
    assert "whsec_…" + secret[-4:] in detail
    assert HOOK in user_client.get("/webhooks").get_data(as_text=True)


def test_form_errors_rerender_the_form(user_client: Any) -> None:
    token = csrf_token(user_client)
    response = user_client.post(
        "/webhooks/new", data={"csrf_token": token, "url": "http://10.0.0.1/", "events": ""}
    )
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "Choose at least one event." in text
    assert "private address" in text
    assert 'aria-invalid="true"' in text


def test_detail_actions(app: Any, user_client: Any, client: Any, bearer: Any) -> None:
    made = subscribe(client, bearer()).get_json()
    sid = made["id"]
    did = make_delivery(app, sid)
    detail = user_client.get(f"/webhooks/{sid}")
    text = detail.get_data(as_text=True)
    assert detail.status_code == 200
    assert made["secret_hint"] in text and made["secret"] not in text
    assert "it broke" in text and "<details" in text
    assert "Failed" in text
    token = csrf_token(user_client, f"/webhooks/{sid}")

    rotated = user_client.post(
        f"/webhooks/{sid}/rotate", data={"csrf_token": token, "overlap": "3600"}
    )
    assert rotated.status_code == 200
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, sid)
        assert sub is not None and sub.previous_secret == made["secret"]
        new_secret = sub.secret
    assert new_secret in rotated.get_data(as_text=True)

    response = user_client.post(
        f"/webhooks/{sid}/deliveries/{did}/redeliver", data={"csrf_token": token}
    )
    assert response.status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        delivery = session.get(Delivery, did)
        assert delivery is not None and delivery.status == "pending"

    assert (
        user_client.post(f"/webhooks/{sid}/disable", data={"csrf_token": token}).status_code == 302
    )
    assert "Disabled" in user_client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert (
        user_client.post(f"/webhooks/{sid}/enable", data={"csrf_token": token}).status_code == 302
    )

    edited = user_client.post(
        f"/webhooks/{sid}/edit",
        data={"csrf_token": token, "url": HOOK + "/edited", "events": "thing:created"},
    )
    assert edited.status_code == 302
    assert HOOK + "/edited" in user_client.get(f"/webhooks/{sid}").get_data(as_text=True)
    bad = user_client.post(
        f"/webhooks/{sid}/edit", data={"csrf_token": token, "url": "gopher://x", "events": ""}
    )
    assert bad.status_code == 400

    deleted = user_client.post(f"/webhooks/{sid}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302
    assert user_client.get(f"/webhooks/{sid}").status_code == 404


def test_another_users_pages_are_404(app: Any, client: Any, bearer: Any, bob: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    did = make_delivery(app, sid)
    bob_client = log_in_client(app.test_client(), bob)
    token = csrf_token(bob_client)
    assert bob_client.get(f"/webhooks/{sid}").status_code == 404
    assert bob_client.get(f"/webhooks/{sid}/edit").status_code == 404
    for path in (
        f"/webhooks/{sid}/edit",
        f"/webhooks/{sid}/rotate",
        f"/webhooks/{sid}/enable",
        f"/webhooks/{sid}/disable",
        f"/webhooks/{sid}/ping",
        f"/webhooks/{sid}/delete",
        f"/webhooks/{sid}/deliveries/{did}/redeliver",
    ):
        assert bob_client.post(path, data={"csrf_token": token}).status_code == 404, path
    assert HOOK not in bob_client.get("/webhooks").get_data(as_text=True)


# -- every form route of srcore's webhook pages is CSRF-checked -----------------------------

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def webhook_routes(app: Any, values: dict[str, Any]) -> list[tuple[str, str, str]]:
    from flask import url_for

    found = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if not rule.endpoint.startswith(("srcore_webhooks.", "srcore_webhooks_api.")):
                continue
            assert set(rule.arguments) <= set(values), rule.rule
            path = url_for(rule.endpoint, **{k: values[k] for k in rule.arguments})
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((rule.endpoint, method, path))
    return found


def snapshot(app: Any) -> list[Any]:
    with app.extensions["srcore"].db.transaction() as session:
        return [
            tuple(row)
            for model in (Subscription, Delivery)
            for row in session.execute(select(model.__table__).order_by(model.id))
        ]


def test_every_webhook_form_post_needs_a_csrf_token(
    app: Any, client: Any, bearer: Any, user_client: Any
) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    did = make_delivery(app, sid)
    routes = webhook_routes(app, {"subscription_id": sid, "delivery_id": did})
    forms = [r for r in routes if r[1] in UNSAFE and not r[2].startswith("/api/")]
    assert {e for e, _, _ in forms} == {
        "srcore_webhooks.new",
        "srcore_webhooks.edit",
        "srcore_webhooks.rotate",
        "srcore_webhooks.enable",
        "srcore_webhooks.disable",
        "srcore_webhooks.delete",
        "srcore_webhooks.redeliver_page",
        "srcore_webhooks.ping",
    }
    body = {"url": HOOK, "events": "thing:created", "overlap": "0"}
    before = snapshot(app)
    other = log_in_client(app.test_client(), create_user(app, "carol"))
    foreign = csrf_token(other)
    for endpoint, method, path in forms:
        for data in (body, {**body, "csrf_token": "forged"}, {**body, "csrf_token": foreign}):
            response = user_client.open(path, method=method, data=data)
            assert response.status_code == 400, (endpoint, response.status_code)
            assert "missing its security token" in response.get_data(as_text=True)
        response = user_client.open(path, method=method, json=body)
        assert response.status_code == 400, endpoint
    assert snapshot(app) == before
    # Control: with the session's token each of them does something.
    token = csrf_token(user_client)
    forms.sort(key=lambda r: r[0] == "srcore_webhooks.delete")
    for endpoint, method, path in forms:
        response = user_client.open(path, method=method, data={**body, "csrf_token": token})
        assert response.status_code in (200, 201, 302), (endpoint, response.status_code)
    assert snapshot(app) != before


# -- random input never makes a 500 ---------------------------------------------------------

FIELDS = ["url", "events", "resource", "enabled", "overlap", "cursor", "limit", "page"]
WORDS = [
    HOOK, "thing:created", "thing:7", "true", "false", "0", "-1", "86400", "9" * 30, "",
    "\x00", "http://127.0.0.1/", "ftp://x", "W10", "a" * 300,
]  # fmt: skip
EXAMPLES = settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
strings = st.one_of(st.sampled_from(WORDS), st.text(max_size=40))
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), strings),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)


def test_random_input_never_makes_a_500(app: Any, client: Any, bearer: Any, user: Any) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    did = make_delivery(app, sid)
    app.config["WTF_CSRF_ENABLED"] = False
    browser = log_in_client(app.test_client(), user)
    headers = bearer()
    routes = webhook_routes(app, {"subscription_id": sid, "delivery_id": did})
    routes = [r for r in routes if r[0] != "srcore_webhooks.delete" and r[1] != "DELETE"]

    @EXAMPLES
    @given(
        route=st.sampled_from(routes),
        form=st.dictionaries(keys, strings, max_size=5),
        body=st.dictionaries(keys, json_values, max_size=5),
        query=st.dictionaries(keys, strings, max_size=3),
        as_json=st.booleans(),
    )
    def run(route: Any, form: Any, body: Any, query: Any, as_json: bool) -> None:
        endpoint, method, path = route
        who = client if path.startswith("/api/") else browser
        if as_json:
            response = who.open(path, method=method, json=body, query_string=query, headers=headers)
        else:
            response = who.open(path, method=method, data=form, query_string=query, headers=headers)
        assert response.status_code < 500, (endpoint, response.get_data(as_text=True))

    run()


def test_current_breadcrumb_is_marked_and_not_a_link(user_client: Any) -> None:
    page = user_client.get("/webhooks/new").get_data(as_text=True)
    assert '<a href="/webhooks">Webhooks</a> / <span aria-current="page">New</span>' in page


# -- the API's description ------------------------------------------------------------------


def test_the_api_description_reads_each_answer_from_its_serializer(app: Any) -> None:
    with app.app_context():
        document = document_of(app).body
    paths, schemas = document["paths"], document["components"]["schemas"]
    ping = paths["/api/webhooks/{subscription_id}/ping"]["post"]["responses"]
    assert ping["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeliveryJSON"
    }
    assert {"409", "429", "401"} <= set(ping)
    # A token holding a scope of the service is needed; the events decide which.
    manifest = app.extensions["srcore"].manifest
    anyone = [
        {"meta": [f"{manifest.id}/{scope.name}:{access}"]}
        for scope in manifest.scopes
        for access in ("RO", "RW")
    ]
    for item in paths.values():
        for op in item.values():
            if op["operationId"].startswith("srcore_webhooks_api."):
                events = op["operationId"] == "srcore_webhooks_api.events.get"
                assert op.get("security") == (None if events else anyone), op
    create = paths["/api/webhooks"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["url"] and {"events", "resource"} <= set(body["properties"])
    change = paths["/api/webhooks/{subscription_id}"]["patch"]["requestBody"]
    assert set(change["content"]["application/json"]["schema"]["properties"]) == {
        "url",
        "events",
        "enabled",
    }
    subscription = schemas["SubscriptionJSON"]
    assert "secret" in subscription["properties"] and "secret" not in subscription["required"]
    assert schemas["DeliveryJSON"]["properties"]["status"] == {
        "$ref": "#/components/schemas/DeliveryStatus"
    }
    catalog = paths["/api/webhooks/events"]["get"]
    assert "security" not in catalog and set(catalog["responses"]) == {"200", "503"}


def test_a_webhook_with_no_deliveries_shows_the_shared_empty_state(
    user_client: Any, client: Any, bearer: Any
) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    text = user_client.get(f"/webhooks/{sid}").get_data(as_text=True)
    assert '<p class="empty-state-title">Nothing sent yet</p>' in text
    index = user_client.get("/webhooks").get_data(as_text=True)
    assert "Nothing sent yet" not in index and "<h3>" not in text


def test_the_pages_take_forms_not_json(app: Any, user: Any) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    browser = log_in_client(app.test_client(), user)
    response = browser.post("/webhooks/new", json={"url": HOOK, "events": ["thing:created"]})
    assert response.status_code == 400
    assert "take forms" in response.get_data(as_text=True)
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_the_delivery_log_pages_through_older_deliveries(
    app: Any, user_client: Any, client: Any, bearer: Any
) -> None:
    sid = subscribe(client, bearer()).get_json()["id"]
    made = [make_delivery(app, sid) for _ in range(21)]
    first = user_client.get(f"/webhooks/{sid}").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None and f'id="delivery-{made[0]}"' not in first
    assert 'rel="prev"' not in first
    rest = user_client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f'id="delivery-{made[0]}"' in rest and f'id="delivery-{made[-1]}"' not in rest
    assert f'href="/webhooks/{sid}" rel="prev"' in rest and 'rel="next"' not in rest


def test_the_index_pages_through_older_webhooks(app: Any, user_client: Any) -> None:
    app.config["WTF_CSRF_ENABLED"] = False
    for n in range(21):
        made = user_client.post(
            "/webhooks/new", data={"url": f"{HOOK}/{n}", "events": "thing:created"}
        )
        assert made.status_code == 201
    first = user_client.get("/webhooks").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older is not None and f"{HOOK}/20<" in first and f"{HOOK}/0<" not in first
    assert 'rel="prev"' not in first
    rest = user_client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f"{HOOK}/0<" in rest and f"{HOOK}/20<" not in rest
    assert 'href="/webhooks" rel="prev"' in rest and 'rel="next"' not in rest


def test_the_form_checks_the_chosen_events(
    app: Any, user_client: Any, client: Any, bearer: Any
) -> None:
    checked = 'value="thing:created" checked>'
    sid = subscribe(client, bearer()).get_json()["id"]
    assert checked in user_client.get(f"/webhooks/{sid}/edit").get_data(as_text=True)
    assert checked in user_client.get("/webhooks/new?events=thing:created").get_data(as_text=True)
    assert checked not in user_client.get("/webhooks/new").get_data(as_text=True)
    app.config["WTF_CSRF_ENABLED"] = False
    sent = {"url": "ftp://x", "events": "thing:created", "resource": "thing:7"}
    again = user_client.post("/webhooks/new", data=sent)
    assert again.status_code == 400
    assert checked in again.get_data(as_text=True) and 'value="thing:7"' in again.get_data(
        as_text=True
    )


def test_the_new_webhook_form_is_never_kept_in_a_cache(user_client: Any) -> None:
    """Its form token tells a resent form from a new one: a form brought back by Back
    from a cache would carry the token of a webhook already made, and make none."""
    page = user_client.get("/webhooks/new")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
